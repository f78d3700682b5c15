"""Session liveness (PostgreSQL, MariaDB/MySQL): a lease owner is alive while its
database session is.

Every lease this process takes on PostgreSQL is backed by a session-level advisory lock
on a key derived from the owner id (:func:`liveness_key`), taken on one connection the
process keeps for that purpose (:class:`SessionLiveness`, one per database and process)
*before* the lease is written, and given back once the lease is released. When the
owner's process dies, or loses its connection, the server ends the session and releases
the lock. A claimant that finds a lease held by someone else asks, inside its claim
transaction, ``pg_try_advisory_xact_lock(key)``: if it gets the lock, no session holds
the owner's key any more, so the owner can no longer write and the lease is taken over
at once -- also when the owner ran on another machine. The transaction-level lock goes
away with the claim's commit.

MariaDB/MySQL do the same with named locks: the owner's session takes
``GET_LOCK(name, 0)`` (:func:`liveness_lock_name`), which the server releases when the
session ends, and a claimant asks ``IS_FREE_LOCK(name)`` inside its claim transaction,
which takes nothing (a named lock taken there would outlive the transaction on a pooled
connection). Named locks are server-wide, not per database; the names hash the owner
id, which is unique.

Why a key per owner rather than per run: a claimant that takes over an expired lease
from a live but stalled owner (SIGSTOP, a long GC pause) must be able to back its own
lease at once, while the stalled owner's session still holds its key. Keys of different
owners never conflict, so that is always possible.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

TRY_LOCK = "SELECT pg_try_advisory_lock(:key)"
UNLOCK = "SELECT pg_advisory_unlock(:key)"
# Asked by a claimant inside its transaction: true means no session holds the key.
TRY_XACT_LOCK = "SELECT pg_try_advisory_xact_lock(:key)"
PING = "SELECT 1"
#: seconds between checks that the liveness session is still there (see ``hold``)
PING_EVERY = 0.5


def liveness_key(owner: str) -> int:
    """The advisory-lock key (a signed 64-bit integer) that stands for ``owner``."""
    digest = hashlib.blake2b(owner.encode(), digest_size=8, person=b"flowkit-owner").digest()
    return int.from_bytes(digest, "big", signed=True)


def liveness_lock_name(owner: str) -> str:
    """The MariaDB/MySQL named lock that stands for ``owner`` (names are at most 64
    characters, so the owner id is hashed)."""
    digest = hashlib.blake2b(owner.encode(), digest_size=16, person=b"flowkit-owner")
    return "flowkit-owner-" + digest.hexdigest()


@dataclass(frozen=True, slots=True)
class LivenessSql:
    """How one dialect holds, gives back and tests an owner's liveness lock."""

    try_lock: str  # one row: true if this session now holds the owner's lock
    unlock: str
    holder_gone: str  # asked by a claimant: true if no session holds the lock
    key: Callable[[str], int | str]


LIVENESS_SQL = {
    "postgresql": LivenessSql(TRY_LOCK, UNLOCK, TRY_XACT_LOCK, liveness_key),
    "mysql": LivenessSql(
        "SELECT GET_LOCK(:key, 0)",
        "SELECT RELEASE_LOCK(:key)",
        "SELECT IS_FREE_LOCK(:key)",
        liveness_lock_name,
    ),
}


