"""Resume after SIGKILL: completed methods never run again, the cut-off one does (SPEC 5)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import PROC
from flows import Looping, SixSteps, backend

STEPS = [f"s{i}" for i in range(1, 7)]


def resume_at_once(proc, spec: str, flow: str, run_id: str):  # type: ignore[no-untyped-def]
    """Resume in a new process right after the kill. The killed owner's lease has a ttl
    of 60 s and resume does not wait for leases (lease_wait 0): it succeeds only because
    the dead owner is taken over at once."""
    return proc.run(spec, flow, "resume", run_id)


@pytest.mark.slow
@pytest.mark.parametrize("crash_at", STEPS)
def test_kill_at_every_step_then_resume(
    proc, backend_spec: str, run_id: str, crash_at: str
) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL inside step k; resume in a new process at once: steps before k ran once,
    k twice, after k once, and the final state counts every step exactly once."""
    proc.env["FLOWKIT_TEST_TTL"] = "60"
    proc.run(backend_spec, "SixSteps", "kickoff", run_id, crash_at=crash_at, expect_killed=True)
    out = resume_at_once(proc, backend_spec, "SixSteps", run_id)
    assert out == {"result": 21}
    counts = Counter(proc.steps())
    assert counts == Counter({s: (2 if s == crash_at else 1) for s in STEPS})
    p = backend(backend_spec)
    try:
        run = p.get_run(run_id)
        assert run is not None and run.status == "completed"
        stored = p.load_state(run_id)
        assert stored is not None
        assert stored["done"] == STEPS
        assert stored["total"] == 21
    finally:
        p.close()


@pytest.mark.parametrize("spec_kind", ["backend", "file"])
def test_kill_then_immediate_resume_takes_the_dead_owners_lease(
    proc, backend_spec: str, run_id: str, tmp_path: Path, spec_kind: str
) -> None:  # type: ignore[no-untyped-def]
    """kill -9 of the owner, then resume in a new process at once: the run is taken over
    without waiting for the lease (ttl 60 s) to expire, and finishes with every step
    counted once (SQLite, PostgreSQL, and the file backend)."""
    spec = backend_spec if spec_kind == "backend" else f"file:{tmp_path / 'runs'}"
    if spec_kind == "file" and not backend_spec.startswith("sqlite"):
        pytest.skip("the file variant runs once, beside the SQLite one")
    proc.env["FLOWKIT_TEST_TTL"] = "60"
    proc.run(spec, "SixSteps", "kickoff", run_id, crash_at="s3", expect_killed=True)
    assert resume_at_once(proc, spec, "SixSteps", run_id) == {"result": 21}
    assert Counter(proc.steps()) == Counter({s: (2 if s == "s3" else 1) for s in STEPS})


@pytest.mark.slow
def test_kill_while_parallel_branches_run(proc, backend_spec: str, run_id: str) -> None:  # type: ignore[no-untyped-def]
    """A crash in one branch after the other finished: resume re-runs only the cut-off
    branch; the join runs once."""
    proc.env["FLOWKIT_TEST_TTL"] = "60"
    proc.run(
        backend_spec, "ParallelBranches", "kickoff", run_id, crash_at="right", expect_killed=True
    )
    assert Counter(proc.steps()) == Counter({"begin": 1, "left": 1, "right": 1})
    out = resume_at_once(proc, backend_spec, "ParallelBranches", run_id)
    assert out == {"result": 3}
    assert Counter(proc.steps()) == Counter({"begin": 1, "left": 1, "right": 2, "join": 1})


def test_resume_of_finished_unknown_or_foreign_run_is_clear(backend_spec: str, run_id: str) -> None:
    """Resuming a completed run, an unknown id, or another flow's run raises clearly."""
    from flows import Approval

    from flowkit.exceptions import ResumeError, RunNotFoundError

    p = backend(backend_spec)
    try:
        assert SixSteps(persistence=p).kickoff(inputs={"id": run_id}) == 21
        with pytest.raises(ResumeError, match="already completed"):
            SixSteps(persistence=p).resume(run_id)
        with pytest.raises(RunNotFoundError, match="no-such-run"):
            SixSteps(persistence=p).resume("no-such-run")
        with pytest.raises(ResumeError, match="belongs to flow 'six-steps'"):
            Approval(persistence=p).resume(run_id)
    finally:
        p.close()


def test_ctrl_c_while_checkpointing_leaves_the_run_unlocked_and_resumable(
    backend_spec: str, run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGINT to a process that is mostly waiting for checkpoint commits (a synchronous
    kickoff waits on its own thread): KeyboardInterrupt ends it, the lease is given back
    on the way out, the stored run is whole, and resume finishes it."""
    import os
    import signal

    stop = tmp_path / "stop"
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); import flows; "
        "p = flows.backend(sys.argv[2]); "
        "flows.Looping(persistence=p, lease_ttl=30).kickoff(inputs={'id': sys.argv[3]})"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(PROC.parent), backend_spec, run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, FLOWKIT_TEST_STOP=str(stop)),
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "looping"
        time.sleep(0.3)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode != 0 and "KeyboardInterrupt" in err, err
    p = backend(backend_spec)
    try:
        run = p.get_run(run_id)
        assert run is not None and run.lease_owner is None  # given back, not left to expire
        assert run.status == "running"  # stopped mid-way: resumable
        stored = p.load_checkpoint(run_id)
        assert stored is not None and stored.state["laps"] > 0
        stop.touch()
        monkeypatch.setenv("FLOWKIT_TEST_STOP", str(stop))
        assert Looping(persistence=p, lease_ttl=30).resume(run_id) > stored.state["laps"]
    finally:
        p.close()
