"""The database behind a URL: one :class:`Database` per URL and process, shared by backends.

A :class:`Database` is an engine that lives on its own portal thread (asyncpg connections
belong to the loop that made them, and callers come from many loops and threads).
Operations are the statement generators of ``_sql_ops``. SQLite: one aiosqlite
connection (opened on the portal, so its worker is a daemon thread) in autocommit mode,
driven through aiosqlite's public API from whichever loop the caller is on, under a lock
any loop can await; a checkpoint save is one guarded statement when it can be (see
``_sql_ops.save_checkpoint_statement``). Sync callers go through the portal. The portal
opens the connection and checks the schema with a read; only a write creates or upgrades
it, so readers never wait for writers. Other databases await each statement on a pooled
connection, on the portal loop; PostgreSQL through asyncpg keeps its pooled connections
between operations and drives them through asyncpg's public API, a hot write being one
guarded statement in autocommit (``_sql_pg_connections``, ``_sql_postgres``). Backends
acquire the shared :class:`Database` for their URL and release it on close.

MariaDB/MySQL connections run at READ COMMITTED (each statement sees what was committed
before it, as on PostgreSQL; the writes lock the run row first, see ``_sql_mysql``) and
in strict mode (a value too long for its column is an error, never cut short), unless
``engine_kwargs`` name another ``isolation_level``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import itertools
import os
import re
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import event, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.elements import TextClause

from flowkit._concurrency import (
    LoopAgnosticLock,
    NotInline,
    Portal,
    PortalStopped,
    ThreadLoop,
    completing,
    on_owned_loop,
    thread_loop,
)
from flowkit.exceptions import PersistenceError
from flowkit.persistence import _rules, _sql_ops
from flowkit.persistence._schema import SCHEMA_VERSION, WRITE_REFUSED
from flowkit.persistence._sql_liveness import SessionLiveness
from flowkit.persistence._sql_ops import Op
from flowkit.persistence._sql_pg_connections import (
    ClosedUnder,
    HeldConnections,
    ThreadConnections,
    pool_limits,
)
from flowkit.persistence._sql_sqlite_reads import ReadConnections, file_missing
from flowkit.persistence._sql_url import dialect_of, mysql_session, sqlite_file, sqlite_pragmas

T = TypeVar("T")

# What a SQLite operation answers when the database was closed before it could start.
_CLOSED: Any = object()
# What a PostgreSQL operation on a sync caller's thread answers, having run nothing, when
# the thread owns no connection: it takes the portal's path.
_PORTAL: Any = object()


class DatabaseClosed(Exception):
    """The :class:`Database` was shut down before the operation started (nothing ran):
    the backend retries it on a fresh one."""


# (owner, run_id) of a lease an operation takes or gives back (PostgreSQL liveness).
LeaseRef = tuple[str, str]


# -- running one operation (a statement generator of ``_sql_ops``) on a connection --
#
# SQLite: statements go to aiosqlite's connection through its public coroutine API
# (``execute_fetchall``, ``executemany``, ``commit``, ``rollback``); the connection runs in
# autocommit mode, so an operation opens its own transaction (``BEGIN IMMEDIATE`` for a
# write) and a single-statement operation (:func:`drive_sqlite_statement`) is a
# transaction by itself. The caller holds the connection's lock, so operations never
# interleave on it. Other databases: each statement is awaited on an SQLAlchemy async
# connection whose transaction the caller owns, or (PostgreSQL through asyncpg) on the
# asyncpg connection under a pooled one.

_sql_text: Callable[[str], TextClause] = functools.lru_cache(maxsize=512)(text)


async def drive_sqlite(driver: Any, op: Op[T], write: bool) -> T:
    """Run ``op`` in one transaction on the aiosqlite connection ``driver`` (in
    autocommit mode); the caller holds the connection's lock."""
    if driver.in_transaction:  # left open by an operation cancelled half way
        await driver.rollback()
    # IMMEDIATE takes the write lock up front (waiting up to the busy timeout), so a
    # transaction never fails half way because another process started writing.
    await driver.execute_fetchall("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        stmt = next(op)
        while True:
            if stmt.many:
                await driver.executemany(stmt.sql, stmt.params)
                rows: list[tuple[Any, ...]] = []
            else:
                rows = list(await driver.execute_fetchall(stmt.sql, stmt.params))
            stmt = op.send(rows)
    except StopIteration as done:
        await driver.commit()
        return done.value  # type: ignore[no-any-return]
    except BaseException:
        with contextlib.suppress(Exception):
            await driver.rollback()
        raise


async def drive_sqlite_statement(driver: Any, op: Op[T]) -> T | None:
    """Run an operation of exactly one statement in autocommit: the statement is its
    own transaction (one call to aiosqlite's worker thread, one commit). A statement
    refused by a ``flowkit_writes`` trigger (``WRITE_REFUSED``, nothing written)
    answers None, as a guarded statement that matched no row does."""
    if driver.in_transaction:
        await driver.rollback()
    stmt = next(op)
    try:
        rows = await driver.execute_fetchall(stmt.sql, stmt.params)
    except sqlite3.IntegrityError as exc:
        op.close()
        if exc.args == (WRITE_REFUSED,):
            return None
        raise
    except asyncio.CancelledError:
        # aiosqlite's worker runs (and commits) the statement anyway: wait until it
        # has (a no-op queued behind it), so that what comes next sees it settled --
        # a blocking read, which runs on another connection, included.
        with contextlib.suppress(Exception):
            await driver.execute_fetchall("SELECT 1")
        raise
    try:
        op.send(rows if type(rows) is list else list(rows))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    op.close()
    raise RuntimeError("a single-statement operation yielded a second statement")


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


_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=512)
def asyncpg_sql(sql: str) -> tuple[str, tuple[str, ...]]:
    """``sql`` with its ``:name`` parameters numbered ``$1``, ``$2``, ... (asyncpg's
    style; a name used twice keeps its number), and the names in number order."""
    names: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        return f"${names.setdefault(match.group(1), len(names) + 1)}"

    return _NAMED.sub(number, sql), tuple(names)