class SessionLiveness:
    """The advisory locks this process holds for its lease owners, on one connection.

    Used on the database's portal loop only. ``hold`` completes before a lease is
    committed, ``drop`` is called once it is given back; an owner's key stays locked
    while it holds at least one run through this database. Unlocking happens in the
    background (session advisory locks stack, so an unlock that runs after the same
    owner's next lock still leaves it held once).
    """

    def __init__(
        self, make_engine: Callable[[], AsyncEngine], dialect: str, *, asyncpg: bool = False
    ) -> None:
        self._make_engine = make_engine
        self._sql = LIVENESS_SQL[dialect]
        self._engine: AsyncEngine | None = None
        self._connection: AsyncConnection | None = None
        # PostgreSQL: the asyncpg connection under it, asked directly (one round trip,
        # no per-statement layer: a kickoff's lock is on its critical path).
        self._driver: Any = None
        self._asyncpg = asyncpg
        self._errors: tuple[type[BaseException], ...] = (DBAPIError,)
        self._lock = asyncio.Lock()
        # owner -> (whether this session got the owner's key, run ids held)
        self._held: dict[str, tuple[bool, set[str]]] = {}
        self._unlocking: set[asyncio.Task[None]] = set()
        self._checked = float("-inf")

    async def _connect(self) -> AsyncConnection:
        if self._connection is None:
            if self._engine is None:
                self._engine = self._make_engine()
            connection = await self._engine.connect()
            # No transaction is ever left open on it: the locks are session-level.
            self._connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            if self._asyncpg:
                import asyncpg  # type: ignore[import-untyped]

                raw = await self._connection.get_raw_connection()
                self._driver = raw.driver_connection
                self._errors = (
                    DBAPIError,
                    asyncpg.PostgresError,
                    asyncpg.InterfaceError,
                    asyncpg.InternalClientError,
                    OSError,
                )
        return self._connection

    async def _ask(self, connection: AsyncConnection, sql: str, key: int | str | None) -> Any:
        """The one value ``sql`` answers (``key`` bound as ``:key``)."""
        params = {} if key is None else {"key": key}
        if self._driver is not None:
            return await self._driver.fetchval(*_dollar(sql, key))
        return (await connection.execute(text(sql), params)).scalar()

    def _add(self, owner: str, run_id: str) -> bool | None:
        entry = self._held.get(owner)
        if entry is None:
            return None
        if run_id in entry[1]:
            return False
        entry[1].add(run_id)
        return True

    async def hold(self, owner: str, run_id: str) -> bool:
        """Back ``owner``'s lease on ``run_id`` with the owner's key; True if this call
        recorded it (so a failed lease write undoes exactly that).

        Also called for every renewal: the session can end while this process lives (a
        network blip on that one connection, an idle timeout, pg_terminate_backend), and
        with it every key it held, after which any claimant would take this process's
        live runs at once. At most every PING_EVERY seconds the session is checked; a
        lost one is replaced and each owner's key is taken again at its next renewal."""
        if time.monotonic() - self._checked >= PING_EVERY:
            await self._check()
        added = self._add(owner, run_id)
        if added is not None:
            return added
        async with self._lock:
            added = self._add(owner, run_id)  # another hold of this owner got here first
            if added is not None:
                return added
            try:
                connection = await self._connect()
                got = bool(await self._ask(connection, self._sql.try_lock, self._sql.key(owner)))
            except self._errors:
                # The session is gone, and with it every lock it held.
                await self._forget_connection()
                raise
            # ``got`` is False only if another session holds the same key (the same
            # owner id used by two processes): the owner then still looks alive.
            self._held[owner] = (got, {run_id})
            return True

    async def _check(self) -> None:
        async with self._lock:
            if time.monotonic() - self._checked < PING_EVERY:
                return
            if self._connection is not None:
                try:
                    await self._ask(self._connection, PING, None)
                except Exception as exc:
                    if not isinstance(exc, (SQLAlchemyError, *self._errors)):
                        raise
                    await self._forget_connection()
            self._checked = time.monotonic()

    def drop(self, owner: str, run_id: str) -> None:
        """``owner`` gave ``run_id``'s lease back; unlock its key if that was its last."""
        entry = self._held.get(owner)
        if entry is None or run_id not in entry[1]:
            return
        entry[1].discard(run_id)
        if entry[1]:
            return
        del self._held[owner]
        if entry[0]:
            task = asyncio.ensure_future(self._unlock(self._sql.key(owner)))
            self._unlocking.add(task)
            task.add_done_callback(self._unlocking.discard)

    async def _unlock(self, key: int | str) -> None:
        async with self._lock:
            if self._connection is None:
                return  # the session ended: nothing is held any more
            try:
                await self._ask(self._connection, self._sql.unlock, key)
            except self._errors:
                await self._forget_connection()

    async def _forget_connection(self) -> None:
        connection, self._connection = self._connection, None
        self._driver = None
        self._held.clear()
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    async def close(self) -> None:
        """Close the connection: the server releases every lock it held."""
        if self._unlocking:
            await asyncio.gather(*self._unlocking, return_exceptions=True)
        async with self._lock:
            await self._forget_connection()
            engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()


def _dollar(sql: str, key: int | str | None) -> tuple[Any, ...]:
    """asyncpg's form of a liveness query: ``:key`` as ``$1``."""
    return (sql,) if key is None else (sql.replace(":key", "$1"), key)
