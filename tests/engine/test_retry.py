"""Retry policies (issue 14): ``retry=Retry(...)`` on @start/@listen/@router and on the
flow class, the stored attempt count, and what a failed run records.

Persistence-related tests run on a real SQLite file and on the real PostgreSQL server.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from retry_flows import AlwaysTimesOut, Fetched, backend

from flowkit import Flow, FlowState, Retry, and_, listen, persist, router, start
from flowkit.cli import main as cli_main
from flowkit.events import (
    FlowEvent,
    MethodFailed,
    MethodFinished,
    MethodRetrying,
    MethodStarted,
)
from flowkit.exceptions import (
    FlowConfigurationError,
    FlowDefinitionError,
    InvalidArgumentError,
    StateConflictError,
)
from flowkit.persistence import FlowPersistence

HERE = Path(__file__).resolve().parent


def _postgres_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A backend spec for retry_flows.backend(): each test runs on SQLite and PostgreSQL."""
    if request.param == "postgres":
        if not _postgres_up():
            if os.environ.get("CI"):
                pytest.fail("PostgreSQL at 127.0.0.1:5432 is down; CI must run these tests")
            pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
        return "postgres"
    return f"sqlite:{tmp_path / 'runs.db'}"


@pytest.fixture
def store(spec: str) -> Iterator[FlowPersistence]:
    persistence = backend(spec)
    yield persistence
    persistence.close()


@pytest.fixture
def run_id() -> str:
    return f"retry-{uuid.uuid4()}"


class Counts(FlowState):
    calls: int = 0
    items: list[str] = []
    total: int = 0


def fails_then_succeeds(failures: int, error: type[Exception] = TimeoutError, **policy: Any) -> Any:
    """A flow whose ``work`` raises ``error`` on its first ``failures`` calls; each call
    first changes the state (an append and an increment), then raises or returns."""
    policy.setdefault("delay", 0.001)
    calls: list[int] = []

    class Flaky(Flow[Counts]):
        @start()
        def begin(self) -> None:
            self.state.items.append("begin")

        @listen(begin, retry=Retry(**policy))
        def work(self) -> int:
            calls.append(1)
            self.state.items.append("work")
            self.state.total += 1
            if len(calls) <= failures:
                raise error(f"call {len(calls)} failed")
            return len(calls)

    Flaky.calls = calls  # type: ignore[attr-defined]
    return Flaky


# --- the policy ---------------------------------------------------------------------------


def test_success_on_the_second_attempt() -> None:
    """A method that raises a listed exception once runs again and the run completes."""
    flow_cls = fails_then_succeeds(1, attempts=3)
    flow = flow_cls()
    assert flow.kickoff() == 2
    assert len(flow_cls.calls) == 2


def test_partial_changes_of_a_failed_attempt_are_dropped() -> None:
    """Each attempt starts from the state without the failed attempts' changes: two
    failures, then success, leave one "work" item and total 1 (no persistence)."""
    flow_cls = fails_then_succeeds(2, attempts=3)
    flow = flow_cls()
    flow.kickoff()
    assert flow.state.items == ["begin", "work"]
    assert flow.state.total == 1


def test_exhausted_attempts_raise_the_last_error() -> None:
    """After ``attempts`` failures the method's exception propagates unchanged."""
    flow_cls = fails_then_succeeds(5, attempts=3)
    with pytest.raises(TimeoutError, match="call 3 failed"):
        flow_cls().kickoff()
    assert len(flow_cls.calls) == 3


def test_exceptions_not_listed_are_not_retried() -> None:
    """on=(TimeoutError,): a ValueError fails the run at the first attempt."""
    flow_cls = fails_then_succeeds(1, ValueError, attempts=5, on=(TimeoutError,))
    flow = flow_cls()
    retried: list[FlowEvent] = []
    flow.subscribe(retried.append, MethodRetrying)
    with pytest.raises(ValueError, match="call 1 failed"):
        flow.kickoff()
    assert len(flow_cls.calls) == 1 and retried == []


def test_a_predicate_decides_what_is_retried() -> None:
    """on=function: retried while it returns True."""
    flow_cls = fails_then_succeeds(
        2, ConnectionError, attempts=5, on=lambda exc: "call 1" in str(exc)
    )
    with pytest.raises(ConnectionError, match="call 2 failed"):
        flow_cls().kickoff()
    assert len(flow_cls.calls) == 2


