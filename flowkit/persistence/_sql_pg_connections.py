"""PostgreSQL: the engine's pooled connections, kept between operations and driven
through asyncpg's public API.

SQLAlchemy lends each connection (its pool sets the limits: ``pool_size``,
``max_overflow``, ``pool_timeout``, given in ``engine_kwargs``) and flowkit keeps the ones
it opened checked out between operations (at most ``pool_size + max_overflow``, see
:func:`keep_count`), in autocommit, so an operation costs its statements alone: no
checkout, no isolation reset, no per-statement layer, and no connection opened and closed
again for each operation beyond ``pool_size`` while many flows run at once.
Statements go to the asyncpg connection under it (``driver_connection``, public in
SQLAlchemy) with bound parameters (:func:`~._sql_database.drive_asyncpg`); a transaction is
asyncpg's ``Connection.transaction()``. A connection that failed, or that an operation
left in a transaction (cancelled half way), is invalidated, never reused; after a
connection error the kept ones are given back to the pool too.

Operations beyond ``pool_size + max_overflow`` wait here for a connection, in order (the
pool's own queue would never see a kept connection come back). When every connection is
in use and the pool's ``pool_timeout`` passes, the operation
fails with a :class:`~flowkit.exceptions.PersistenceError` that names the pool settings
to raise (``Database.acall``).

Those connections live on the database's portal loop, one thread hop away from every
caller. A sync caller (a ``Flow.kickoff()``, or a blocking call such as
``load_checkpoint``) runs on its thread's own reusable loop
(:class:`~flowkit._concurrency.ThreadLoop`) instead, on a connection that thread owns
(:class:`ThreadConnections`): opened on that loop, used only there, closed there when the
thread ends, at exit, or by ``close()`` of the database's last backend. At most
``pool_size`` threads own one (none for a ``NullPool``); the others take the portal's.
They are unpooled (a ``NullPool`` engine of their own), in autocommit, driven the same way.
A forked child never uses its parent's (it acquires a database of its own).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from flowkit._concurrency import ThreadLoop
from flowkit.persistence import _rules


class HeldConnections:
    """Connections of ``engine``'s pool kept checked out (used on one event loop)."""

    def __init__(
        self,
        engine: AsyncEngine,
        connection_errors: tuple[type[BaseException], ...],
        *,
        limit: int | None,
        keep: int,
        timeout: float,
    ) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        # At most ``limit`` operations hold a connection at once (None: no limit); the
        # others wait their turn here, in order, up to ``timeout`` seconds. Kept and busy
        # connections together never exceed ``limit``, so the pool itself never waits
        # (its waiters would never see a kept connection come back).
        self._limit = limit
        self._timeout = timeout
        self._busy = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        # How many are kept between operations at most (see pool_limits).
        self.keep = keep
        self._closed = False  # close() ran: operations still running give theirs back
        self._idle: list[tuple[AsyncConnection, Any]] = []
        self.connection_errors = connection_errors

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """An asyncpg connection in autocommit, for one operation."""
        await self._take_turn()
        try:
            async with self._lent() as driver:
                yield driver
        finally:
            self._end_turn()

    async def _take_turn(self) -> None:
        if self._limit is None or (self._busy < self._limit and not self._waiters):
            self._busy += 1
            return
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[None] = loop.create_future()
        self._waiters.append(turn)
        timer = loop.call_later(self._timeout, self._time_out, turn)
        try:
            await turn  # _end_turn hands its slot over (``_busy`` unchanged)
        except BaseException:
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                self._end_turn()  # handed over, but this operation was cancelled
            raise
        finally:
            timer.cancel()

    def _time_out(self, turn: asyncio.Future[None]) -> None:
        if not turn.done():
            turn.set_exception(
                PoolTimeout(
                    f"all {self._limit} connections (pool_size + max_overflow) were in "
                    f"use for {self._timeout:g} s (pool_timeout)"
                )
            )

    def _end_turn(self) -> None:
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._busy -= 1

    @contextlib.asynccontextmanager
    async def _lent(self) -> AsyncIterator[Any]:
        held = self._idle.pop() if self._idle else await _open(self._engine)
        lent, driver = held
        try:
            yield driver
        except BaseException as exc:
            if reusable(driver, exc, self.connection_errors):
                await self._give_back(held)
            else:
                await self._discard(lent)
                if driver.is_closed() or isinstance(exc, self.connection_errors):
                    # The server may have ended every session (a restart, a failover):
                    # the kept ones are not trusted either (as SQLAlchemy's pool does).
                    await self._drop_idle()
            raise
        await self._give_back(held)

    async def _give_back(self, held: tuple[AsyncConnection, Any]) -> None:
        if not self._closed and len(self._idle) < self.keep and not held[1].is_closed():
            self._idle.append(held)
        else:  # back to the pool, which closes what it does not keep
            await held[0].close()

    async def _discard(self, lent: AsyncConnection) -> None:
        with contextlib.suppress(Exception):
            await lent.invalidate()
        with contextlib.suppress(Exception):
            await lent.close()

    async def close(self) -> None:
        """Give every kept connection back to the pool (before the engine is disposed);
        operations still running give theirs back when they end."""
        self._closed = True
        await self._drop_idle()

    async def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for lent, _ in idle:
            with contextlib.suppress(Exception):
                await lent.close()


