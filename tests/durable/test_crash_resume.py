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


def wait_out_lease(proc, spec: str, flow: str, run_id: str):  # type: ignore[no-untyped-def]
    """Resume, retrying while the dead owner's lease has not expired yet."""
    deadline = time.monotonic() + 10
    while True:
        out = proc.run(spec, flow, "resume", run_id)
        if out.get("error") != "RunLockedError" or time.monotonic() > deadline:
            return out
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("crash_at", STEPS)
def test_kill_at_every_step_then_resume(
    proc, backend_spec: str, run_id: str, crash_at: str
) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL inside step k; resume in a new process: steps before k ran once, k twice,
    after k once, and the final state counts every step exactly once."""
    proc.run(backend_spec, "SixSteps", "kickoff", run_id, crash_at=crash_at, expect_killed=True)
    out = wait_out_lease(proc, backend_spec, "SixSteps", run_id)
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


@pytest.mark.slow
def test_resume_refused_while_dead_owner_lease_is_live_then_allowed(
    proc, backend_spec: str, run_id: str
) -> None:  # type: ignore[no-untyped-def]
    """Right after a kill the run is still leased (RunLockedError); after the ttl it resumes."""
    proc.env["FLOWKIT_TEST_TTL"] = "3"
    proc.run(backend_spec, "SixSteps", "kickoff", run_id, crash_at="s3", expect_killed=True)
    refused = proc.run(backend_spec, "SixSteps", "resume", run_id)
    assert refused["error"] == "RunLockedError"
    assert run_id in refused["message"]
    time.sleep(3.2)
    assert proc.run(backend_spec, "SixSteps", "resume", run_id) == {"result": 21}


@pytest.mark.slow
def test_kill_while_parallel_branches_run(proc, backend_spec: str, run_id: str) -> None:  # type: ignore[no-untyped-def]
    """A crash in one branch after the other finished: resume re-runs only the cut-off
    branch; the join runs once."""
    proc.run(
        backend_spec, "ParallelBranches", "kickoff", run_id, crash_at="right", expect_killed=True
    )
    assert Counter(proc.steps()) == Counter({"begin": 1, "left": 1, "right": 1})
    out = wait_out_lease(proc, backend_spec, "ParallelBranches", run_id)
    assert out == {"result": 3}
    assert Counter(proc.steps()) == Counter({"begin": 1, "left": 1, "right": 2, "join": 1})


@pytest.mark.slow
def test_branch_killed_after_its_sibling_checkpoint_is_applied_once(
    proc, backend_spec: str, run_id: str
) -> None:  # type: ignore[no-untyped-def]
    """a -> b, c joined by and_(b, c): c has written the state when b's checkpoint
    commits, then the process is killed. That checkpoint does not hold c's writes, so the
    resumed c applies them once: paid == 100 and items == ['b', 'c']."""
    proc.run(backend_spec, "PaidJoin", "kickoff", run_id, crash_at="c", expect_killed=True)
    p = backend(backend_spec)
    try:
        latest = p.load_checkpoint(run_id)
        assert latest is not None and latest.method_name == "b"
        assert latest.state["items"] == ["b"] and latest.state["paid"] == 0
    finally:
        p.close()
    out = wait_out_lease(proc, backend_spec, "PaidJoin", run_id)
    assert out == {"result": {"paid": 100, "items": ["b", "c"]}}
    assert Counter(proc.steps()) == Counter({"a": 1, "b": 1, "c": 2, "done": 1})


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