def test_subclasses_of_a_listed_exception_are_retried() -> None:
    """on=OSError covers ConnectionError (isinstance, as ``except`` does)."""
    flow_cls = fails_then_succeeds(1, ConnectionError, attempts=2, on=OSError)
    assert flow_cls().kickoff() == 2


def test_retry_on_start_and_router() -> None:
    """retry= works on @start and @router (and on a @listen stacked with @router())."""
    calls: list[str] = []

    class Routed(Flow[dict]):  # type: ignore[type-arg]
        @start(retry=Retry(attempts=2, delay=0))
        def begin(self) -> None:
            calls.append("begin")
            if calls.count("begin") == 1:
                raise TimeoutError

        @router(begin, retry=Retry(attempts=2, delay=0))
        def decide(self) -> str:
            calls.append("decide")
            if calls.count("decide") == 1:
                raise TimeoutError
            return "go"

        @router()
        @listen("go", retry=Retry(attempts=2, delay=0))
        def go(self) -> str:
            calls.append("go")
            if calls.count("go") == 1:
                raise TimeoutError
            return "done"

        @listen("done")
        def end(self) -> str:
            return "end"

    assert Routed().kickoff() == "end"
    assert calls == ["begin", "begin", "decide", "decide", "go", "go"]


def test_flow_wide_default_override_and_inheritance() -> None:
    """``class F(Flow, retry=...)`` covers every method without its own policy; a method's
    retry= wins; Retry(attempts=1) turns retrying off; subclasses inherit the default."""
    calls: list[str] = []

    class Base(Flow[dict], retry=Retry(attempts=3, delay=0)):  # type: ignore[type-arg]
        @start()
        def a(self) -> None:
            calls.append("a")
            if calls.count("a") < 3:
                raise RuntimeError("a")

        @listen(a, retry=Retry(attempts=2, delay=0))
        def b(self) -> None:
            calls.append("b")
            if calls.count("b") < 2:
                raise RuntimeError("b")

    Base().kickoff()
    assert calls == ["a", "a", "a", "b", "b"]

    class Child(Base):
        @listen(Base.b, retry=Retry(attempts=1))
        def c(self) -> None:
            calls.append("c")
            raise RuntimeError("c")

    calls.clear()
    with pytest.raises(RuntimeError, match="c"):
        Child().kickoff()
    assert calls == ["a", "a", "a", "b", "b", "c"]


def test_policy_waits() -> None:
    """Waits grow by ``backoff`` from ``delay``, are capped at ``max_delay``, and jitter
    only adds (at most ``jitter``, never beyond ``max_delay``)."""
    policy = Retry(attempts=10, delay=0.5, backoff=3, max_delay=10)
    assert [policy.wait(n) for n in range(1, 6)] == [0.5, 1.5, 4.5, 10, 10]
    assert Retry(attempts=2000, delay=1, backoff=10, max_delay=7).wait(1999) == 7
    jittery = Retry(delay=1, backoff=2, max_delay=4.5, jitter=1)
    for _ in range(200):
        assert 1 <= jittery.wait(1) <= 2
        assert 4 <= jittery.wait(3) <= 4.5
        assert jittery.wait(5) == 4.5


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        pytest.param({"attempts": 0}, InvalidArgumentError, ">= 1", id="attempts-0"),
        pytest.param({"attempts": "3"}, FlowConfigurationError, "int", id="attempts-str"),
        pytest.param({"attempts": True}, FlowConfigurationError, "int", id="attempts-bool"),
        pytest.param({"delay": -1}, InvalidArgumentError, "negative", id="delay-negative"),
        pytest.param({"delay": "1"}, FlowConfigurationError, "number", id="delay-str"),
        pytest.param({"backoff": 0.5}, InvalidArgumentError, ">= 1", id="backoff"),
        pytest.param({"jitter": float("nan")}, InvalidArgumentError, "finite", id="jitter-nan"),
        pytest.param(
            {"delay": 5, "max_delay": 1}, InvalidArgumentError, "max_delay", id="max-below"
        ),
        pytest.param({"on": KeyboardInterrupt}, FlowConfigurationError, "Exception", id="base"),
        pytest.param({"on": ()}, FlowConfigurationError, "empty", id="on-empty"),
        pytest.param({"on": (TimeoutError, int)}, FlowConfigurationError, "int", id="on-int"),
        pytest.param({"on": "TimeoutError"}, FlowConfigurationError, "function", id="on-str"),
    ],
)
def test_bad_policies_are_clear_errors(kwargs: dict[str, Any], error: type, words: str) -> None:
    """Each bad argument names itself; values out of range are ValueErrors, wrong types
    TypeErrors."""
    with pytest.raises(error, match=words) as info:
        Retry(**kwargs)
    assert next(iter(kwargs)) in str(info.value)
    assert isinstance(info.value, ValueError if error is InvalidArgumentError else TypeError)


