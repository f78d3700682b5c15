"""Running one operation (a statement generator of ``_sql_ops``) on a connection.

SQLite: the whole operation is one function on aiosqlite's worker thread, one transaction
on its sqlite3 connection, queued from whichever loop the caller is on. Other databases:
each statement is awaited on an SQLAlchemy async connection whose transaction the caller
owns.
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import TextClause

from flowkit.persistence._sql_ops import Op

T = TypeVar("T")

_sql_text: Callable[[str], TextClause] = functools.lru_cache(maxsize=512)(text)


def _drive_sqlite(driver: Any, op: Op[T], write: bool) -> T:
    """Run ``op`` in one transaction on the sqlite3 connection under the aiosqlite
    ``driver``; called in aiosqlite's worker thread."""
    connection: sqlite3.Connection = driver._conn
    if connection.in_transaction:
        connection.rollback()
    # IMMEDIATE takes the write lock up front (waiting up to the busy timeout), so a
    # transaction never fails half way because another process started writing.
    connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        stmt = next(op)
        while True:
            if stmt.many:
                connection.executemany(stmt.sql, stmt.params)
                rows: list[tuple[Any, ...]] = []
            else:
                rows = connection.execute(stmt.sql, stmt.params).fetchall()
            stmt = op.send(rows)
    except StopIteration as done:
        connection.commit()
        return done.value  # type: ignore[no-any-return]
    except BaseException:
        connection.rollback()
        raise


class _Reply:
    """Stands in for the asyncio future aiosqlite's worker resolves.

    The worker calls ``reply.get_loop().call_soon_threadsafe(set_result, reply, value)``;
    this forwards to a future on the caller's loop, and does nothing if that loop has
    closed meanwhile (a caller cancelled at shutdown), where the plain future would make
    ``call_soon_threadsafe`` raise in the worker and kill aiosqlite's thread.
    """

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self.future = future

    def get_loop(self) -> _Reply:
        return self

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        # RuntimeError: the caller's loop is closed, nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self.future.get_loop().call_soon_threadsafe(callback, *args)

    def done(self) -> bool:
        return self.future.done()

    def set_result(self, result: Any) -> None:
        self.future.set_result(result)

    def set_exception(self, exc: BaseException) -> None:
        self.future.set_exception(exc)


async def drive_async(connection: AsyncConnection, op: Op[T]) -> T:
    """Run ``op`` on an SQLAlchemy connection; the caller owns the transaction."""
    try:
        stmt = next(op)
        while True:
            if stmt.many:
                await connection.execute(_sql_text(stmt.sql), list(stmt.params))  # type: ignore[arg-type]
                rows: list[tuple[Any, ...]] = []
            else:
                result = await connection.execute(_sql_text(stmt.sql), stmt.params)
                rows = [tuple(row) for row in result.fetchall()] if result.returns_rows else []
            stmt = op.send(rows)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def queue_sqlite(driver: Any, op: Op[T], write: bool) -> asyncio.Future[T]:
    """Put ``op`` (one whole transaction) on the aiosqlite worker's queue; the returned
    future belongs to the running loop. aiosqlite runs its queue in order, one item at a
    time, so operations from every thread and loop are serialised."""
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    driver._tx.put_nowait((_Reply(future), functools.partial(_drive_sqlite, driver, op, write)))
    return future


async def submit_sqlite(driver: Any, op: Op[T], write: bool) -> T:
    return await queue_sqlite(driver, op, write)


def put_sqlite_blocking(driver: Any, op: Op[T], write: bool) -> Callable[[], T]:
    """Put ``op`` on the aiosqlite worker's queue and return the function that waits for
    its result on the calling thread, not through an event loop (for a caller that may
    block, see ``flowkit._sync.may_block``). Queued now, so that a caller holding the lock
    that orders operations before a close can wait after releasing it. The queue is the
    same as the awaited path's, so operations stay in order with everyone else's."""
    done = _thread.allocate_lock()
    done.acquire()
    outcome: list[tuple[bool, Any]] = []

    def work() -> None:
        try:
            outcome.append((True, _drive_sqlite(driver, op, write)))
        except BaseException as exc:  # handed to the waiting thread, raised there
            outcome.append((False, exc))
        finally:
            done.release()

    def wait() -> T:
        done.acquire()  # interruptible (Ctrl-C); the operation then still completes
        ok, value = outcome[0]
        if ok:
            return value  # type: ignore[no-any-return]
        raise value

    # No future: aiosqlite then reports nothing to any loop; ``work`` reports itself.
    driver._tx.put_nowait((None, work))
    return wait
