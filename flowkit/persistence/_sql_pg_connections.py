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
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


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
        self._connection_errors = connection_errors

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
        if self._idle:
            held = self._idle.pop()
        else:
            lent = await self._engine.connect()
            try:
                raw = await lent.get_raw_connection()
            except BaseException:
                await lent.close()
                raise
            held = (lent, raw.driver_connection)
        lent, driver = held
        try:
            yield driver
        except BaseException as exc:
            if self._reusable(driver, exc):
                await self._give_back(held)
            else:
                await self._discard(lent)
                if driver.is_closed() or isinstance(exc, self._connection_errors):
                    # The server may have ended every session (a restart, a failover):
                    # the kept ones are not trusted either (as SQLAlchemy's pool does).
                    await self._drop_idle()
            raise
        await self._give_back(held)

    def _reusable(self, driver: Any, exc: BaseException) -> bool:
        return (
            isinstance(exc, Exception)  # not cancelled half way
            and not isinstance(exc, self._connection_errors)
            and not driver.is_closed()
            and not driver.is_in_transaction()
        )

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