def test_retry_that_is_not_a_policy_is_a_definition_error() -> None:
    """retry=3 on a decorator names the method; on the class, the class."""
    with pytest.raises(
        FlowDefinitionError, match=r"@start on .*Bad\.work'?: retry=3 is not a flowkit\.Retry"
    ):

        class Bad(Flow[dict]):  # type: ignore[type-arg]
            @start(retry=3)  # type: ignore[arg-type]
            def work(self) -> None:
                pass

    with pytest.raises(
        FlowDefinitionError, match=r"class .*BadClass: retry=3 is not a flowkit\.Retry"
    ):

        class BadClass(Flow[dict], retry=3):  # type: ignore[type-arg, arg-type]
            @start()
            def work(self) -> None:
                pass


def test_engine_errors_around_the_method_are_not_retried() -> None:
    """A merge conflict between parallel branches fails the run even under on=Exception:
    a policy covers what the method raises, not what flowkit raises around it."""
    calls: list[str] = []

    class Clash(Flow[Counts], retry=Retry(attempts=3, delay=0)):
        @start()
        def begin(self) -> None:
            pass

        @listen(begin)
        async def one(self) -> None:
            calls.append("one")
            self.state.total = 1

        @listen(begin)
        async def two(self) -> None:
            calls.append("two")
            await asyncio.sleep(0.01)
            self.state.total = 2

    with pytest.raises(StateConflictError):
        Clash().kickoff()
    assert sorted(calls) == ["one", "two"]


# --- events and timing --------------------------------------------------------------------


def test_method_retrying_event_fields(store: FlowPersistence) -> None:
    """MethodRetrying carries the method, the failed attempt, the policy's maximum, the
    wait and the error, and the seq of the checkpoint recording the failed attempt; the
    final failure is a MethodFailed with its attempt number."""
    flow_cls = fails_then_succeeds(9, attempts=3, delay=0.01, backoff=2)
    flow = flow_cls(persistence=store)
    events: list[FlowEvent] = []
    flow.subscribe(events.append, MethodRetrying, MethodFailed, MethodStarted)
    with pytest.raises(TimeoutError):
        flow.kickoff()
    retrying = [e for e in events if isinstance(e, MethodRetrying)]
    assert [(e.method, e.attempt, e.attempts, e.delay) for e in retrying] == [
        ("work", 1, 3, 0.01),
        ("work", 2, 3, 0.02),
    ]
    assert [str(e.error) for e in retrying] == ["call 1 failed", "call 2 failed"]
    assert all(isinstance(e.error, TimeoutError) for e in retrying)
    failed = [e for e in events if isinstance(e, MethodFailed)]
    assert [(e.method, e.attempt, str(e.error)) for e in failed] == [("work", 3, "call 3 failed")]
    started = [e.method for e in events if isinstance(e, MethodStarted)]
    assert started == ["begin", "work", "work", "work"]
    history = {cp.seq: cp for cp in store.history(flow.flow_id)}
    for event in retrying:
        assert event.seq is not None
        recorded = history[event.seq].meta["retry"]
        assert recorded["attempt"] == event.attempt and recorded["delay"] == event.delay


def test_backoff_is_not_shorter_than_the_delay() -> None:
    """The next attempt does not start before the computed wait (measured loosely: only
    a lower bound)."""
    starts: list[float] = []

    class Slow(Flow[dict]):  # type: ignore[type-arg]
        @start(retry=Retry(attempts=3, delay=0.15, backoff=2))
        async def work(self) -> None:
            starts.append(time.monotonic())
            if len(starts) < 3:
                raise TimeoutError

    Slow().kickoff()
    assert len(starts) == 3
    assert starts[1] - starts[0] >= 0.15
    assert starts[2] - starts[1] >= 0.30


