"""Flows used by the durable-run tests, importable by the test subprocesses.

Every step appends ``<step>`` to the file named by ``$FLOWKIT_TEST_LOG`` when it starts,
so tests can count how often each step really ran. ``$FLOWKIT_TEST_CRASH_AT`` names a
step that kills its own process with SIGKILL (after changing the state) the first time
it runs; a marker file next to the log makes the second run survive.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path
from typing import Any, ClassVar

from pydantic import SecretStr

from flowkit import Flow, FlowState, and_, listen, migration, or_, router, start

PG_URL = os.environ.get(
    "FLOWKIT_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("FLOWKIT_TEST_MYSQL_URL", "mysql+asyncmy://root@127.0.0.1:3306/test")


_MEMORY: dict[str, Any] = {}


def backend(spec: str) -> Any:
    """``sqlite:PATH``, ``file:DIR``, ``postgres``, ``mysql`` -> a persistence backend."""
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
    if kind == "mysql":
        return fp.SQLAlchemyFlowPersistence(MYSQL_URL)
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


class Ledger(FlowState):
    items: list[str] = []
    paid: int = 0


class PaidJoin(Flow[Ledger], name="paid-join"):
    """a -> (b | c) -> and_(b, c). ``c`` writes the state first, waits until ``b``'s
    checkpoint is committed, and crashes there (with ``FLOWKIT_TEST_CRASH_AT=c``): the
    moment at which a checkpoint holding c's unfinished writes would be applied twice."""

    @start()
    def a(self) -> None:
        log_step("a")

    @listen(a)
    async def b(self) -> None:
        log_step("b")
        await asyncio.sleep(0.05)  # c writes first
        self.state.items.append("b")

    @listen(a)
    async def c(self) -> None:
        log_step("c")
        self.state.items.append("c")
        self.state.paid += 100
        if os.environ.get("FLOWKIT_TEST_CRASH_AT") == "c":
            store = self.persistence
            assert store is not None
            while True:
                latest = await store.aload_checkpoint(self.state.id)
                if latest is not None and latest.method_name == "b":
                    break
                await asyncio.sleep(0.01)
        maybe_crash("c")

    @listen(and_(b, c))
    def done(self) -> dict[str, Any]:
        log_step("done")
        return {"paid": self.state.paid, "items": self.state.items}


class SoakState(FlowState):
    laps: int = 0
    #: "method@lap" of every method whose changes are in the state
    trace: list[str] = []
    items: list[str] = []
    hits: dict[str, int] = {}
    paid: int = 0


SOAK_LAPS = 3


class SoakFlow(Flow[SoakState], name="soak"):
    """begin -> fan -> (b1 | b2 | b3, sync and async) -> and_ join -> router ``decide``
    -> "again" (back to fan) three times, then finish. Every method logs
    ``RUN_ID:method@lap`` when it starts, and records the same key in ``state.trace``."""

    def _mark(self, method: str) -> None:
        key = f"{method}@{self.state.laps}"
        log_step(f"{self.state.id}:{key}")
        self.state.trace.append(key)

    def _branch(self, name: str) -> None:
        self.state.items.append(f"{name}@{self.state.laps}")
        self.state.hits[name] = self.state.hits.get(name, 0) + 1

    @start()
    def begin(self) -> None:
        self._mark("begin")

    @listen(or_(begin, "again"))
    def fan(self) -> None:
        self.state.laps += 1
        self._mark("fan")

    @listen(fan)
    def b1(self) -> None:
        self._mark("b1")
        time.sleep(random.uniform(0, 0.01))
        self._branch("b1")

    @listen(fan)
    async def b2(self) -> None:
        self._mark("b2")
        await asyncio.sleep(random.uniform(0, 0.01))
        self._branch("b2")

    @listen(fan)
    def b3(self) -> None:
        self._mark("b3")
        self._branch("b3")
        time.sleep(random.uniform(0, 0.01))

    @listen(and_(b1, b2, b3))
    def join(self) -> None:
        self._mark("join")
        self.state.paid += 100

    @router(join)
    def decide(self) -> str:
        self._mark("decide")
        return "again" if self.state.laps < SOAK_LAPS else "done"

    @listen("done")
    def finish(self) -> int:
        self._mark("finish")
        return self.state.paid