def pool_limits(engine: AsyncEngine, engine_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``HeldConnections``' limits from the pool's settings: at most ``pool_size +
    max_overflow`` connections at once (no limit when the overflow is unbounded or the
    pool is a ``NullPool``), all of them kept (``pool_size`` when unbounded, none for a
    ``NullPool``: the user asked for no kept connections), waiting ``pool_timeout``."""
    timeout = float(engine_kwargs.get("pool_timeout", 30.0))  # SQLAlchemy's default
    size = getattr(engine.sync_engine.pool, "size", None)
    if not callable(size):
        return {"limit": None, "keep": 0, "timeout": timeout}
    overflow = engine_kwargs.get("max_overflow", 10)  # SQLAlchemy's default
    base = int(size())
    if isinstance(overflow, int) and overflow >= 0:
        return {"limit": base + overflow, "keep": base + overflow, "timeout": timeout}
    return {"limit": None, "keep": base, "timeout": timeout}


def reusable(
    driver: Any, exc: BaseException, connection_errors: tuple[type[BaseException], ...]
) -> bool:
    """Whether an asyncpg connection an operation failed on may serve the next one: the
    failure was an error of the operation (not a cancellation half way, not a
    connection error), and the connection is open and out of any transaction."""
    return (
        isinstance(exc, Exception)
        and not isinstance(exc, connection_errors)
        and not driver.is_closed()
        and not driver.is_in_transaction()
    )


class ClosedUnder(Exception):
    """The operation was still running on a thread's connection when ``close()`` had
    waited ``CLOSE_GRACE`` seconds for it: the connection was closed under it."""


async def _open(engine: AsyncEngine) -> tuple[AsyncConnection, Any]:
    """A connection of ``engine`` and the asyncpg connection under it."""
    lent = await engine.connect()
    try:
        raw = await lent.get_raw_connection()
    except BaseException:
        await lent.close()
        raise
    return lent, raw.driver_connection


class ThreadConnection:
    """One thread's connection: opened, used and closed on that thread's loop only."""

    def __init__(self, home: ThreadConnections, owner: ThreadLoop) -> None:
        self._home = home
        self.owner = weakref.ref(owner)  # (no cycle: the thread's loop ends when it does)
        # Its own engine: SQLAlchemy's asyncio engine guards its first connect with an
        # asyncio lock, which must never be shared by two threads' loops.
        self._engine: AsyncEngine | None = None
        self._held: tuple[AsyncConnection, Any] | None = None
        self.busy = False
        self.closed = False
        self._cut = False  # closed under a running operation (see aclose)

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[Any]:
        """The asyncpg connection (in autocommit), for the operation that claimed it;
        opened on first use. A connection that failed or was left in a transaction is
        closed, and the next operation opens another."""
        if self._held is None:
            if self._engine is None:
                self._engine = self._home.engine()
            self._held = await _open(self._engine)
        driver = self._held[1]
        try:
            yield driver
        except BaseException as exc:
            if not reusable(driver, exc, self._home.connection_errors):
                await self._drop(broken=True)
            if self._cut:
                raise ClosedUnder from exc
            raise

    def release(self) -> None:
        """The operation that claimed it (see ThreadConnections.claim) is over."""
        self.busy = False

    async def _drop(self, *, broken: bool) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        if broken:
            with contextlib.suppress(Exception):
                await held[0].invalidate()
        with contextlib.suppress(Exception):
            await held[0].close()

    async def aclose(self) -> None:
        """Close it on its loop, after the operation running on it (if any) ends; one
        still running after ``CLOSE_GRACE`` seconds is cut off (:class:`ClosedUnder`)."""
        self.closed = True
        deadline = asyncio.get_running_loop().time() + _rules.CLOSE_GRACE
        while self.busy and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        self._cut = self.busy
        await self._drop(broken=self.busy)
        engine, self._engine = self._engine, None
        if engine is not None:
            with contextlib.suppress(Exception):
                await engine.dispose()
        self._home.forget(self)


class ThreadConnections:
    """The connections threads own (see the module docstring): at most ``limit``."""

    def __init__(
        self,
        make_engine: Callable[[], AsyncEngine],
        connection_errors: tuple[type[BaseException], ...],
        *,
        limit: int,
    ) -> None:
        self._make_engine = make_engine
        self.connection_errors = connection_errors
        self._limit = limit
        self._lock = threading.Lock()
        self._owned: dict[int, ThreadConnection] = {}
        self._mine = threading.local()  # this thread's ThreadConnection
        self._pid = os.getpid()
        self.closed = False

    def claim(self, owner: ThreadLoop) -> ThreadConnection | None:
        """The calling thread's connection (``owner`` is its loop, running), for one
        operation until its ``release()``; None when the thread gets none, or while
        another operation of the same loop has it (a checkpoint save and a lease renewal
        at once): the operation then takes the portal's path."""
        mine: ThreadConnection | None = getattr(self._mine, "connection", None)
        if mine is None or mine.closed or mine.owner() is not owner:
            with self._lock:
                if self.closed or self._pid != os.getpid() or len(self._owned) >= self._limit:
                    return None
                mine = ThreadConnection(self, owner)
                self._owned[id(mine)] = mine
            owner.on_end(id(mine), mine.aclose)
            self._mine.connection = mine
        elif mine.busy:
            return None
        mine.busy = True
        return mine

    def engine(self) -> AsyncEngine:
        """A new unpooled engine (``NullPool``) in autocommit, for one thread."""
        return self._make_engine().execution_options(isolation_level="AUTOCOMMIT")

    def forget(self, connection: ThreadConnection) -> None:
        with self._lock:
            self._owned.pop(id(connection), None)
        owner = connection.owner()
        if owner is not None:
            owner.forget(id(connection))

    def close(self) -> None:
        """Close every thread's connection, each on its own loop (see ThreadLoop.call),
        after the operation running on it; later claims get none. A forked child leaves
        its parent's alone."""
        with self._lock:
            self.closed = True
            owned = list(self._owned.values())
        if self._pid != os.getpid():
            return
        for connection in owned:
            owner = connection.owner()
            if owner is not None:
                owner.call(connection.aclose, _rules.CLOSE_GRACE + 1.0)
