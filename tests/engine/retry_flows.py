"""Flows for the retry tests, importable by the test subprocesses.

``python retry_flows.py SPEC kickoff|resume RUN_ID`` runs :class:`AlwaysTimesOut` in a
real process (SPEC: ``sqlite:PATH`` or ``postgres``). Every attempt of ``fetch`` appends
a line to ``$FLOWKIT_TEST_LOG``; ``$RETRY_DELAY`` (read when this module is imported)
is the backoff before the second attempt.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from flowkit import Flow, FlowState, Retry, listen, start

PG_URL = os.environ.get(
    "FLOWKIT_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
DELAY = float(os.environ.get("RETRY_DELAY", "0.01"))


def backend(spec: str) -> Any:
    import flowkit.persistence as fp

    kind, _, arg = spec.partition(":")
    if kind == "sqlite":
        return fp.SQLiteFlowPersistence(arg)
    if kind == "postgres":
        return fp.SQLAlchemyFlowPersistence(PG_URL)
    raise ValueError(spec)


def log_attempt(name: str) -> None:
    path = os.environ.get("FLOWKIT_TEST_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(name + "\n")
            fh.flush()
            os.fsync(fh.fileno())


class Fetched(FlowState):
    tries: int = 0
    notes: list[str] = []


class AlwaysTimesOut(Flow[Fetched]):
    """``fetch`` changes the state, then times out: three attempts, then the run fails."""

    @start()
    def begin(self) -> None:
        self.state.notes.append("begin")

    @listen(begin, retry=Retry(attempts=3, delay=DELAY, backoff=1, on=TimeoutError))
    def fetch(self) -> None:
        log_attempt("fetch")
        self.state.tries += 1
        self.state.notes.append("fetch")
        raise TimeoutError("the server did not answer")


def main() -> None:
    spec, action, run_id = sys.argv[1:4]
    store = backend(spec)
    try:
        flow = AlwaysTimesOut(persistence=store)
        if action == "kickoff":
            flow.kickoff(inputs={"id": run_id})
        else:
            flow.resume(run_id)
    finally:
        store.close()


if __name__ == "__main__":
    main()