async def test_backoff_does_not_block_a_parallel_sibling() -> None:
    """While one branch waits out a (long) backoff, its sibling runs and finishes: the
    wait is an asyncio timer, not a blocking sleep."""
    failed_once = asyncio.Event()
    sibling_done = asyncio.Event()
    attempts: list[int] = []

    class Branches(Flow[Counts]):
        @start()
        def begin(self) -> None:
            pass

        @listen(begin, retry=Retry(attempts=2, delay=30))
        async def flaky(self) -> None:
            attempts.append(1)
            failed_once.set()
            raise TimeoutError

        @listen(begin)
        async def sibling(self) -> None:
            await failed_once.wait()
            self.state.items.append("sibling")

    def on_finished(event: FlowEvent) -> None:
        if isinstance(event, MethodFinished) and event.method == "sibling":
            sibling_done.set()

    flow = Branches()
    flow.subscribe(on_finished, MethodFinished)
    run = asyncio.ensure_future(flow.kickoff_async())
    try:
        await asyncio.wait_for(sibling_done.wait(), 20)
        assert attempts == [1]  # still waiting to retry
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


def test_retried_branch_does_not_disturb_its_sibling(store: FlowPersistence) -> None:
    """Parallel branches: one fails twice then succeeds, the other runs once; the join
    sees each branch's changes exactly once, and the stored state agrees."""
    calls: list[str] = []

    class Join(Flow[Counts]):
        @start()
        def begin(self) -> None:
            pass

        @listen(begin, retry=Retry(attempts=3, delay=0.01))
        async def flaky(self) -> None:
            calls.append("flaky")
            self.state.items.append("flaky")
            self.state.calls += 1
            if calls.count("flaky") < 3:
                raise TimeoutError

        @listen(begin)
        async def steady(self) -> None:
            calls.append("steady")
            await asyncio.sleep(0.02)
            self.state.items.append("steady")
            self.state.total += 10

        @listen(and_(flaky, steady))
        def join(self) -> tuple[list[str], int, int]:
            return sorted(self.state.items), self.state.calls, self.state.total

    flow = Join(persistence=store)
    assert flow.kickoff() == (["flaky", "steady"], 1, 10)
    assert calls.count("flaky") == 3 and calls.count("steady") == 1
    stored = store.load_state(flow.flow_id)
    assert stored is not None
    assert sorted(stored["items"]) == ["flaky", "steady"] and stored["calls"] == 1


# --- stored attempts and errors -----------------------------------------------------------


def test_failed_attempts_are_checkpointed_with_state_from_the_start(
    store: FlowPersistence,
) -> None:
    """Each failed attempt is recorded in a checkpoint holding the state the method
    started from (not its partial changes), the attempt count in the position and the
    error with its traceback; success clears the count."""
    flow_cls = fails_then_succeeds(2, attempts=3)
    flow = flow_cls(persistence=store)
    assert flow.kickoff() == 3
    history = store.history(flow.flow_id)
    retried = [cp for cp in history if "retry" in cp.meta]
    assert [cp.meta["retry"]["attempt"] for cp in retried] == [1, 2]
    for cp in retried:
        assert cp.method_name == "work"
        assert cp.state["items"] == ["begin"] and cp.state["total"] == 0
        error = cp.meta["retry"]["error"]
        assert error["type"] == "TimeoutError" and error["attempts"] == 3
        assert "raise error(" in error["traceback"]
        counts = cp.meta["position"]["retries"]
        assert [c["count"] for c in counts.values()] == [cp.meta["retry"]["attempt"]]
    last = history[-1]
    assert "retry" not in last.meta and "retries" not in last.meta["position"]
    assert last.state["items"] == ["begin", "work"] and last.state["total"] == 1
    run = store.get_run(flow.flow_id)
    assert run is not None and run.status == "completed"


def test_exhausted_run_records_the_error(store: FlowPersistence, run_id: str) -> None:
    """A run that used up its attempts is failed; its info["error"] names the method,
    the exception type and message, the attempt and the policy's maximum, and holds the
    traceback from the method's own frame."""
    with pytest.raises(TimeoutError):
        AlwaysTimesOut(persistence=store).kickoff(inputs={"id": run_id})
    run = store.get_run(run_id)
    assert run is not None and run.status == "failed"
    error = run.info["error"]
    assert {k: error[k] for k in ("method", "type", "message", "attempt", "attempts")} == {
        "method": "fetch",
        "type": "TimeoutError",
        "message": "the server did not answer",
        "attempt": 3,
        "attempts": 3,
    }
    trace = error["traceback"]
    assert trace.startswith("Traceback (most recent call last):")
    assert "in fetch" in trace and "_runner.py" not in trace
    assert trace.rstrip().endswith("TimeoutError: the server did not answer")
    # the earlier attempts' errors stay in the history
    retried = [cp.meta["retry"] for cp in store.history(run_id) if "retry" in cp.meta]
    assert [(r["attempt"], r["error"]["message"]) for r in retried] == [
        (1, "the server did not answer"),
        (2, "the server did not answer"),
    ]
    stored = store.load_state(run_id)
    assert stored is not None and stored["tries"] == 0


