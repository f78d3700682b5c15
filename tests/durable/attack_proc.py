"""Subprocess entry point for the attack tests (tests/durable/test_attack_*.py).

python tests/durable/attack_proc.py BACKEND FLOW ACTION RUN_ID [VALUE_JSON]
ACTION: kickoff | resume | resume-value

Like proc.py, with the attack flows below. Prints one JSON line: {"result": ...},
{"interrupted": ...} or {"error": type, "message": ...} (FlowkitError leaves only; any
other exception is a traceback and a non-zero exit).

Flows log to fsync'd files named by the environment, so a test can tell what a process
really executed even when it was SIGKILLed a moment later:

- ``$FLOWKIT_TEST_EFFECTS``: ``<run id> <what> <pid>`` per side effect;
- ``$FLOWKIT_TEST_LOG``: the step names, as in flows.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

import flows
from flows import log_effect, log_step

from flowkit import Flow, FlowState, Interrupted, listen, or_, router, start
from flowkit.exceptions import FlowkitError

#: laps of :class:`Laps` per run
LAPS = int(os.environ.get("FLOWKIT_ATTACK_LAPS", "12"))


class Trail(FlowState):
    trail: list[int] = []


class Laps(Flow[Trail], name="attack-laps"):
    """A router loop of LAPS instant laps: each lap logs ``<run id> lap<n> <pid>`` (n is
    the lap it is about to commit) and appends n. The process spends most of its time
    committing checkpoints, so a SIGKILL at a random moment lands mostly inside a commit."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_method_calls=100_000, **kwargs)

    @start()
    def begin(self) -> None:
        log_effect(f"{self.state.id} begin {os.getpid()}")

    @router(or_(begin, "again"))
    def lap(self) -> str:
        n = len(self.state.trail) + 1
        log_effect(f"{self.state.id} lap{n} {os.getpid()}")
        time.sleep(float(os.environ.get("FLOWKIT_ATTACK_LAP_SECONDS", "0")))
        self.state.trail.append(n)
        return "done" if n >= LAPS else "again"

    @listen("done")
    def finish(self) -> list[int]:
        log_effect(f"{self.state.id} finish {os.getpid()}")
        return self.state.trail


class Legs(FlowState):
    legs: list[str] = []


class StaleOwner(Flow[Legs], name="stale-owner"):
    """a -> b -> c. ``b`` logs its start, sleeps ``$FLOWKIT_TEST_LEG_SECONDS``, then raises
    if ``$FLOWKIT_ATTACK_B`` is ``raise``, or interrupts if it is ``interrupt``."""

    @start()
    def a(self) -> None:
        log_step("a")
        self.state.legs.append("a")

    @listen(a)
    def b(self) -> None:
        log_step("b")
        time.sleep(float(os.environ.get("FLOWKIT_TEST_LEG_SECONDS", "0")))
        mode = os.environ.get("FLOWKIT_ATTACK_B", "")
        if mode == "raise":
            raise RuntimeError("stale owner's b failed")
        if mode == "interrupt":
            self.interrupt({"from": os.getpid()})
        self.state.legs.append("b")

    @listen(b)
    def c(self) -> list[str]:
        log_step("c")
        self.state.legs.append("c")
        return self.state.legs


class Heavy(FlowState):
    big: str = ""
    legs: list[str] = []


class Bulky(Flow[Heavy], name="bulky"):
    """load (sets a 5 KB field, stored as a blob) -> settle -> close. ``halt_at`` names a
    method that raises before changing anything, to leave the run half-finished."""

    halt_at: ClassVar[str | None] = None

    def _leg(self, leg: str) -> None:
        if self.halt_at == leg:
            raise RuntimeError(f"halted at {leg}")
        log_step(leg)
        self.state.legs.append(leg)

    @start()
    def load(self) -> None:
        self._leg("load")
        self.state.big = "b" * 5000

    @listen(load)
    def settle(self) -> None:
        self._leg("settle")

    @listen(settle)
    def close(self) -> list[str]:
        self._leg("close")
        return self.state.legs


