"""Ctrl-C (SIGINT) to a process running a synchronous kickoff on its main thread.

The first Ctrl-C cancels the run; it unwinds at its next ``await`` (a transaction in
flight is rolled back or committed whole, the lease is given back) and ``kickoff()`` then
raises KeyboardInterrupt. A second Ctrl-C raises at once, even when the run does not
unwind. A program with its own SIGINT handler keeps it; a KeyboardInterrupt raised there
still lets the run unwind, for a bounded time. Real subprocesses, real signals.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

# A persisted flow whose step ticks until the stop file exists. argv: flows' folder, backend
# spec, what to do, run id. "stubborn": the step swallows cancellation (it never unwinds on
# its own); "own-handler": the program installs its own SIGINT handler first; "resume":
# resume the run.
CHILD = """
import asyncio, os, sys, signal
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import flows
from flowkit import Flow, FlowState, listen, start
import flowkit._concurrency as concurrency

concurrency.UNWIND_LIMIT = 1.0
kind, run_id = sys.argv[3], sys.argv[4]
stop = Path(os.environ["FLOWKIT_TEST_STOP"])

class S(FlowState):
    ticks: int = 0

class Ticking(Flow[S], name="ticking"):
    @start()
    async def tick(self) -> None:
        print("ticking", flush=True)
        while not stop.exists():
            self.state.ticks += 1
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if "stubborn" not in kind:
                    raise
                print("swallowed", flush=True)

    @listen(tick)
    def done(self) -> int:
        return self.state.ticks

if "own-handler" in kind:
    def handler(signum, frame):
        print("own handler", flush=True)
        raise KeyboardInterrupt
    signal.signal(signal.SIGINT, handler)
class Sleepy(Flow[S], name="sleepy"):
    @start()
    def nap(self) -> None:
        print("ticking", flush=True)
        import time
        time.sleep(600)

p = flows.backend(sys.argv[2])
flow = Ticking(persistence=p, lease_ttl=30)
try:
    if kind == "unpersisted":
        Sleepy().kickoff()
    elif kind == "resume":
        print(flow.resume(run_id), flush=True)
    else:
        flow.kickoff(inputs={"id": run_id})
except KeyboardInterrupt:
    print("interrupted", flush=True)
    raise
finally:
    ours = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    print("handler after:", "default" if ours else "other", flush=True)
"""


def _child(kind: str, spec: str, run_id: str, stop: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(HERE), spec, kind, run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, FLOWKIT_TEST_STOP=str(stop)),
    )
    if kind != "resume":
        assert child.stdout is not None and child.stdout.readline().strip() == "ticking"
    return child


def _interrupt(child: subprocess.Popen[str], *, twice: bool = False) -> tuple[str, str]:
    try:
        time.sleep(0.2)
        child.send_signal(signal.SIGINT)
        if twice:
            assert child.stdout is not None and child.stdout.readline().strip() == "swallowed"
            child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)  # a hang fails here
    finally:
        child.kill()
    assert child.returncode != 0 and "KeyboardInterrupt" in err, err
    assert "interrupted" in out, out
    return out, err


def _resume_finishes(spec: str, run_id: str, stop: Path) -> None:
    """Resume at once (in another process) completes the run."""
    stop.touch()
    child = _child("resume", spec, run_id, stop)
    try:
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 0, err
    import flows

    p = flows.backend(spec)
    try:
        run = p.get_run(run_id)
        assert run is not None and run.status == "completed" and run.lease_owner is None
    finally:
        p.close()


def _lease(spec: str, run_id: str) -> tuple[str | None, str]:
    import flows

    p = flows.backend(spec)
    try:
        run = p.get_run(run_id)
        assert run is not None, run_id
        return run.lease_owner, run.status
    finally:
        p.close()


def test_first_ctrl_c_stops_the_run_cleanly_and_it_resumes(
    backend_spec: str, run_id: str, tmp_path: Path
) -> None:
    stop = tmp_path / "stop"
    out, _ = _interrupt(_child("plain", backend_spec, run_id, stop))
    assert "handler after: default" in out, out  # Python's handler is back
    assert _lease(backend_spec, run_id) == (None, "running")  # given back, resumable
    _resume_finishes(backend_spec, run_id, stop)


def test_second_ctrl_c_stops_at_once_when_the_run_does_not_unwind(
    backend_spec: str, run_id: str, tmp_path: Path
) -> None:
    stop = tmp_path / "stop"
    _interrupt(_child("stubborn", backend_spec, run_id, stop), twice=True)
    # The run never unwound: whether its lease was given back at exit or still names
    # the dead process (taken over at once), resume works right away.
    assert _lease(backend_spec, run_id)[1] == "running"
    _resume_finishes(backend_spec, run_id, stop)


def test_a_programs_own_sigint_handler_is_kept(
    backend_spec: str, run_id: str, tmp_path: Path
) -> None:
    stop = tmp_path / "stop"
    out, _ = _interrupt(_child("own-handler", backend_spec, run_id, stop))
    assert "own handler" in out and "handler after: other" in out, out
    assert _lease(backend_spec, run_id) == (None, "running")
    _resume_finishes(backend_spec, run_id, stop)


def test_unwinding_after_a_keyboard_interrupt_is_bounded(
    backend_spec: str, run_id: str, tmp_path: Path
) -> None:
    """The program's own handler raises KeyboardInterrupt and the run swallows the
    cancellation: the kickoff still ends (after ``UNWIND_LIMIT``), it does not hang."""
    stop = tmp_path / "stop"
    out, _ = _interrupt(_child("own-handler+stubborn", backend_spec, run_id, stop))
    assert "own handler" in out and "swallowed" in out, out
    assert _lease(backend_spec, run_id)[1] == "running"
    _resume_finishes(backend_spec, run_id, stop)


def test_ctrl_c_stops_a_flow_without_persistence_at_once(
    backend_spec: str, run_id: str, tmp_path: Path
) -> None:
    """Nothing to give back: KeyboardInterrupt cuts the sleeping method short (the
    child would otherwise sleep 600 s, far past the wait in _interrupt)."""
    out, _ = _interrupt(_child("unpersisted", backend_spec, run_id, tmp_path / "stop"))
    assert "handler after: default" in out, out