def test_error_without_a_policy_records_attempt_one(store: FlowPersistence) -> None:
    """A method without a retry policy fails the run at once: attempt 1 of 1."""
    flow_cls = fails_then_succeeds(1, ValueError, attempts=3, on=TimeoutError)
    flow = flow_cls(persistence=store)
    with pytest.raises(ValueError):
        flow.kickoff()
    run = store.get_run(flow.flow_id)
    assert run is not None
    assert (run.info["error"]["attempt"], run.info["error"]["attempts"]) == (1, 3)


def test_long_tracebacks_are_cut_in_the_middle(store: FlowPersistence) -> None:
    """A traceback longer than 8,000 characters keeps its first 2,000 and its last
    characters, with a line saying how many were cut; the message is cut at 2,000."""

    # two functions calling each other: no run of identical frames for the traceback
    # module to fold into "[Previous line repeated ...]"
    def ping(n: int) -> None:
        if n == 0:
            raise RecursionError("x" * 5000)
        pong(n - 1)

    def pong(n: int) -> None:
        ping(n - 1)

    class Deep(Flow[dict]):  # type: ignore[type-arg]
        @start()
        def dig(self) -> None:
            ping(150)

    flow = Deep(persistence=store)
    with pytest.raises(RecursionError):
        flow.kickoff()
    run = store.get_run(flow.flow_id)
    assert run is not None
    error = run.info["error"]
    assert error["message"] == "x" * 2000
    trace = error["traceback"]
    marker = [line for line in trace.splitlines() if "characters cut" in line]
    assert len(marker) == 1
    assert len(trace) <= 8000
    assert trace.startswith("Traceback (most recent call last):")
    assert trace.endswith("RecursionError: " + "x" * 5000 + "\n")


def test_a_cut_traceback_fits_its_limit_marker_included() -> None:
    """The stored traceback, cut line included, is never longer than the limit, whatever
    the length of the number on the cut line."""
    from flowkit._retry import TRACEBACK_LIMIT, cap_traceback

    for size in (TRACEBACK_LIMIT + 1, TRACEBACK_LIMIT + 50, 99_999, 1_234_567):
        text = "".join(chr(ord("a") + i % 26) for i in range(size))
        capped = cap_traceback(text)
        assert len(capped) <= TRACEBACK_LIMIT, size
        assert capped.startswith(text[:2000])
        head, cut_line, tail = capped.split("\n", 2)
        cut = int(cut_line.split("[")[1].split()[0])
        assert text.endswith(tail) and len(head) + cut + len(tail) == size
    assert cap_traceback("short") == "short"