async def drive_asyncpg(driver: Any, op: Op[T]) -> T:
    """Run ``op`` on an asyncpg connection through its public API (``fetch``,
    ``executemany``), each value a bound parameter; the caller owns the transaction,
    or runs the connection in autocommit (every statement its own transaction)."""
    try:
        stmt = next(op)
        while True:
            sql, names = asyncpg_sql(stmt.sql)
            if stmt.many:
                many = cast(Sequence[Mapping[str, Any]], stmt.params)
                await driver.executemany(sql, [tuple(p[n] for n in names) for p in many])
                rows: list[tuple[Any, ...]] = []
            else:
                params = cast(Mapping[str, Any], stmt.params)
                found = await driver.fetch(sql, *(params[n] for n in names))
                rows = [tuple(row) for row in found]
            stmt = op.send(rows)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


class Database:
    """An engine on its portal thread, shared by every backend using the same URL."""

    _names = itertools.count(1)

    def __init__(self, url: URL, engine_kwargs: dict[str, Any]) -> None:
        self.url = url
        self.dialect = dialect_of(url)
        # PostgreSQL through asyncpg: sync callers run on their own thread's connection.
        self._thread_path = self.dialect == "postgresql" and url.get_driver_name() == "asyncpg"
        self.engine_kwargs = engine_kwargs
        self.portal = Portal(f"flowkit-db-{next(self._names)}")
        self.users = 0
        self.pid = os.getpid()  # a forked child acquires its own (see acquire_database)
        self.closed = False  # shut down for good: a backend then acquires a new one
        self.engine: AsyncEngine | None = None
        # PostgreSQL: pooled connections driven through asyncpg (_sql_pg_connections).
        self._held: HeldConnections | None = None
        # ... and the connections sync callers' threads own (their own loops, no hop).
        self._threads: ThreadConnections | None = None
        self._pg_isolation: str | None = None
        self._driver_errors: tuple[type[BaseException], ...] = ()
        self._ready: asyncio.Lock | None = None
        # True once the schema is known to be current (checked, or created by a write).
        self._schema_ready = False
        self._sqlite: AsyncConnection | None = None
        self._sqlite_driver: Any = None  # the aiosqlite.Connection under self._sqlite
        # SQLite: one operation at a time on the connection, whatever loop it comes from.
        self._sqlite_lock = LoopAgnosticLock()
        # SQLite: the pid whose portal opened the connection and found the schema
        # current; async callers of that process then use it from their own loop (a
        # forked child must not use its parent's worker thread). 0 while not started.
        self._direct_pid = 0
        # (run_id) -> (seq, blob hashes) of the last checkpoint this process wrote.
        self.stored_blobs: OrderedDict[str, tuple[int, frozenset[str]]] = OrderedDict()
        # PostgreSQL, MariaDB/MySQL: the session whose locks say our lease owners are alive.
        self.liveness: SessionLiveness | None = None
        # PostgreSQL, MariaDB/MySQL: operations running on the portal now, and what
        # shutdown waits on for them to end (SQLite's lock does that job there).
        self._in_flight = 0
        self._drained: asyncio.Event | None = None
        # SQLite file: its path, made absolute once (the working folder may change, and
        # every connection must open the same file); read-only connections for blocking
        # reads on the caller's thread, made by the first such read.
        path = sqlite_file(url) if self.dialect == "sqlite" else None
        self.sqlite_path = None if path is None else path.expanduser().absolute()
        self._readers: ReadConnections | None = None
        self._readers_lock = threading.Lock()

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
                self._direct_pid = os.getpid()
            return True

    def _file_missing(self) -> bool:
        """True for a SQLite file that does not exist but could be created; a path that
        cannot (under a regular file) is opened anyway, so the read reports why."""
        return self.sqlite_path is not None and file_missing(self.sqlite_path)

    async def _open(self) -> None:
        engine = self._create_engine()
        if self.dialect == "sqlite":
            try:
                self._sqlite = await engine.connect()
                raw = await self._sqlite.get_raw_connection()
                self._sqlite_driver = raw.driver_connection
            except BaseException:
                held, self._sqlite, self._sqlite_driver = self._sqlite, None, None
                await self._close_engine(engine, held)
                raise
        self.engine = engine
        if self.dialect == "postgresql" and self.url.get_driver_name() == "asyncpg":
            self._open_postgresql(engine)
        if self.dialect in ("postgresql", "mysql"):
            self.liveness = SessionLiveness(
                self._create_liveness_engine, self.dialect, asyncpg=self._held is not None
            )

    def _open_postgresql(self, engine: AsyncEngine) -> None:
        import asyncpg  # type: ignore[import-untyped]

        # InternalClientError: a connection out of step with the server (one the server
        # ended while it was idle reports "another operation is in progress").
        self._driver_errors = (
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,
        )
        self._held = HeldConnections(
            engine,
            (
                asyncpg.InterfaceError,
                asyncpg.InternalClientError,
                asyncpg.PostgresConnectionError,
                OSError,
            ),
            **pool_limits(engine, self.engine_kwargs),
        )
        if self._threads is None:  # (kept when reopened: the threads' connections stay)
            size = getattr(engine.sync_engine.pool, "size", None)
            self._threads = ThreadConnections(
                self._create_liveness_engine,
                self._held.connection_errors,
                limit=int(size()) if callable(size) else 0,
            )
        level = self.engine_kwargs.get("isolation_level")
        if isinstance(level, str) and level.upper() not in ("AUTOCOMMIT", "READ COMMITTED"):
            # asyncpg's names: repeatable_read, serializable, ... (a stricter level keeps
            # reads in transactions, see _execute_postgresql)
            self._pg_isolation = level.lower().replace(" ", "_")

    async def _run_schema(self, op: Op[T], write: bool) -> T:
        if self.dialect == "sqlite":
            done = await self._run_sqlite(op, write=write)
            if done is _CLOSED:
                raise DatabaseClosed
            return done  # type: ignore[no-any-return]
        assert self.engine is not None
        async with self.engine.begin() as connection:
            return await drive_async(connection, op)

    def _create_engine(self) -> AsyncEngine:
        kwargs = dict(self.engine_kwargs)
        url = self.url
        if self.dialect == "sqlite":
            path = self.sqlite_path
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                url = url.set(database=str(path))  # the file the blocking reads open
            # sqlite3 in autocommit mode: transactions are opened explicitly, and a
            # single statement commits by itself.
            kwargs["connect_args"] = {**kwargs.get("connect_args", {}), "isolation_level": None}
        if self.dialect == "mysql":
            kwargs.setdefault("isolation_level", "READ COMMITTED")
        engine = create_async_engine(url, **kwargs)
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

    async def _run_sqlite(self, op: Op[T], *, write: bool, fast: Op[Any] | None = None) -> Any:
        """Run ``op`` on the SQLite connection from the caller's loop. ``fast``, if
        given, is tried first as one autocommit statement; when it answers None (its
        guard refused) ``op`` runs in a transaction and decides. Answers ``_CLOSED``,
        having run nothing, when the database was closed meanwhile."""
        async with self._sqlite_lock:
            driver = self._sqlite_driver
            if driver is None:
                return _CLOSED
            if fast is not None:
                done = await drive_sqlite_statement(driver, fast)
                if done is not None:
                    op.close()
                    return done
            return await drive_sqlite(driver, op, write)

    def _started_here(self) -> bool:
        """SQLite: the connection is open with a current schema, in this process."""
        return self._direct_pid == os.getpid() and self._sqlite_driver is not None

    async def execute(
        self,
        op: Op[T],
        *,
        write: bool,
        takes: LeaseRef | None = None,
        gives: LeaseRef | None = None,
        empty: Any = None,
        fast: Op[Any] | None = None,
    ) -> T:
        """Run ``op`` in one transaction; a read of a database without flowkit's tables
        answers ``empty``. On PostgreSQL, ``takes`` (a lease the operation may grant) is
        backed by the owner's liveness lock before the transaction commits, and undone if
        it fails; ``gives`` (a lease it gives back) is unlocked after it commits. On
        SQLite ``fast`` (see :meth:`_run_sqlite`) is tried first."""
        if not await self._start(write=write):
            op.close()
            if fast is not None:
                fast.close()
            return empty  # type: ignore[no-any-return]
        if self.dialect == "sqlite":
            done = await completing(self._run_sqlite(op, write=write, fast=fast))
            if done is _CLOSED:
                raise DatabaseClosed
            return done  # type: ignore[no-any-return]
        self._in_flight += 1
        try:
            if self._held is not None:  # PostgreSQL through asyncpg
                return await self._execute_postgresql(
                    op, write=write, takes=takes, gives=gives, fast=fast
                )
            return await self._execute_pooled(op, takes=takes, gives=gives, fast=fast)
        finally:
            self._in_flight -= 1
            if not self._in_flight and self._drained is not None:
                self._drained.set()

    async def _execute_pooled(
        self,
        op: Op[T],
        *,
        takes: LeaseRef | None,
        gives: LeaseRef | None,
        fast: Op[Any] | None,
    ) -> T:
        """Other server databases: ``op`` in one transaction on a pooled SQLAlchemy
        connection, with the owner's liveness lock handled as :meth:`execute` says."""
        if fast is not None:
            fast.close()
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

    async def _execute_postgresql(
        self,
        op: Op[T],
        *,
        write: bool,
        takes: LeaseRef | None,
        gives: LeaseRef | None,
        fast: Op[Any] | None,
    ) -> T:
        """PostgreSQL: a read, and a write's one-statement form (``fast``, see
        ``_sql_postgres``), run in autocommit: one round trip, no BEGIN or COMMIT. A
        read needs no transaction: at READ COMMITTED each statement sees what was
        committed before it, inside a transaction or not. When ``fast`` answers None
        (its guard refused, nothing written) ``op`` runs in a transaction and decides.
        A lease the operation grants (``takes``) is backed by the owner's liveness lock
        before anything commits; one it gives back (``gives``) is unlocked after."""
        held = self._held
        assert held is not None
        liveness = self.liveness if takes is not None or gives is not None else None
        fresh = False
        hold: asyncio.Future[bool] | None = None
        autocommit = fast is not None or (not write and self._pg_isolation is None)
        try:
            if autocommit and takes is not None and liveness is not None:
                # Backed before the statement, which commits by itself (and before a
                # pooled connection is taken for it).
                fresh = await liveness.hold(*takes)
            async with held.connection() as driver:
                if autocommit:
                    if fast is None:
                        return await drive_asyncpg(driver, op)
                    done = await drive_asyncpg(driver, fast)
                    if done is not None:
                        op.close()
                        if gives is not None and liveness is not None:
                            liveness.drop(*gives)
                        return done  # type: ignore[no-any-return]
                elif takes is not None and liveness is not None:
                    # Taken alongside the transaction, awaited before it commits.
                    hold = asyncio.ensure_future(liveness.hold(*takes))
                transaction = driver.transaction(isolation=self._pg_isolation)
                await transaction.start()
                try:
                    result = await drive_asyncpg(driver, op)
                    if hold is not None:
                        fresh = await hold
                except Exception:
                    # (cancelled half way: the connection is left in the transaction,
                    # so HeldConnections discards it)
                    with contextlib.suppress(Exception):
                        await transaction.rollback()
                    raise
                await transaction.commit()
        except BaseException:
            if hold is not None:
                fresh = (await asyncio.gather(hold, return_exceptions=True))[0] is True
            if fresh and takes is not None and liveness is not None:
                liveness.drop(*takes)
            raise
        finally:
            if fast is not None:
                fast.close()
        if gives is not None and liveness is not None:
            liveness.drop(*gives)
        return result

    async def _execute_on_thread(
        self,
        owner: ThreadLoop,
        op: Op[T],
        *,
        write: bool,
        takes: LeaseRef | None,
        gives: LeaseRef | None,
        empty: Any,
        fast: Op[Any] | None,
    ) -> Any:
        """PostgreSQL, a sync caller on its thread's loop (``owner``): ``op`` on the
        connection this thread owns (``_sql_pg_connections.ThreadConnections``), run as
        :meth:`_pg_statements` says, with no thread hop. Only the owner's liveness lock
        goes to the portal, where its session lives: taken (``takes``) before the
        statement, which may commit the lease by itself; given back (``gives``) without
        waiting, once committed. Answers ``_PORTAL``, having run nothing, when the thread
        gets no connection of its own."""
        if not self._schema_ready and not await self.portal.arun(self._start(write=write)):
            op.close()
            if fast is not None:
                fast.close()
            return empty
        threads = self._threads
        mine = None if threads is None else threads.claim(owner)
        if mine is None:
            return _PORTAL
        liveness = self.liveness if takes is not None or gives is not None else None
        fresh = False
        try:
            if takes is not None and liveness is not None:
                fresh = await self.portal.arun(liveness.hold(*takes))
            if mine.closed:  # closed meanwhile: nothing ran but the hold, undone below
                raise DatabaseClosed
            async with mine.use() as driver:
                result = await self._pg_statements(driver, op, write=write, fast=fast)
        except BaseException:
            if fresh and takes is not None and liveness is not None:
                self.portal.call_soon(liveness.drop, *takes)
            raise
        finally:
            mine.release()
            if fast is not None:
                fast.close()
        if gives is not None and liveness is not None:
            self.portal.call_soon(liveness.drop, *gives)
        return result

    async def _pg_statements(
        self, driver: Any, op: Op[T], *, write: bool, fast: Op[Any] | None
    ) -> T:
        """``op`` on an asyncpg connection in autocommit: ``fast`` (one statement that
        commits by itself) first when given, and a read as it is (at READ COMMITTED each
        statement sees what was committed before it); otherwise, or when ``fast``
        answers None (its guard refused, nothing written), in a transaction."""
        if fast is not None:
            done = await drive_asyncpg(driver, fast)
            if done is not None:
                op.close()
                return done  # type: ignore[no-any-return]
        elif not write and self._pg_isolation is None:
            return await drive_asyncpg(driver, op)
        transaction = driver.transaction(isolation=self._pg_isolation)
        await transaction.start()
        try:
            result = await drive_asyncpg(driver, op)
        except Exception:
            # (cancelled half way: the connection is left in the transaction, and the
            # ThreadConnection closes it)
            with contextlib.suppress(Exception):
                await transaction.rollback()
            raise
        await transaction.commit()
        return result

    async def dispose(self) -> None:
        engine, self.engine = self.engine, None
        self._schema_ready = False
        self._direct_pid = 0
        # Operations that take the lock from now on see no connection and start afresh.
        held, self._sqlite, self._sqlite_driver = self._sqlite, None, None
        liveness, self.liveness = self.liveness, None
        if liveness is not None:
            await liveness.close()
        pg_held, self._held = self._held, None
        if pg_held is not None:
            await pg_held.close()
        if engine is not None:
            await self._close_engine(engine, held)

    async def _close_engine(self, engine: AsyncEngine, held: AsyncConnection | None) -> None:
        if held is not None:
            async with self._sqlite_lock:  # the operation holding the connection ends first
                await held.close()
        await engine.dispose()

    # -- from any thread -----------------------------------------------------------

    async def acall(
        self,
        op: Op[T],
        *,
        write: bool,
        what: str,
        takes: LeaseRef | None = None,
        gives: LeaseRef | None = None,
        empty: Any = None,
        fast: Op[Any] | None = None,
    ) -> T:
        try:
            if self._thread_path and (owner := thread_loop()) is not None:
                done = await self._execute_on_thread(
                    owner, op, write=write, takes=takes, gives=gives, empty=empty, fast=fast
                )
                if done is not _PORTAL:
                    return done  # type: ignore[no-any-return]
            elif self.dialect == "sqlite" and on_owned_loop():
                # aiosqlite's connection takes calls from any loop (each result comes
                # back to the loop that asked): callers on flowkit's own loops (a sync
                # kickoff) skip the portal, which only does the one-time start (engine,
                # connection, schema). Other loops (kickoff_async in an application)
                # go through the portal: such a loop may be closed under an operation
                # in flight, and aiosqlite's worker must never answer a closed loop.
                if not self._started_here() and not await self.portal.arun(
                    self._start(write=write)
                ):
                    op.close()
                    if fast is not None:
                        fast.close()
                    return empty  # type: ignore[no-any-return]
                if self._started_here():
                    # Awaited in the caller's task: cancelled half way (Ctrl-C), the
                    # transaction is rolled back; the loop outlives any reply.
                    done = await self._run_sqlite(op, write=write, fast=fast)
                    if done is _CLOSED:
                        raise DatabaseClosed
                    return done  # type: ignore[no-any-return]
            return await self.portal.arun(
                self.execute(op, write=write, takes=takes, gives=gives, empty=empty, fast=fast)
            )
        except (PortalStopped, ClosedUnder):
            if self.closed and self.dialect == "sqlite":
                raise DatabaseClosed from None
            raise _rules.cut_off(what, self.describe()) from None
        except (DBAPIError, sqlite3.Error, OSError) as exc:
            raise self._failure(what, exc) from exc
        except PoolTimeout as exc:
            raise self._exhausted(what, exc) from exc
        except Exception as exc:
            if isinstance(exc, self._driver_errors):
                raise self._failure(what, exc) from exc
            raise

    def read_inline(self, op: Op[T], *, what: str, empty: Any, fast: Op[Any] | None) -> T:
        """SQLite file: answer the read ``op`` on the caller's thread (see
        ``_sql_sqlite_reads``), for a blocking read run inline; NotInline, having run
        nothing, when it cannot be answered there."""
        readers = self._readers or self._start_readers()
        if readers is None:
            op.close()
            if fast is not None:
                fast.close()
            raise NotInline
        try:
            return readers.read(op, fast=fast, empty=empty)  # type: ignore[no-any-return]
        except (DBAPIError, sqlite3.Error, OSError) as exc:
            raise self._failure(what, exc) from exc

    def _start_readers(self) -> ReadConnections | None:
        path = self.sqlite_path
        with self._readers_lock:
            if self._readers is None and path is not None and not self.closed:
                self._readers = ReadConnections(path)
            return self._readers

    def _failure(self, what: str, exc: BaseException) -> PersistenceError:
        return PersistenceError(
            f"{what} failed on {self.describe()}: {exc}. Check that the database is reachable "
            "and writable; the operation was rolled back."
        )

    def _exhausted(self, what: str, exc: BaseException) -> PersistenceError:
        pool = self.engine.sync_engine.pool if self.engine is not None else None
        status = pool.status() if pool is not None else "no pool"
        return PersistenceError(
            f"{what} waited for a database connection and got none: every connection of "
            f"the pool for {self.describe()} was in use ({status}; {exc}). Raise "
            "pool_size and/or max_overflow (or pool_timeout) through engine_kwargs, e.g. "
            'SQLAlchemyFlowPersistence(url, engine_kwargs={"pool_size": 20, '
            '"max_overflow": 20}), within the server\'s max_connections, or run fewer '
            "flows at once."
        )

    def shutdown(self) -> None:
        self.closed = True
        with self._readers_lock:
            readers = self._readers
        if readers is not None:
            readers.close()
        if self._threads is not None:
            self._threads.close()  # each on its own thread's loop, before the portal's
        if self.engine is not None and not self.portal.in_portal_thread():
            self.portal.run(self._drain_then_dispose())
        self.portal.stop()

    async def _drain_then_dispose(self) -> None:
        """Let operations other threads started finish (up to ``_rules.CLOSE_GRACE`` seconds)
        before the connections close under them; one still running then is cut off and
        its caller gets a PersistenceError saying so."""
        if self._in_flight:
            self._drained = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), _rules.CLOSE_GRACE)
        await self.dispose()


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


# aiosqlite's workers are daemon threads (created on a portal thread), so a backend the
# program never closed does not hang the exit; this closes their connections cleanly.
atexit.register(_shutdown_all)
