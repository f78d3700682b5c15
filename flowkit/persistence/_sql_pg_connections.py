"""PostgreSQL: the engine's pooled connections, kept between operations and driven
through asyncpg's public API.

SQLAlchemy lends each connection (its pool sets the limits: ``pool_size``,
``max_overflow``, ``pool_timeout``, given in ``engine_kwargs``) and flowkit keeps the ones
it opened checked out between operations (at most ``pool_size + max_overflow``, see
:func:`keep_count`), in autocommit, so an operation costs its statements alone: no
checkout, no isolation reset, no per-statement layer, and no connection opened and closed
again for each operation beyond ``pool_size`` while many flows run at once.
Statements go to the asyncpg connection under it (``driver_connection``, public in
SQLAlchemy) with bound parameters (:func:`~._sql_drive.drive_asyncpg`); a transaction is
asyncpg's ``Connection.transaction()``. A connection that failed, or that an operation
left in a transaction (cancelled half way), is invalidated, never reused; after a
connection error the kept ones are given back to the pool too.

When every connection is in use and the pool's ``pool_timeout`` passes, the operation
fails with a :class:`~flowkit.exceptions.PersistenceError` that names the pool settings
to raise (``Database.acall``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


class HeldConnections:
    """Connections of ``engine``'s pool kept checked out (used on one event loop)."""

    def __init__(
        self,
        engine: AsyncEngine,
        connection_errors: tuple[type[BaseException], ...],
        *,
        keep: int,
    ) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        # How many are kept between operations at most (see keep_count).
        self.keep = keep
        self._closed = False  # close() ran: operations still running give theirs back
        self._idle: list[tuple[AsyncConnection, Any]] = []
        self._connection_errors = connection_errors

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """An asyncpg connection in autocommit, for one operation."""
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


def keep_count(engine: AsyncEngine, engine_kwargs: dict[str, Any]) -> int:
    """How many connections to keep: every one the pool may lend (``pool_size`` plus
    ``max_overflow``; only ``pool_size`` when the overflow is unbounded), 0 for a pool
    that keeps nothing (``NullPool``: the user asked for no kept connections)."""
    size = getattr(engine.sync_engine.pool, "size", None)
    if not callable(size):
        return 0
    overflow = engine_kwargs.get("max_overflow", 10)  # SQLAlchemy's default
    base = int(size())
    return base + int(overflow) if isinstance(overflow, int) and overflow >= 0 else base