FLOWS = {"Relay": flows.Relay, "Laps": Laps, "StaleOwner": StaleOwner, "Approval": flows.Approval}


def _slow(cls: type[Any]) -> type[Any]:
    """A subclass of a real backend whose lease renewals sleep
    ``$FLOWKIT_ATTACK_SLOW_RENEW`` seconds before the real renewal runs (slow storage:
    the lease keeper falls behind and the lease expires while the owner executes), and
    whose claims (and kickoff's first write) return ``$FLOWKIT_ATTACK_SLOW_CLAIM``
    seconds after the real transaction committed (a slow answer: the lease may expire
    before the claimant sees it)."""

    def pause() -> float:
        return float(os.environ.get("FLOWKIT_ATTACK_SLOW_RENEW", "0"))

    def claim_pause() -> float:
        return float(os.environ.get("FLOWKIT_ATTACK_SLOW_CLAIM", "0"))

    class Slow(cls):  # type: ignore[misc,valid-type]
        def claim_run(self, run_id: str, owner: str, ttl: float) -> Any:
            claimed = super().claim_run(run_id, owner, ttl)
            time.sleep(claim_pause())
            return claimed

        async def aclaim_run(self, run_id: str, owner: str, ttl: float) -> Any:
            claimed = await super().aclaim_run(run_id, owner, ttl)
            await asyncio.sleep(claim_pause())
            return claimed

        async def abegin_run(self, run_id: str, flow_name: str, **kwargs: Any) -> Any:
            begun = await super().abegin_run(run_id, flow_name, **kwargs)
            await asyncio.sleep(claim_pause())
            return begun

        def renew_lease(self, run_id: str, owner: str, ttl: float) -> None:
            time.sleep(pause())
            super().renew_lease(run_id, owner, ttl)

        async def arenew_lease(self, run_id: str, owner: str, ttl: float) -> None:
            await asyncio.sleep(pause())
            await super().arenew_lease(run_id, owner, ttl)

    return Slow


def backend(spec: str) -> Any:
    """flows.backend(), plus ``slow-sqlite:PATH`` and ``slow-postgres`` (see _slow)."""
    import flowkit.persistence as fp

    if spec.startswith("slow-sqlite:"):
        return _slow(fp.SQLiteFlowPersistence)(spec.partition(":")[2])
    if spec == "slow-postgres":
        return _slow(fp.SQLAlchemyFlowPersistence)(flows.PG_URL)
    return flows.backend(spec)


def main() -> None:
    spec, flow_name, action, run_id = sys.argv[1:5]
    rest = sys.argv[5:]
    flow_cls = FLOWS[flow_name]
    persistence = backend(spec)
    ttl = float(os.environ.get("FLOWKIT_TEST_TTL", "30"))
    ready = os.environ.get("FLOWKIT_ATTACK_READY")
    go = os.environ.get("FLOWKIT_ATTACK_GO")
    if ready and go:  # start racing at the same moment as the other processes
        Path(ready).write_text("ready")
        while not Path(go).exists():
            time.sleep(0.005)
    try:
        flow = flow_cls(persistence=persistence, lease_ttl=ttl)
        if action == "kickoff":
            result = flow.kickoff(inputs={"id": run_id})
        elif action == "resume":
            result = flow.resume(run_id)
        elif action == "resume-value":
            result = flow.resume(run_id, json.loads(rest[0]))
        else:
            raise SystemExit(f"unknown action {action}")
    except FlowkitError as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
        return
    finally:
        persistence.close()
    if isinstance(result, Interrupted):
        shown = {"payload": result.payload, "method": result.method_name}
        print(json.dumps({"interrupted": shown}))
    else:
        print(json.dumps({"result": result}))


if __name__ == "__main__":
    main()
