"""Attack: an owner SIGSTOPped inside a method, taken over after its lease expired, and
thawed after the new owner finished the run. Whatever the thawed owner does next (its
method raises, or interrupts), nothing of it may reach the stored run: not a checkpoint,
not a status, not an error record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import HERE
from flows import backend

ATTACK_PROC = HERE / "attack_proc.py"


def _wait_for(predicate, what: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _stale_owner_then_takeover(proc, spec: str, run_id: str, mode: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    """Runs StaleOwner in a child whose ``b`` will ``mode`` (raise/interrupt), stops it in
    ``b``, finishes the run from this process once the lease expired, thaws the child and
    returns its (returncode, stdout, stderr)."""
    from attack_proc import StaleOwner

    env = dict(
        proc.env, FLOWKIT_TEST_TTL="1", FLOWKIT_TEST_LEG_SECONDS="1.0", FLOWKIT_ATTACK_B=mode
    )
    child = subprocess.Popen(
        [sys.executable, str(ATTACK_PROC), spec, "StaleOwner", "kickoff", run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        _wait_for(lambda: "b" in proc.steps(), "the owner to start b")
        os.kill(child.pid, signal.SIGSTOP)  # inside b's sleep
        time.sleep(1.6)  # its lease (ttl 1 s) expires; a stopped process cannot renew it
        p = backend(spec)
        try:
            assert StaleOwner(persistence=p, lease_ttl=30).resume(run_id) == ["a", "b", "c"]
        finally:
            p.close()
    finally:
        os.kill(child.pid, signal.SIGCONT)
        out, err = child.communicate(timeout=120)
    return child.returncode, out, err


def _assert_untouched(spec: str, run_id: str) -> None:
    p = backend(spec)
    try:
        run = p.get_run(run_id)
        assert run is not None
        assert (run.status, run.lease_owner) == ("completed", None), (
            f"the thawed owner changed the finished run: status {run.status!r}, "
            f"info {run.info.get('error')!r}"
        )
        assert "error" not in run.info, run.info["error"]
        history = p.history(run_id)
        assert [c.method_name for c in history] == ["kickoff", "a", "b", "c"]
        assert [c.seq for c in history] == [1, 2, 3, 4]
    finally:
        p.close()


@pytest.mark.slow
def test_thawed_owner_whose_method_raises_cannot_mark_the_run_failed(
    proc, backend_spec: str, run_id: str
) -> None:  # type: ignore[no-untyped-def]
    """The stale owner's b raises after the thaw: the user sees the exception in that
    process, but the run another owner completed stays completed, with no error stored.
    (Broke before: the 'failed' status went through update_run, which is not fenced.)"""
    code, _out, err = _stale_owner_then_takeover(proc, backend_spec, run_id, "raise")
    assert code != 0 and "stale owner's b failed" in err
    _assert_untouched(backend_spec, run_id)


@pytest.mark.slow
def test_thawed_owner_whose_method_interrupts_cannot_pause_the_run(
    proc, backend_spec: str, run_id: str
) -> None:  # type: ignore[no-untyped-def]
    """The stale owner's b calls interrupt() after the thaw: storing the pause is refused
    (fenced) with a FlowkitError naming the run, and the completed run stays completed."""
    code, out, err = _stale_owner_then_takeover(proc, backend_spec, run_id, "interrupt")
    assert code == 0, err
    refused = json.loads(out.strip().splitlines()[-1])
    assert refused.get("error") in ("LeaseLostError", "RunLockedError", "ConcurrentUpdateError")
    assert run_id in refused["message"]
    _assert_untouched(backend_spec, run_id)


@pytest.mark.soak  # ~9 s per backend: runs in nox -s soak-attack
def test_thawed_owner_does_not_release_the_new_owners_lease(
    proc, backend_spec: str, run_id: str
) -> None:  # type: ignore[no-untyped-def]
    """The stale owner is thawed while the new owner is still executing: its checkpoint is
    refused, and giving its lease back on the way out leaves the new owner's lease in
    place (a third process is still refused), and the new owner completes the run."""

    old_env = dict(proc.env, FLOWKIT_TEST_TTL="1", FLOWKIT_TEST_LEG_SECONDS="1.0")
    old = subprocess.Popen(
        [sys.executable, str(HERE / "proc.py"), backend_spec, "Slow", "kickoff", run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=old_env,
    )
    new = None
    p = backend(backend_spec)
    try:
        _wait_for(lambda: "w2" in proc.steps(), "the owner to start w2")
        os.kill(old.pid, signal.SIGSTOP)
        time.sleep(1.6)  # the stopped owner's lease (ttl 1 s) expires
        new_env = dict(proc.env, FLOWKIT_TEST_TTL="30", FLOWKIT_TEST_LEG_SECONDS="1.5")
        new = subprocess.Popen(
            [sys.executable, str(HERE / "proc.py"), backend_spec, "Slow", "resume", run_id],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=new_env,
        )
        new_pid = str(new.pid)
        _wait_for(
            lambda: (p.get_run(run_id).lease_owner or "").split(":")[1:2] == [new_pid],
            "the new owner to claim the run",
        )
        os.kill(old.pid, signal.SIGCONT)
        out, err = old.communicate(timeout=120)
        assert old.returncode == 0, err
        refused = json.loads(out.strip().splitlines()[-1])
        assert refused.get("error") in ("LeaseLostError", "RunLockedError"), refused
        assert new.poll() is None, "the new owner should still be executing"
        holder = p.get_run(run_id).lease_owner or ""
        assert holder.split(":")[1:2] == [new_pid], holder
        out, err = new.communicate(timeout=120)
        assert new.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1]) == {"result": ["w1", "w2", "w3", "w4"]}
    finally:
        for child in (old, new):
            if child is not None and child.poll() is None:
                os.kill(child.pid, signal.SIGCONT)
                child.kill()
                child.communicate()
        p.close()
