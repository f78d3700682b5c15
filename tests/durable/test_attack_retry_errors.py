"""Attack: exceptions that are hard to store, raised by a retried method: a ``__str__``
that raises, a 10-million-character message, a lone surrogate (``os.fsdecode`` of a
non-UTF-8 file name), a NUL character, non-ASCII text. Each failed attempt's checkpoint
and the failed run's error must be stored within the size caps, read back, and the run
must end ``failed`` with the method's own exception raised to the caller -- on SQLite,
PostgreSQL and MariaDB."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import mysql_up, postgres_up
from flows import MYSQL_URL, PG_URL

from flowkit import Flow, FlowState, Retry, start
from flowkit._retry import MESSAGE_LIMIT, TRACEBACK_LIMIT
from flowkit.persistence import FlowPersistence, SQLAlchemyFlowPersistence, SQLiteFlowPersistence


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


ERRORS = {
    "str-raises": lambda: UnprintableError(),
    "huge": lambda: ValueError("x" * 10_000_000),
    "surrogate": lambda: FileNotFoundError(2, "missing", os.fsdecode(b"/nowhere/\xff\xfe")),
    "nul": lambda: ValueError("before\x00after"),
    "non-ascii": lambda: ValueError("échec ✗ 失败 😀"),
}


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> FlowPersistence:
    up = {"postgres": postgres_up, "mysql": mysql_up}.get(request.param)
    if up is not None and not up():
        if os.environ.get("CI"):
            pytest.fail(f"{request.param} at 127.0.0.1 is down; CI must run these tests")
        pytest.skip(f"{request.param} at 127.0.0.1 is not reachable")
    if request.param == "sqlite":
        return SQLiteFlowPersistence(tmp_path / "f.db")
    return SQLAlchemyFlowPersistence({"postgres": PG_URL, "mysql": MYSQL_URL}[request.param])


@pytest.mark.parametrize("kind", sorted(ERRORS))
def test_hard_to_store_errors_are_stored_capped_and_raised(
    store: FlowPersistence, kind: str, run_id: str
) -> None:
    make = ERRORS[kind]

    class Raises(Flow[FlowState], name="attack-retry-errors"):
        @start(retry=Retry(3, delay=0))
        def only(self) -> None:
            raise make()

    try:
        with pytest.raises(type(make())) as caught:
            Raises(persistence=store).kickoff(inputs={"id": run_id})
        assert type(caught.value) is type(make())
        run = store.get_run(run_id)
        assert run is not None and run.status == "failed"
        error = run.info["error"]
        assert (error["method"], error["attempt"], error["attempts"]) == ("only", 3, 3), error
        assert error["type"] == type(make()).__name__
        assert len(error["message"]) <= MESSAGE_LIMIT
        assert len(error["traceback"]) <= TRACEBACK_LIMIT + 100  # plus the "cut" line
        retried = [c.meta["retry"] for c in store.history(run_id) if "retry" in c.meta]
        assert [r["attempt"] for r in retried] == [1, 2], retried
        for record in retried:
            assert len(record["error"]["message"]) <= MESSAGE_LIMIT
            assert len(record["error"]["traceback"]) <= TRACEBACK_LIMIT + 100
    finally:
        store.close()