def test_cli_names_a_count_over_a_lowered_policy(
    tmp_path: Path, run_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three attempts were counted under Retry(attempts=5), then the code lowered the
    policy to 2: resume makes one more attempt and fails; show says attempt 4 and what
    the policy now allows, never "attempt 4 of 2"."""
    calls: list[int] = []

    class Lowered(Flow[Fetched]):
        @start(retry=Retry(attempts=5, delay=0))
        def fetch(self) -> None:
            calls.append(1)
            if len(calls) == 4:
                raise KeyboardInterrupt  # the process stops during attempt 4
            raise TimeoutError(f"call {len(calls)}")

    db = tmp_path / "runs.db"
    store = backend(f"sqlite:{db}")
    try:
        with pytest.raises(KeyboardInterrupt):
            Lowered(persistence=store).kickoff(inputs={"id": run_id})

        class Lowered(Flow[Fetched]):  # type: ignore[no-redef]
            @start(retry=Retry(attempts=2, delay=0))
            def fetch(self) -> None:
                calls.append(1)
                raise TimeoutError(f"call {len(calls)}")

        with pytest.raises(TimeoutError, match="call 5"):
            Lowered(persistence=store).resume(run_id)
        run = store.get_run(run_id)
        assert run is not None
        assert (run.info["error"]["attempt"], run.info["error"]["attempts"]) == (4, 2)
    finally:
        store.close()
    capsys.readouterr()
    assert cli_main(["--db", str(db), "show", run_id]) == 0
    out = capsys.readouterr().out
    shown = "Error in method fetch (attempt 4; the retry policy allows 2): TimeoutError: call 5"
    assert shown in out
    assert "of 2)" not in out


def test_resume_after_exhaustion_starts_a_fresh_count(
    store: FlowPersistence, run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """resume of a failed run gives the method its full number of attempts again."""
    log = tmp_path / "attempts.log"
    monkeypatch.setenv("FLOWKIT_TEST_LOG", str(log))
    with pytest.raises(TimeoutError):
        AlwaysTimesOut(persistence=store).kickoff(inputs={"id": run_id})
    assert log.read_text().split() == ["fetch"] * 3
    with pytest.raises(TimeoutError):
        AlwaysTimesOut(persistence=store).resume(run_id)
    assert log.read_text().split() == ["fetch"] * 6
    run = store.get_run(run_id)
    assert run is not None and run.status == "failed"
    assert run.info["error"]["attempt"] == 3


def test_fork_of_a_failed_attempt_starts_a_fresh_count(
    store: FlowPersistence, run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fork of the checkpoint recording attempt 2 is a new run: its resume makes three
    attempts, and its first checkpoint is not a failed attempt."""
    log = tmp_path / "attempts.log"
    monkeypatch.setenv("FLOWKIT_TEST_LOG", str(log))
    with pytest.raises(TimeoutError):
        AlwaysTimesOut(persistence=store).kickoff(inputs={"id": run_id})
    second = next(
        cp for cp in store.history(run_id) if cp.meta.get("retry", {}).get("attempt") == 2
    )
    child = AlwaysTimesOut(persistence=store).fork(run_id, second.seq)
    first = store.history(child)[0]
    assert "retry" not in first.meta and "retries" not in first.meta["position"]
    with pytest.raises(TimeoutError):
        AlwaysTimesOut(persistence=store).resume(child)
    assert log.read_text().split() == ["fetch"] * 6


@pytest.mark.slow
def test_sigkill_between_attempts_then_resume_continues_the_count(
    spec: str, run_id: str, tmp_path: Path
) -> None:
    """A process killed (SIGKILL) while it waits to retry after attempt 1: resume in
    another process makes attempts 2 and 3 only -- the count was stored, not reset -- and
    the stored state never holds a failed attempt's changes."""
    log = tmp_path / "attempts.log"
    env = dict(os.environ, FLOWKIT_TEST_LOG=str(log), RETRY_DELAY="3600")
    errors = tmp_path / "child.err"
    with errors.open("wb") as err:
        child = subprocess.Popen(
            [sys.executable, str(HERE / "retry_flows.py"), spec, "kickoff", run_id],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    store = backend(spec)
    try:
        deadline = time.monotonic() + 60
        while not any("retry" in cp.meta for cp in _history(store, run_id)):
            assert child.poll() is None, errors.read_text()
            assert time.monotonic() < deadline, "attempt 1 was never recorded"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
        assert log.read_text().split() == ["fetch"]
        run = store.get_run(run_id)
        assert run is not None and run.status == "running"

        env["RETRY_DELAY"] = "0.01"
        resumed = subprocess.run(
            [sys.executable, str(HERE / "retry_flows.py"), spec, "resume", run_id],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert resumed.returncode != 0 and "TimeoutError" in resumed.stderr, resumed.stderr
        assert log.read_text().split() == ["fetch"] * 3
        run = store.get_run(run_id)
        assert run is not None and run.status == "failed"
        assert (run.info["error"]["attempt"], run.info["error"]["attempts"]) == (3, 3)
        attempts = [
            cp.meta["retry"]["attempt"] for cp in store.history(run_id) if "retry" in cp.meta
        ]
        assert attempts == [1, 2]
        stored = store.load_state(run_id)
        assert stored is not None and stored["tries"] == 0 and stored["notes"] == ["begin"]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        store.close()


def _history(store: FlowPersistence, run_id: str) -> list[Any]:
    if store.get_run(run_id) is None:
        return []
    return store.history(run_id)


def test_a_stored_count_is_continued_by_resume(store: FlowPersistence, run_id: str) -> None:
    """In-process form of the crash test: a run left "running" after attempt 1 of 3 (the
    process stopped during attempt 2, which therefore does not count) resumes at attempt
    2, and fails after attempt 3."""
    attempts: list[int] = []

    @persist(store)
    class Stopped(Flow[Fetched]):
        @start(retry=Retry(attempts=3, delay=0))
        def fetch(self) -> None:
            attempts.append(1)
            if len(attempts) == 2:
                raise KeyboardInterrupt  # stands in for the process stopping mid-run
            raise TimeoutError(f"call {len(attempts)}")

    with pytest.raises(KeyboardInterrupt):
        Stopped().kickoff(inputs={"id": run_id})
    events: list[FlowEvent] = []
    flow = Stopped()
    flow.subscribe(events.append, MethodRetrying, MethodFailed)
    with pytest.raises(TimeoutError, match="call 4"):
        flow.resume(run_id)
    assert len(attempts) == 4
    assert [(type(e).__name__, getattr(e, "attempt", None)) for e in events] == [
        ("MethodRetrying", 2),
        ("MethodFailed", 3),
    ]


def test_an_edit_between_attempts_keeps_the_count(store: FlowPersistence, run_id: str) -> None:
    """update_state on a run stopped between attempts: the edit checkpoint keeps the
    count (resume goes on from attempt 2) and is not itself a failed attempt."""
    attempts: list[int] = []

    @persist(store)
    class Stopped(Flow[Fetched]):
        @start(retry=Retry(attempts=2, delay=0))
        def fetch(self) -> int:
            attempts.append(1)
            if len(attempts) == 1:
                raise TimeoutError
            if len(attempts) == 2:
                raise KeyboardInterrupt
            raise TimeoutError(f"tries={self.state.tries}")

    with pytest.raises(KeyboardInterrupt):
        Stopped().kickoff(inputs={"id": run_id})
    edit = Stopped().update_state(run_id, {"tries": 7}, reason="test", actor="me")
    assert "retry" not in edit.meta and edit.meta["position"]["retries"]
    with pytest.raises(TimeoutError, match="tries=7"):
        Stopped().resume(run_id)
    assert len(attempts) == 3  # attempt 2 of 2, not two more
    retried = [cp.meta["retry"]["attempt"] for cp in store.history(run_id) if "retry" in cp.meta]
    assert retried == [1]


# --- the command line ---------------------------------------------------------------------


def test_cli_show_and_history_print_the_error(
    tmp_path: Path, run_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """flowkit show prints the failing method, attempt, error and traceback; history
    marks the checkpoints of failed attempts and ends with the run's error."""
    db = tmp_path / "runs.db"
    store = backend(f"sqlite:{db}")
    try:
        with pytest.raises(TimeoutError):
            AlwaysTimesOut(persistence=store).kickoff(inputs={"id": run_id})
    finally:
        store.close()
    capsys.readouterr()
    assert cli_main(["--db", str(db), "show", run_id]) == 0
    out = capsys.readouterr().out
    assert "Error in method fetch (attempt 3 of 3): TimeoutError: the server did not answer" in out
    assert "  Traceback (most recent call last):" in out and "in fetch" in out
    assert cli_main(["--db", str(db), "history", run_id]) == 0
    out = capsys.readouterr().out
    failed_rows = [line for line in out.splitlines() if "FAILED fetch" in line]
    assert len(failed_rows) == 2
    assert "FAILED fetch (attempt 1 of 3): TimeoutError: the server did not answer" in out
    assert "retry in 0.01s; next: fetch" in failed_rows[0]
    assert "Failed in fetch (attempt 3 of 3): TimeoutError: the server did not answer" in out
    assert cli_main(["--db", str(db), "history", run_id, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [c["retry"]["attempt"] for c in data if c["retry"]] == [1, 2]
    assert cli_main(["--db", str(db), "show", run_id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["error"]["attempt"] == 3 and "traceback" in shown["error"]


def test_cli_show_running_run_names_failed_attempts(
    tmp_path: Path, run_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run stopped between attempts shows, beside its pending method, how often it
    failed and the last error."""
    db = tmp_path / "runs.db"
    store = backend(f"sqlite:{db}")
    attempts: list[int] = []

    class Stopped(Flow[Fetched]):
        @start(retry=Retry(attempts=3, delay=0))
        def fetch(self) -> None:
            attempts.append(1)
            if len(attempts) == 1:
                raise TimeoutError("slow")
            raise KeyboardInterrupt

    try:
        with pytest.raises(KeyboardInterrupt):
            Stopped(persistence=store).kickoff(inputs={"id": run_id})
    finally:
        store.close()
    capsys.readouterr()
    assert cli_main(["--db", str(db), "show", run_id]) == 0
    out = capsys.readouterr().out
    assert "  fetch (a start); failed 1 time(s), last: fetch (attempt 1 of 3)" in out


# --- logging and tracing ------------------------------------------------------------------


def test_retries_are_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    """The flowkit logger says which attempt failed, the error and the wait."""
    flow_cls = fails_then_succeeds(1, attempts=3, delay=0.001)
    with caplog.at_level("INFO", logger="flowkit"):
        flow_cls().kickoff()
    lines = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(lines) == 1
    assert (
        "work failed (attempt 1 of 3): TimeoutError: call 1 failed; retrying in 0.001s"
        in (lines[0])
    )


def test_each_attempt_gets_its_own_span() -> None:
    """OpenTelemetry: a retried attempt's span ends in ERROR with its attempt number; the
    next attempt has a new span and the run span ends OK."""
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import StatusCode

    from flowkit.otel import instrument

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    stop = instrument(provider)
    try:
        fails_then_succeeds(1, attempts=3)().kickoff()
    finally:
        stop()
        provider.shutdown()
    spans = memory.get_finished_spans()
    work = [s for s in spans if s.name == "flowkit.method work"]
    assert len(work) == 2
    assert work[0].status.status_code is StatusCode.ERROR
    assert work[0].attributes is not None and work[0].attributes["flowkit.attempt"] == 1
    assert work[1].status.status_code is not StatusCode.ERROR
    (run,) = [s for s in spans if s.name.startswith("flowkit.run ")]
    assert run.status.status_code is not StatusCode.ERROR
    assert run.attributes is not None and run.attributes["flowkit.status"] == "completed"


def test_sync_branches_in_threads_are_retried() -> None:
    """Synchronous parallel branches (run in worker threads) are retried the same way."""
    calls: list[str] = []

    class Threads(Flow[Counts]):
        @start()
        def begin(self) -> None:
            pass

        @listen(begin, retry=Retry(attempts=2, delay=0.001))
        def flaky(self) -> None:
            calls.append("flaky")
            self.state.calls += 1
            if calls.count("flaky") == 1:
                raise TimeoutError

        @listen(begin)
        def steady(self) -> None:
            calls.append("steady")
            self.state.total += 1

        @listen(and_(flaky, steady))
        def join(self) -> tuple[int, int]:
            return self.state.calls, self.state.total

    assert Threads().kickoff() == (1, 1)
    assert sorted(calls) == ["flaky", "flaky", "steady"]


def test_a_damaged_stored_count_is_a_corrupt_checkpoint(
    store: FlowPersistence, run_id: str
) -> None:
    """A stored retry count that is not a count is reported as a damaged checkpoint
    naming the run, not silently read as zero."""
    from flowkit.exceptions import CorruptCheckpointError

    attempts: list[int] = []

    @persist(store)
    class Stopped(Flow[Fetched]):
        @start(retry=Retry(attempts=3, delay=0))
        def fetch(self) -> None:
            attempts.append(1)
            if len(attempts) == 1:
                raise TimeoutError
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Stopped().kickoff(inputs={"id": run_id})
    latest = store.load_checkpoint(run_id)
    assert latest is not None
    meta = dict(latest.meta)
    position = dict(meta["position"])
    position["retries"] = {
        key: {**value, "count": -2} for key, value in position["retries"].items()
    }
    meta["position"] = position
    store.save_checkpoint(run_id, "fetch", latest.state, expected_seq=latest.seq, meta=meta)
    with pytest.raises(CorruptCheckpointError, match=run_id):
        Stopped().resume(run_id)


def test_stream_events_include_retries() -> None:
    """stream_events yields MethodRetrying between the attempts' MethodStarted events."""
    flow_cls = fails_then_succeeds(1, attempts=2)
    kinds = [(type(e).__name__, getattr(e, "method", None)) for e in flow_cls().stream_events()]
    assert kinds[1:-2] == [
        ("MethodStarted", "begin"),
        ("MethodFinished", "begin"),
        ("MethodStarted", "work"),
        ("MethodRetrying", "work"),
        ("MethodStarted", "work"),
        ("MethodFinished", "work"),
    ]
