"""Flows used by the durable-run tests, importable by the test subprocesses.

Every step appends ``<step>`` to the file named by ``$FLOWKIT_TEST_LOG`` when it starts,
so tests can count how often each step really ran. ``$FLOWKIT_TEST_CRASH_AT`` names a
step that kills its own process with SIGKILL (after changing the state) the first time
it runs; a marker file next to the log makes the second run survive.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any, ClassVar

from pydantic import SecretStr

from flowkit import Flow, FlowState, and_, listen, migration, or_, router, start

PG_URL = os.environ.get(
    "FLOWKIT_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


_MEMORY: dict[str, Any] = {}


def backend(spec: str) -> Any:
    """``sqlite:PATH``, ``file:DIR``, ``postgres`` -> a persistence backend."""
    import flowkit.persistence as fp

    kind, _, arg = spec.partition(":")
    if kind == "sqlite":
        return fp.SQLiteFlowPersistence(arg)
    if kind == "file":
        return fp.FileFlowPersistence(arg)
    if kind == "memory":
        return _MEMORY.setdefault(arg, fp.InMemoryFlowPersistence())
    if kind == "postgres":
        return fp.SQLAlchemyFlowPersistence(PG_URL)
    raise ValueError(spec)


def log_step(step: str) -> None:
    path = os.environ.get("FLOWKIT_TEST_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(step + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def maybe_crash(step: str) -> None:
    if os.environ.get("FLOWKIT_TEST_CRASH_AT") != step:
        return
    marker = Path(os.environ["FLOWKIT_TEST_LOG"] + f".crashed-{step}")
    if marker.exists():
        return
    marker.write_text("x")
    os.kill(os.getpid(), signal.SIGKILL)


class Steps(FlowState):
    done: list[str] = []
    total: int = 0


class SixSteps(Flow[Steps], name="six-steps"):
    """s1 -> s2 -> ... -> s6, each adds its number to total."""

    def _step(self, n: int) -> int:
        name = f"s{n}"
        log_step(name)
        self.state.total += n
        self.state.done.append(name)
        maybe_crash(name)
        return self.state.total

    @start()
    def s1(self) -> int:
        return self._step(1)

    @listen(s1)
    def s2(self) -> int:
        return self._step(2)

    @listen(s2)
    def s3(self) -> int:
        return self._step(3)

    @listen(s3)
    def s4(self) -> int:
        return self._step(4)

    @listen(s4)
    def s5(self) -> int:
        return self._step(5)

    @listen(s5)
    def s6(self) -> int:
        return self._step(6)


class Branches(FlowState):
    left: int = 0
    right: int = 0
    joined: int = 0


class ParallelBranches(Flow[Branches], name="parallel-branches"):
    """begin -> (left | right, concurrently) -> join. right crashes while left is done."""

    @start()
    def begin(self) -> None:
        log_step("begin")

    @listen(begin)
    async def left(self) -> str:
        log_step("left")
        self.state.left += 1
        return "L"

    @listen(begin)
    async def right(self) -> str:
        log_step("right")
        # let left finish and be checkpointed before the crash
        await asyncio.sleep(0.3)
        maybe_crash("right")
        self.state.right += 1
        return "R"

    @listen(and_(left, right))
    def join(self) -> int:
        log_step("join")
        self.state.joined += 1
        return self.state.left + self.state.right + self.state.joined


class Review(FlowState):
    draft: str = ""
    verdict: str = ""
    edits: int = 0


class Approval(Flow[Review], name="approval"):
    """draft -> review (asks a human) -> publish."""

    @start()
    def write(self) -> str:
        log_step("write")
        self.state.draft = "hello world"
        return self.state.draft

    @listen(write)
    def review(self, draft: str) -> str:
        log_step("review")
        self.state.edits += 1  # must not be applied twice across the interrupt
        answer = self.interrupt({"question": "publish?", "draft": draft})
        self.state.verdict = str(answer)
        return str(answer)

    @listen(review)
    def publish(self, verdict: str) -> str:
        log_step("publish")
        return f"{verdict}: {self.state.draft} ({self.state.edits} edit)"


class Tally(FlowState):
    count: int = 0


class Increment(Flow[Tally], name="increment"):
    """One slow-ish step that adds 1 to the count."""

    @start()
    async def bump(self) -> int:
        current = self.state.count
        await asyncio.sleep(0.01)
        self.state.count = current + 1
        return self.state.count


class OrderV1(FlowState):
    total: float = 0.0


class OrderV2(FlowState):
    flowkit_version: ClassVar[int] = 2
    total_cents: int = 0

    @migration(from_version=1)
    @staticmethod
    def euros_to_cents(data: dict[str, Any]) -> dict[str, Any]:
        data["total_cents"] = round(data.pop("total") * 100)
        return data


class Credentials(FlowState):
    user: str = "ann"
    api_key: SecretStr = SecretStr("")


class UsesSecret(Flow[Credentials], name="uses-secret"):
    @start()
    def call(self) -> str:
        return self.state.api_key.get_secret_value()[::-1]


class Laps(FlowState):
    laps: int = 0


class Looping(Flow[Laps], name="looping"):
    """A router loop of instant laps (each lap is two checkpoints), until the file named by
    ``$FLOWKIT_TEST_STOP`` exists: a process running it spends most of its time waiting
    for checkpoint commits. Prints "looping" once it runs."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_method_calls=10_000_000, **kwargs)

    @start()
    def begin(self) -> None:
        print("looping", flush=True)

    @router(or_(begin, "again"))
    def lap(self) -> str:
        self.state.laps += 1
        stop = os.environ.get("FLOWKIT_TEST_STOP")
        return "done" if stop and Path(stop).exists() else "again"

    @listen("done")
    def finish(self) -> int:
        return self.state.laps


