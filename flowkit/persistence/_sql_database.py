"""The database behind a URL: one :class:`Database` per URL and process, shared by backends.

A :class:`Database` is an engine that lives on its own portal thread (asyncpg connections
belong to the loop that made them, and callers come from many loops and threads).
Operations are the statement generators of ``_sql_ops``. SQLite runs a whole operation
inside aiosqlite's thread, one hop per operation: async callers queue it there straight
from their own loop (aiosqlite resolves a future on the loop that created it); sync
callers, and a synchronous kickoff with nothing beside it on its loop, queue it and wait
on their own thread. The portal opens the connection and checks the schema with a read;
only a write creates or upgrades it, so readers never wait for writers. Other
databases await each statement on a pooled connection, on the portal loop. Backends
acquire the shared :class:`Database` for their URL and release it on close.

MariaDB/MySQL connections run at READ COMMITTED (each statement sees what was committed
before it, as on PostgreSQL; the writes lock the run row first, see ``_sql_mysql``) and
in strict mode (a value too long for its column is an error, never cut short), unless
``engine_kwargs`` name another ``isolation_level``.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import itertools
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from flowkit._sync import may_block
from flowkit.exceptions import PersistenceError
from flowkit.persistence import _sql_ops
from flowkit.persistence._portal import Portal
from flowkit.persistence._schema import SCHEMA_VERSION
from flowkit.persistence._sql_drive import (
    drive_async,
    put_sqlite_blocking,
    queue_sqlite,
    submit_sqlite,
)
from flowkit.persistence._sql_liveness import SessionLiveness
from flowkit.persistence._sql_ops import Op
from flowkit.persistence._sql_url import dialect_of, mysql_session, sqlite_file, sqlite_pragmas

T = TypeVar("T")

# (owner, run_id) of a lease an operation takes or gives back (PostgreSQL liveness).
LeaseRef = tuple[str, str]


class Database:
    """An engine on its portal thread, shared by every backend using the same URL."""

    _names = itertools.count(1)

    def __init__(self, url: URL, engine_kwargs: dict[str, Any]) -> None:
        self.url = url
        self.dialect = dialect_of(url)
        self.engine_kwargs = engine_kwargs
        self.portal = Portal(f"flowkit-db-{next(self._names)}")
        self.users = 0
        self.engine: AsyncEngine | None = None
        self._ready: asyncio.Lock | None = None
        # True once the schema is known to be current (checked, or created by a write).
        self._schema_ready = False
        self._sqlite: AsyncConnection | None = None
        self._sqlite_driver: Any = None  # the aiosqlite.Connection under self._sqlite
        # SQLite: the driver async callers submit to directly, set once the schema is
        # ready, cleared (under _direct_lock) before the connection closes; with the pid
        # that opened it (a forked child must not use its parent's worker thread).
        self._direct: tuple[Any, int] | None = None
        self._direct_lock = threading.Lock()
        # (run_id) -> (seq, blob hashes) of the last checkpoint this process wrote.
        self.stored_blobs: OrderedDict[str, tuple[int, frozenset[str]]] = OrderedDict()
        # PostgreSQL, MariaDB/MySQL: the session whose locks say our lease owners are alive.
        self.liveness: SessionLiveness | None = None

    def describe(self) -> str:
        return self.url.render_as_string(hide_password=True)

    # -- on the portal loop --------------------------------------------------------

    async def _start(self, *, write: bool) -> bool:
        """Open the database and make sure its schema serves the operation.

        The schema is checked with a read; it is created or upgraded only for a write, so
        reading never takes the write lock (and never waits for another writer). Returns
        False when a read finds no flowkit database: a SQLite file that does not exist
        (not created by a read) or a database without flowkit's tables.
        """
        if self._schema_ready:
            return True
        if self._ready is None:
            self._ready = asyncio.Lock()
        async with self._ready:
            if self._schema_ready:
                return True
            if self.engine is None:
                if not write and self._file_missing():
                    return False
                await self._open()
            found = await self._run_schema(_sql_ops.read_schema_version(self.dialect), False)
            if found != SCHEMA_VERSION:
                if not write:
                    # Older versions differ only in indexes (see MIGRATIONS), so they read
                    # the same; the first write upgrades them.
                    return found > 0
                await self._run_schema(_sql_ops.init_schema(self.dialect), True)
            self._schema_ready = True
            if self.dialect == "sqlite":
                with self._direct_lock:
                    self._direct = (self._sqlite_driver, os.getpid())
            return True

    def _file_missing(self) -> bool:
        """True for a SQLite file that does not exist but could be created; a path that
        cannot (under a regular file) is opened anyway, so the read reports why."""
        path = sqlite_file(self.url) if self.dialect == "sqlite" else None
        if path is None or path.expanduser().exists():
            return False
        existing = next((p for p in path.expanduser().absolute().parents if p.exists()), None)
        return existing is not None and existing.is_dir()

    async def _open(self) -> None:
        engine = self._create_engine()
        if self.dialect == "sqlite":
            try:
                self._sqlite = await engine.connect()
                raw = await self._sqlite.get_raw_connection()
                self._sqlite_driver = raw.driver_connection
            except BaseException:
                await self._close_engine(engine)
                raise
        self.engine = engine
        if self.dialect in ("postgresql", "mysql"):
            self.liveness = SessionLiveness(self._create_liveness_engine, self.dialect)

    async def _run_schema(self, op: Op[T], write: bool) -> T:
        if self.dialect == "sqlite":
            return await self._run_sqlite(op, write=write)
        assert self.engine is not None
        async with self.engine.begin() as connection:
            return await drive_async(connection, op)

    def _create_engine(self) -> AsyncEngine:
        kwargs = dict(self.engine_kwargs)
        if self.dialect == "sqlite":
            path = sqlite_file(self.url)
            if path is not None:
                path.expanduser().parent.mkdir(parents=True, exist_ok=True)
        if self.dialect == "mysql":
            kwargs.setdefault("isolation_level", "READ COMMITTED")
        engine = create_async_engine(self.url, **kwargs)
        if self.dialect == "mysql":
            event.listen(engine.sync_engine, "connect", mysql_session)
        if self.dialect == "sqlite":
            in_memory = sqlite_file(self.url) is None
            event.listen(
                engine.sync_engine, "connect", functools.partial(sqlite_pragmas, in_memory)
            )
        return engine

    def _create_liveness_engine(self) -> AsyncEngine:
        # Its own unpooled connection: the liveness session does not take a slot of the
        # pool the operations use, and closing it really ends the session.
        connect_args = self.engine_kwargs.get("connect_args", {})
        return create_async_engine(self.url, poolclass=NullPool, connect_args=connect_args)

    async def _run_sqlite(self, op: Op[T], *, write: bool) -> T:
        driver = self._sqlite_driver
        if getattr(driver, "_tx", None) is None:  # pragma: no cover - other aiosqlite
            raise PersistenceError(
                "This aiosqlite version lacks the Connection._tx queue, which flowkit uses "
                "to run a transaction in one step. Install a supported aiosqlite (>= 0.20)."
            )
        return await submit_sqlite(driver, op, write)

    def _put_direct_blocking(self, op: Op[T], write: bool) -> Callable[[], T] | None:
        """Queue ``op`` on aiosqlite's worker for a caller that waits on its own thread,
        or None while the database is not started (or was opened by another process)."""
        with self._direct_lock:
            direct = self._direct
            if direct is None or direct[1] != os.getpid():
                return None
            return put_sqlite_blocking(direct[0], op, write)

    def _submit_direct(self, op: Op[T], write: bool) -> asyncio.Future[T] | None:
        """Queue ``op`` on aiosqlite's worker from the caller's loop, or None while the
        database is not started (or was opened by another process)."""
        with self._direct_lock:
            direct = self._direct
            if direct is None or direct[1] != os.getpid():
                return None
            return queue_sqlite(direct[0], op, write)

    async def execute(
        self,
        op: Op[T],
        *,
        write: bool,
        takes: LeaseRef | None = None,
        gives: LeaseRef | None = None,
        empty: Any = None,
    ) -> T:
        """Run ``op`` in one transaction; a read of a database without flowkit's tables
        answers ``empty``. On PostgreSQL, ``takes`` (a lease the operation may grant) is
        backed by the owner's liveness lock before the transaction commits, and undone if
        it fails; ``gives`` (a lease it gives back) is unlocked after it commits."""
        if not await self._start(write=write):
            op.close()
            return empty  # type: ignore[no-any-return]
        if self.dialect == "sqlite":
            return await self._run_sqlite(op, write=write)
        assert self.engine is not None
        liveness = self.liveness
        if liveness is None or (takes is None and gives is None):
            async with self.engine.begin() as connection:
                return await drive_async(connection, op)
        # The owner's liveness lock is taken alongside the transaction and awaited before
        # it commits: no claimant can see the lease before it is backed.
        hold = None if takes is None else asyncio.ensure_future(liveness.hold(*takes))
        try:
            async with self.engine.begin() as connection:
                result = await drive_async(connection, op)
                if hold is not None:
                    await hold
        except BaseException:
            if hold is not None and takes is not None:
                fresh = await asyncio.gather(hold, return_exceptions=True)
                if fresh[0] is True:
                    liveness.drop(*takes)
            raise
        if gives is not None:
            liveness.drop(*gives)
        return result

    async def dispose(self) -> None:
        engine, self.engine = self.engine, None
        self._schema_ready = False
        liveness, self.liveness = self.liveness, None
        if liveness is not None:
            await liveness.close()
        if engine is not None:
            await self._close_engine(engine)

    async def _close_engine(self, engine: AsyncEngine) -> None:
        with self._direct_lock:  # operations queued before this run before the close
            self._direct = None
        held, self._sqlite, self._sqlite_driver = self._sqlite, None, None
        if held is not None:
            await held.close()
        await engine.dispose()

    # -- from any thread -----------------------------------------------------------

    def call(
        self,
        op: Op[T],
        *,
        write: bool,
        what: str,
        takes: LeaseRef | None = None,
        gives: LeaseRef | None = None,
        empty: Any = None,
    ) -> T:
        try:
            if self.dialect == "sqlite":
                # A started SQLite database: straight to aiosqlite's worker and back (the
                # portal would add a second hop); queued under the lock a close takes.
                wait = self._put_direct_blocking(op, write)
                if wait is not None:
                    return wait()
            return self.portal.run(
                self.execute(op, write=write, takes=takes, gives=gives, empty=empty)
            )
        except (DBAPIError, sqlite3.Error, OSError) as exc:
            raise self._failure(what, exc) from exc

    async def acall(
        self,
        op: Op[T],
        *,
        write: bool,
        what: str,
        takes: LeaseRef | None = None,
        gives: LeaseRef | None = None,
        empty: Any = None,
    ) -> T:
        try:
            if self.dialect == "sqlite":
                # aiosqlite resolves futures on whichever loop created them, and the whole
                # operation is one function in its worker thread: async callers skip the
                # portal (one hop there and back instead of two). The portal still does
                # the one-time start (engine, connection, schema).
                if may_block():  # a lone sync kickoff: wait on this thread
                    wait = self._put_direct_blocking(op, write)
                    if wait is None:
                        if not await self.portal.arun(self._start(write=write)):
                            op.close()
                            return empty  # type: ignore[no-any-return]
                        wait = self._put_direct_blocking(op, write)
                    if wait is not None:
                        return wait()
                else:
                    future = self._submit_direct(op, write)
                    if future is None:
                        if not await self.portal.arun(self._start(write=write)):
                            op.close()
                            return empty  # type: ignore[no-any-return]
                        future = self._submit_direct(op, write)
                    if future is not None:
                        return await future
            return await self.portal.arun(
                self.execute(op, write=write, takes=takes, gives=gives, empty=empty)
            )
        except (DBAPIError, sqlite3.Error, OSError) as exc:
            raise self._failure(what, exc) from exc

    def _failure(self, what: str, exc: BaseException) -> PersistenceError:
        return PersistenceError(
            f"{what} failed on {self.describe()}: {exc}. Check that the database is reachable "
            "and writable; the operation was rolled back."
        )

    def shutdown(self) -> None:
        if self.engine is not None and not self.portal.in_portal_thread():
            self.portal.run(self.dispose())
        self.portal.stop()


_registry_lock = threading.Lock()
_databases: dict[tuple[int, str, str], Database] = {}


def acquire_database(url: URL, engine_kwargs: dict[str, Any]) -> Database:
    key = (
        os.getpid(),
        url.render_as_string(hide_password=False),
        repr(sorted(engine_kwargs.items())),
    )
    with _registry_lock:
        database = _databases.get(key)
        if database is None:
            database = _databases[key] = Database(url, engine_kwargs)
        database.users += 1
        return database


def release_database(database: Database) -> None:
    with _registry_lock:
        database.users -= 1
        if database.users > 0:
            return
        for key, value in list(_databases.items()):
            if value is database:
                del _databases[key]
    database.shutdown()


def _shutdown_all() -> None:
    with _registry_lock:
        databases = [db for key, db in _databases.items() if key[0] == os.getpid()]
        _databases.clear()
    for database in databases:
        database.shutdown()


# Runs before the interpreter joins non-daemon threads (aiosqlite's worker is one), so a
# backend the program never closed does not hang the exit.
getattr(threading, "_register_atexit", atexit.register)(_shutdown_all)
