"""Subprocess entry point for the retry attack tests (tests/durable/test_attack_retries.py).

python tests/durable/retry_proc.py BACKEND ACTION RUN_ID
ACTION: kickoff | resume | recover

Runs :class:`Doomed` and prints one JSON line: ``{"result": ...}``, ``{"failed": type,
"message": ...}`` when a method's exception ended the run, ``{"error": type, "message":
...}`` for a FlowkitError, or (recover) ``{"outcomes": {run id: outcome}}``.

The flow logs every side effect as an fsync'd line ``<run id> <what> <pid>`` in
``$FLOWKIT_TEST_EFFECTS`` (see flows.log_effect), so a test can count what processes
really did even when they were SIGKILLed a moment later. Environment:

- ``FLOWKIT_ATTACK_LAPS``: laps of the ``lap`` branch;
- ``FLOWKIT_ATTACK_LAP_SECONDS``: how long each lap sleeps;
- ``FLOWKIT_RETRY_ATTEMPTS`` / ``FLOWKIT_RETRY_DELAY``: the policy of ``doomed`` (read at
  import: a policy may change between processes, as the docs allow);
- ``FLOWKIT_DOOMED``: ``pass`` makes ``doomed`` succeed, anything else makes it raise;
- ``FLOWKIT_TEST_TTL``: the lease ttl (default 30 s).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from flows import backend, log_effect

from flowkit import Flow, FlowState, Retry, and_, listen, or_, router, start
from flowkit.exceptions import FlowkitError

LAPS = int(os.environ.get("FLOWKIT_ATTACK_LAPS", "30"))
ATTEMPTS = int(os.environ.get("FLOWKIT_RETRY_ATTEMPTS", "5"))
DELAY = float(os.environ.get("FLOWKIT_RETRY_DELAY", "0.05"))


class DoomedError(Exception):
    """What ``doomed`` raises (retried by its policy)."""


class Split(FlowState):
    trail: list[int] = []
    doomed: str = ""


class Doomed(Flow[Split], name="attack-doomed"):
    """begin -> (a router loop of LAPS laps) and, in parallel, ``doomed`` (retried up to
    ATTEMPTS times, constant DELAY); ``finish`` waits for both. While ``doomed`` waits out
    a backoff, the loop commits a checkpoint per lap: a kill at a random moment lands in
    a lap, a lap's commit, a failed attempt's checkpoint or a backoff."""

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

    @listen(begin, retry=Retry(ATTEMPTS, delay=DELAY, backoff=1, on=DoomedError))
    def doomed(self) -> str:
        self.state.doomed = "changed by a failed attempt"  # must never be stored
        if os.environ.get("FLOWKIT_DOOMED") != "pass":
            log_effect(f"{self.state.id} doomed-fail {os.getpid()}")
            raise DoomedError(f"doomed fails in {os.getpid()} ✗ é")
        log_effect(f"{self.state.id} doomed-ok {os.getpid()}")
        self.state.doomed = "ok"
        return "ok"

    @listen(and_("done", doomed))
    def finish(self) -> dict[str, Any]:
        log_effect(f"{self.state.id} finish {os.getpid()}")
        return {"trail": self.state.trail, "doomed": self.state.doomed}


def main() -> None:
    spec, action, run_id = sys.argv[1:4]
    persistence = backend(spec)
    ready = os.environ.get("FLOWKIT_ATTACK_READY")
    go = os.environ.get("FLOWKIT_ATTACK_GO")
    if ready and go:  # start racing at the same moment as the other processes
        Path(ready).write_text("ready")
        while not Path(go).exists():
            time.sleep(0.005)
    try:
        if action == "recover":
            report = Doomed.recover(persistence=persistence)
            print(json.dumps({"outcomes": {r.run_id: r.outcome for r in report.runs}}))
            return
        ttl = float(os.environ.get("FLOWKIT_TEST_TTL", "30"))
        flow = Doomed(persistence=persistence, lease_ttl=ttl)
        if action == "kickoff":
            result = flow.kickoff(inputs={"id": run_id})
        elif action == "resume":
            result = flow.resume(run_id)
        else:
            raise SystemExit(f"unknown action {action}")
    except DoomedError as exc:
        print(json.dumps({"failed": type(exc).__name__, "message": str(exc)}))
        return
    except FlowkitError as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
        return
    finally:
        persistence.close()
    print(json.dumps({"result": result}))


if __name__ == "__main__":
    main()