def log_effect(line: str) -> None:
    """An external side effect: one fsync'd line in ``$FLOWKIT_TEST_EFFECTS``."""
    path = os.environ.get("FLOWKIT_TEST_EFFECTS")
    if path:
        with open(path, "a") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())


class Baton(FlowState):
    legs: list[str] = []


class Halted(Exception):
    """Raised by Relay at ``Relay.halt_at`` to leave a run half-finished."""


class Relay(Flow[Baton], name="relay"):
    """r1 -> r2 -> r3 -> r4; each leg writes ``<run id> <leg> <pid>`` to the effect log
    as it starts. ``halt_at`` (set in the process that creates the runs) makes that leg
    fail before its side effect, so the run stops half way."""

    halt_at: ClassVar[str | None] = None

    def _leg(self, leg: str) -> None:
        if self.halt_at == leg:
            raise Halted(leg)
        log_effect(f"{self.state.id} {leg} {os.getpid()}")
        self.state.legs.append(leg)

    @start()
    def r1(self) -> None:
        self._leg("r1")

    @listen(r1)
    def r2(self) -> None:
        self._leg("r2")

    @listen(r2)
    def r3(self) -> None:
        self._leg("r3")

    @listen(r3)
    def r4(self) -> list[str]:
        self._leg("r4")
        return self.state.legs


class Slow(Flow[Baton], name="slow"):
    """w1 -> w2 -> w3 -> w4; each leg logs its start (``log_step``), then sleeps
    ``$FLOWKIT_TEST_LEG_SECONDS`` (default 0) before it finishes."""

    def _leg(self, leg: str) -> None:
        log_step(leg)
        time.sleep(float(os.environ.get("FLOWKIT_TEST_LEG_SECONDS", "0")))
        self.state.legs.append(leg)

    @start()
    def w1(self) -> None:
        self._leg("w1")

    @listen(w1)
    def w2(self) -> None:
        self._leg("w2")

    @listen(w2)
    def w3(self) -> None:
        self._leg("w3")

    @listen(w3)
    def w4(self) -> list[str]:
        self._leg("w4")
        return self.state.legs
