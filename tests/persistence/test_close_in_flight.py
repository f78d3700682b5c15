"""close() while another thread's operation is running on a server database (PostgreSQL,
MariaDB): the operation is allowed to finish (up to ``CLOSE_GRACE`` seconds), and one
still running after that fails with a PersistenceError naming it, never with an error of
flowkit's internal threads. The operation is held up by a row lock another session
takes on the run, so it is in flight for as long as the test wants."""

from __future__ import annotations

import asyncio
import functools
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from flowkit.exceptions import PersistenceError
from flowkit.persistence import SQLAlchemyFlowPersistence, _rules


@asynccontextmanager
async def _postgres_row_lock(
    connect: Callable[[], Awaitable[Any]], run_id: str
) -> AsyncIterator[Callable[[], Any]]:
    blocker = await connect()
    transaction = blocker.transaction()
    await transaction.start()
    await blocker.execute("SELECT 1 FROM flowkit_runs WHERE run_id = $1 FOR UPDATE", run_id)

    async def waiting() -> bool:
        return bool(
            await blocker.fetchval(
                "SELECT COUNT(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                "WHERE NOT l.granted AND a.datname = current_database()"
            )
        )

    try:
        yield waiting
    finally:
        await transaction.rollback()
        await blocker.close()


@asynccontextmanager
async def _mysql_row_lock(
    connect: Callable[[], Awaitable[Any]], run_id: str
) -> AsyncIterator[Callable[[], Any]]:
    blocker = await connect()
    cursor = blocker.cursor()
    await cursor.execute("BEGIN")
    await cursor.execute("SELECT 1 FROM flowkit_runs WHERE run_id = %s FOR UPDATE", (run_id,))
    await cursor.fetchall()

    async def waiting() -> bool:
        # InnoDB refreshes this table only when it was last read over 0.1 s ago.
        await asyncio.sleep(0.15)
        probe = blocker.cursor()
        await probe.execute(
            "SELECT COUNT(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'"
        )
        (count,) = await probe.fetchone()
        return bool(count)

    try:
        yield waiting
    finally:
        await cursor.execute("ROLLBACK")
        blocker.close()


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def server(request: pytest.FixtureRequest) -> tuple[str, Any]:
    """The server's URL, and the row lock that holds an operation up there (taken on
    another connection, opened by the conftest's ``<server>_connect``)."""
    name = request.param
    connect = request.getfixturevalue(f"{name}_connect")
    row_lock = {"postgres": _postgres_row_lock, "mysql": _mysql_row_lock}[name]
    return request.getfixturevalue(f"{name}_url"), functools.partial(row_lock, connect)


def _close_during_a_blocked_save(
    url: str, row_lock: Any, *, release_after: float
) -> tuple[Any, SQLAlchemyFlowPersistence, str]:
    """Start a blocking save on another thread, held by a row lock; close the backend
    while it waits; release the lock ``release_after`` seconds into the close. Returns
    what the save returned or raised."""
    persistence = SQLAlchemyFlowPersistence(url)
    run_id = f"close-{uuid.uuid4().hex}"
    persistence.create_run(run_id, "Close")
    outcome: list[Any] = []

    def save() -> None:
        try:
            outcome.append(
                persistence.save_checkpoint(run_id, "s1", {"id": run_id}, expected_seq=0)
            )
        except BaseException as exc:
            outcome.append(exc)

    async def scenario() -> None:
        async with row_lock(run_id) as waiting:
            saver = threading.Thread(target=save)
            saver.start()
            while not await waiting():
                await asyncio.sleep(0.02)
            closing = asyncio.ensure_future(asyncio.to_thread(persistence.close))
            await asyncio.sleep(release_after)
        await closing
        await asyncio.to_thread(saver.join, 30)

    asyncio.run(scenario())
    assert len(outcome) == 1, outcome
    return outcome[0], persistence, run_id


def test_close_lets_a_running_operation_finish(server: tuple[str, Any]) -> None:
    """An operation in flight when close() is called completes and is committed when it
    ends within the grace period."""
    url, row_lock = server
    result, _, run_id = _close_during_a_blocked_save(url, row_lock, release_after=0.5)
    assert not isinstance(result, BaseException), result
    assert result.seq == 1
    reader = SQLAlchemyFlowPersistence(url)
    try:
        latest = reader.load_checkpoint(run_id)
        assert latest is not None and latest.seq == 1
    finally:
        reader.close()


def test_close_cuts_off_an_operation_after_the_grace_period(
    server: tuple[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operation still running after ``CLOSE_GRACE`` is cut off: its caller gets a
    PersistenceError naming the operation and saying what to do, and nothing half-done
    is stored (the run has no checkpoint 1)."""
    monkeypatch.setattr(_rules, "CLOSE_GRACE", 0.3)
    url, row_lock = server
    result, _, run_id = _close_during_a_blocked_save(url, row_lock, release_after=1.5)
    assert isinstance(result, PersistenceError), repr(result)
    message = str(result)
    assert "save_checkpoint" in message and "closed" in message, message
    assert "resumes from its last committed checkpoint" in message, message
    reader = SQLAlchemyFlowPersistence(url)
    try:
        assert reader.load_checkpoint(run_id) is None
    finally:
        reader.close()
