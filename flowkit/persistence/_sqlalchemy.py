"""SQLAlchemyFlowPersistence (any SQLAlchemy async URL) and SQLiteFlowPersistence.

One :class:`_Database` per URL and process: an engine that lives on its own portal
thread (asyncpg connections belong to the loop that made them, and callers come from
many loops and threads). Operations are the statement generators of ``_sql_ops``.
SQLite runs a whole operation inside aiosqlite's thread, one hop per operation: async
callers queue it there straight from their own loop (aiosqlite resolves a future on the
loop that created it), sync callers go through the portal; the portal also opens the
connection and creates the schema, once. Other databases await each statement on a
pooled connection, on the portal loop.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import itertools
import json
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import TextClause

from flowkit.exceptions import FlowConfigurationError, PersistenceError
from flowkit.persistence import _rules, _schema, _sql_ops
from flowkit.persistence._base import FlowPersistence
from flowkit.persistence._encoding import (
    EncodedState,
    dumps,
    encode_state,
    inflate_state,
)
from flowkit.persistence._paths import default_db_path
from flowkit.persistence._portal import Portal
from flowkit.persistence._records import Checkpoint, RunRecord, utc_from_timestamp
from flowkit.persistence._sql_ops import Op

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 30_000
_BLOB_CACHE_RUNS = 1024

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


async def _drive_async(connection: AsyncConnection, op: Op[T]) -> T:
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


def _normalise_url(url: str | URL) -> URL:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgres":
        backend = "postgresql"
    if backend not in _schema.SUPPORTED_DIALECTS:
        raise FlowConfigurationError(
            f"SQLAlchemyFlowPersistence supports SQLite and PostgreSQL URLs, got "
            f"{parsed.render_as_string()!r}. Use 'sqlite+aiosqlite:///path.db' or "
            "'postgresql+asyncpg://user@host/db', or write your own FlowPersistence."
        )
    driver = parsed.get_driver_name()
    if backend == "sqlite" and driver != "aiosqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif backend == "postgresql" and driver in ("psycopg2", "pg8000", ""):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


class _Database:
    """An engine on its portal thread, shared by every backend using the same URL."""

    _names = itertools.count(1)

    def __init__(self, url: URL, engine_kwargs: dict[str, Any]) -> None:
        self.url = url
        self.dialect = url.get_backend_name()
        self.engine_kwargs = engine_kwargs
        self.portal = Portal(f"flowkit-db-{next(self._names)}")
        self.users = 0
        self.engine: AsyncEngine | None = None
        self._ready: asyncio.Lock | None = None
        self._sqlite: AsyncConnection | None = None
        self._sqlite_driver: Any = None  # the aiosqlite.Connection under self._sqlite
        # SQLite: the driver async callers submit to directly, set once the schema is
        # ready, cleared (under _direct_lock) before the connection closes; with the pid
        # that opened it (a forked child must not use its parent's worker thread).
        self._direct: tuple[Any, int] | None = None
        self._direct_lock = threading.Lock()
        # (run_id) -> (seq, blob hashes) of the last checkpoint this process wrote.
        self.stored_blobs: OrderedDict[str, tuple[int, frozenset[str]]] = OrderedDict()

    def describe(self) -> str:
        return self.url.render_as_string(hide_password=True)

    # -- on the portal loop --------------------------------------------------------

    async def _start(self) -> None:
        if self.engine is not None:
            return
        if self._ready is None:
            self._ready = asyncio.Lock()
        async with self._ready:
            if self.engine is not None:
                return
            engine = self._create_engine()
            try:
                if self.dialect == "sqlite":
                    self._sqlite = await engine.connect()
                    raw = await self._sqlite.get_raw_connection()
                    self._sqlite_driver = raw.driver_connection
                    await self._run_sqlite(_sql_ops.init_schema(self.dialect), write=True)
                else:
                    async with engine.begin() as connection:
                        await _drive_async(connection, _sql_ops.init_schema(self.dialect))
            except BaseException:
                await self._close_engine(engine)
                raise
            self.engine = engine
            if self.dialect == "sqlite":
                with self._direct_lock:
                    self._direct = (self._sqlite_driver, os.getpid())

    def _create_engine(self) -> AsyncEngine:
        kwargs = dict(self.engine_kwargs)
        if self.dialect == "sqlite":
            path = _sqlite_file(self.url)
            if path is not None:
                path.expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            in_memory = _sqlite_file(self.url) is None
            event.listen(
                engine.sync_engine, "connect", functools.partial(_sqlite_pragmas, in_memory)
            )
        return engine

    async def _run_sqlite(self, op: Op[T], *, write: bool) -> T:
        driver = self._sqlite_driver
        if getattr(driver, "_tx", None) is None:  # pragma: no cover - other aiosqlite
            raise PersistenceError(
                "This aiosqlite version lacks the Connection._tx queue, which flowkit uses "
                "to run a transaction in one step. Install a supported aiosqlite (>= 0.20)."
            )
        return await _submit(driver, op, write)

    def _submit_direct(self, op: Op[T], write: bool) -> asyncio.Future[T] | None:
        """Queue ``op`` on aiosqlite's worker from the caller's loop, or None while the
        database is not started (or was opened by another process)."""
        with self._direct_lock:
            direct = self._direct
            if direct is None or direct[1] != os.getpid():
                return None
            return _queue(direct[0], op, write)

    async def execute(self, op: Op[T], *, write: bool) -> T:
        await self._start()
        if self.dialect == "sqlite":
            return await self._run_sqlite(op, write=write)
        assert self.engine is not None
        async with self.engine.begin() as connection:
            return await _drive_async(connection, op)

    async def dispose(self) -> None:
        engine, self.engine = self.engine, None
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

    def call(self, op: Op[T], *, write: bool, what: str) -> T:
        try:
            return self.portal.run(self.execute(op, write=write))
        except (DBAPIError, sqlite3.Error, OSError) as exc:
            raise self._failure(what, exc) from exc

    async def acall(self, op: Op[T], *, write: bool, what: str) -> T:
        try:
            if self.dialect == "sqlite":
                # aiosqlite resolves futures on whichever loop created them, and the whole
                # operation is one function in its worker thread: async callers skip the
                # portal (one hop there and back instead of two). The portal still does
                # the one-time start (engine, connection, schema).
                future = self._submit_direct(op, write)
                if future is None:
                    await self.portal.arun(self._start())
                    future = self._submit_direct(op, write)
                if future is not None:
                    return await future
            return await self.portal.arun(self.execute(op, write=write))
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


def _queue(driver: Any, op: Op[T], write: bool) -> asyncio.Future[T]:
    """Put ``op`` (one whole transaction) on the aiosqlite worker's queue; the returned
    future belongs to the running loop. aiosqlite runs its queue in order, one item at a
    time, so operations from every thread and loop are serialised."""
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    driver._tx.put_nowait((_Reply(future), functools.partial(_drive_sqlite, driver, op, write)))
    return future


async def _submit(driver: Any, op: Op[T], write: bool) -> T:
    return await _queue(driver, op, write)


def _sqlite_pragmas(in_memory: bool, dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    if not in_memory:
        cursor.execute("PRAGMA journal_mode = WAL")
    # FULL: every committed checkpoint is on disk, even in WAL mode.
    cursor.execute("PRAGMA synchronous = FULL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


_registry_lock = threading.Lock()
_databases: dict[tuple[int, str, str], _Database] = {}


def _acquire_database(url: URL, engine_kwargs: dict[str, Any]) -> _Database:
    key = (
        os.getpid(),
        url.render_as_string(hide_password=False),
        repr(sorted(engine_kwargs.items())),
    )
    with _registry_lock:
        database = _databases.get(key)
        if database is None:
            database = _databases[key] = _Database(url, engine_kwargs)
        database.users += 1
        return database


def _release_database(database: _Database) -> None:
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


class SQLAlchemyFlowPersistence(FlowPersistence):
    """Runs and checkpoints in a SQL database reached through SQLAlchemy's asyncio engine.

    ``url`` is an SQLite or PostgreSQL URL (``sqlite+aiosqlite:///runs.db``,
    ``postgresql+asyncpg://user@host/db``; plain ``sqlite://`` / ``postgresql://`` pick
    those drivers). Backends with the same URL share one engine and connection pool. The
    tables are created on first use; nothing connects at construction::

        persistence = SQLAlchemyFlowPersistence("postgresql+asyncpg://app@db/flows")
        persistence.save_state("run-1", "start", {"id": "run-1"})
        persistence.close()

    Args:
        url: The database URL.
        secret_key: Key for the engine's encrypted state fields (stored, not used here).
        engine_kwargs: Extra arguments for ``create_async_engine`` (pool size, ...).
    """

    supports_history = True
    supports_runs = True
    supports_cas = True
    supports_leases = True

    def __init__(
        self,
        url: str | URL,
        *,
        secret_key: str | bytes | None = None,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.url = _normalise_url(url)
        self.secret_key = secret_key
        self._engine_kwargs = dict(engine_kwargs or {})
        self._database_handle: _Database | None = None
        self._handle_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url.render_as_string(hide_password=True)!r})"

    def _database(self) -> _Database:
        handle = self._database_handle
        if handle is None:
            with self._handle_lock:
                if self._database_handle is None:
                    self._database_handle = _acquire_database(self.url, self._engine_kwargs)
                handle = self._database_handle
        return handle

    def _call(self, op: Op[T], *, write: bool, what: str) -> T:
        return self._database().call(op, write=write, what=what)

    async def _acall(self, op: Op[T], *, write: bool, what: str) -> T:
        return await self._database().acall(op, write=write, what=what)

    # -- lifecycle -----------------------------------------------------------------

    def init_db(self) -> None:
        self._call(_noop(), write=False, what="init_db")

    async def ainit_db(self) -> None:
        await self._acall(_noop(), write=False, what="init_db")

    def close(self) -> None:
        with self._handle_lock:
            handle, self._database_handle = self._database_handle, None
        if handle is not None:
            _release_database(handle)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    # -- required ------------------------------------------------------------------

    def save_state(self, flow_uuid: str, method_name: str, state_data: dict[str, Any]) -> None:
        self.save_checkpoint(flow_uuid, method_name, state_data, expected_seq=None)

    async def asave_state(
        self, flow_uuid: str, method_name: str, state_data: dict[str, Any]
    ) -> None:
        await self.asave_checkpoint(flow_uuid, method_name, state_data, expected_seq=None)

    def load_state(self, flow_uuid: str) -> dict[str, Any] | None:
        checkpoint = self.load_checkpoint(flow_uuid)
        return None if checkpoint is None else checkpoint.state

    async def aload_state(self, flow_uuid: str) -> dict[str, Any] | None:
        checkpoint = await self.aload_checkpoint(flow_uuid)
        return None if checkpoint is None else checkpoint.state

    # -- history -------------------------------------------------------------------

    def history(self, run_id: str) -> list[Checkpoint]:
        return self._call(_sql_ops.history(run_id), write=False, what=f"history({run_id!r})")

    async def ahistory(self, run_id: str) -> list[Checkpoint]:
        return await self._acall(_sql_ops.history(run_id), write=False, what=f"history({run_id!r})")

    def load_checkpoint(self, run_id: str, seq: int | None = None) -> Checkpoint | None:
        op = _sql_ops.load_checkpoint(self.url.get_backend_name(), run_id, seq)
        return self._call(op, write=False, what=f"load_checkpoint({run_id!r}, {seq!r})")

    async def aload_checkpoint(self, run_id: str, seq: int | None = None) -> Checkpoint | None:
        op = _sql_ops.load_checkpoint(self.url.get_backend_name(), run_id, seq)
        return await self._acall(op, write=False, what=f"load_checkpoint({run_id!r}, {seq!r})")

    # -- compare-and-set -----------------------------------------------------------

    def _save_op(
        self,
        run_id: str,
        method_name: str,
        state: dict[str, Any],
        *,
        expected_seq: int | None,
        meta: dict[str, Any] | None,
        status: str,
        flow_name: str | None,
        lease_owner: str | None,
        release: bool = False,
    ) -> tuple[Op[_sql_ops.SavedCheckpoint], Callable[[_sql_ops.SavedCheckpoint], Checkpoint]]:
        _rules.check_status(status)
        encoded = encode_state(state)
        meta_text = dumps(meta or {}, what="meta")
        database = self._database()
        op = _sql_ops.save_checkpoint(
            run_id,
            method_name,
            encoded,
            meta_text,
            status=status,
            flow_name=flow_name,
            expected_seq=expected_seq,
            lease_owner=lease_owner,
            at=_rules.now(),
            stored_blobs=database.stored_blobs.get(run_id),
            release=release,
        )

        return op, self._finisher(database, run_id, method_name, state, encoded, meta_text)

    @staticmethod
    def _finisher(
        database: _Database,
        run_id: str,
        method_name: str,
        state: dict[str, Any],
        encoded: EncodedState,
        meta_text: str,
    ) -> Callable[[_sql_ops.SavedCheckpoint], Checkpoint]:
        """What turns a committed save into the Checkpoint returned to the caller."""

        def finish(saved: _sql_ops.SavedCheckpoint) -> Checkpoint:
            cache = database.stored_blobs
            cache[run_id] = (saved.seq, saved.blobs)
            cache.move_to_end(run_id)
            while len(cache) > _BLOB_CACHE_RUNS:
                cache.popitem(last=False)
            return Checkpoint(
                run_id=run_id,
                seq=saved.seq,
                method_name=method_name,
                # Small fields: parse the JSON just written (a fresh copy). Big fields:
                # the caller's value, copied -- parsing them back is the slow part.
                state=inflate_state(
                    json.loads(encoded.text),
                    lambda digest: None,
                    run_id=run_id,
                    seq=saved.seq,
                    originals=state,
                ),
                created_at=utc_from_timestamp(saved.created_at),
                meta=json.loads(meta_text),
            )

        return finish

    def save_checkpoint(
        self,
        run_id: str,
        method_name: str,
        state: dict[str, Any],
        *,
        expected_seq: int | None,
        meta: dict[str, Any] | None = None,
        status: str = "running",
        flow_name: str | None = None,
        lease_owner: str | None = None,
    ) -> Checkpoint:
        op, finish = self._save_op(
            run_id,
            method_name,
            state,
            expected_seq=expected_seq,
            meta=meta,
            status=status,
            flow_name=flow_name,
            lease_owner=lease_owner,
        )
        return finish(self._call(op, write=True, what=f"save_checkpoint({run_id!r})"))

    async def asave_checkpoint(
        self,
        run_id: str,
        method_name: str,
        state: dict[str, Any],
        *,
        expected_seq: int | None,
        meta: dict[str, Any] | None = None,
        status: str = "running",
        flow_name: str | None = None,
        lease_owner: str | None = None,
    ) -> Checkpoint:
        op, finish = self._save_op(
            run_id,
            method_name,
            state,
            expected_seq=expected_seq,
            meta=meta,
            status=status,
            flow_name=flow_name,
            lease_owner=lease_owner,
        )
        return finish(await self._acall(op, write=True, what=f"save_checkpoint({run_id!r})"))

    def _begin_op(
        self,
        run_id: str,
        flow_name: str,
        *,
        owner: str | None,
        ttl: float | None,
        fingerprint: str | None,
        info: dict[str, Any] | None,
        method_name: str,
        state: dict[str, Any],
        meta: dict[str, Any] | None,
        expected_seq: int | None,
    ) -> tuple[
        Op[tuple[RunRecord, _sql_ops.SavedCheckpoint]],
        Callable[[tuple[RunRecord, _sql_ops.SavedCheckpoint]], tuple[RunRecord, Checkpoint]],
    ]:
        encoded = encode_state(state)
        meta_text = dumps(meta or {}, what="meta")
        info_text = dumps(info or {}, what="info")
        if owner is not None:
            _rules.lease_ttl(ttl)
        database = self._database()
        op = _sql_ops.begin_run(
            run_id,
            flow_name,
            owner=owner,
            ttl=ttl,
            fingerprint=fingerprint,
            info_text=info_text,
            method_name=method_name,
            encoded=encoded,
            meta_text=meta_text,
            expected_seq=expected_seq,
            at=_rules.now(),
            stored_blobs=database.stored_blobs.get(run_id),
        )

        finish_save = self._finisher(database, run_id, method_name, state, encoded, meta_text)

        def finish(
            result: tuple[RunRecord, _sql_ops.SavedCheckpoint],
        ) -> tuple[RunRecord, Checkpoint]:
            run, saved = result
            return run, finish_save(saved)

        return op, finish

    def begin_run(
        self,
        run_id: str,
        flow_name: str,
        *,
        owner: str | None,
        ttl: float | None = None,
        fingerprint: str | None = None,
        info: dict[str, Any] | None = None,
        method_name: str,
        state: dict[str, Any],
        meta: dict[str, Any] | None = None,
        expected_seq: int | None,
    ) -> tuple[RunRecord, Checkpoint]:
        op, finish = self._begin_op(
            run_id,
            flow_name,
            owner=owner,
            ttl=ttl,
            fingerprint=fingerprint,
            info=info,
            method_name=method_name,
            state=state,
            meta=meta,
            expected_seq=expected_seq,
        )
        return finish(self._call(op, write=True, what=f"begin_run({run_id!r})"))

    async def abegin_run(
        self,
        run_id: str,
        flow_name: str,
        *,
        owner: str | None,
        ttl: float | None = None,
        fingerprint: str | None = None,
        info: dict[str, Any] | None = None,
        method_name: str,
        state: dict[str, Any],
        meta: dict[str, Any] | None = None,
        expected_seq: int | None,
    ) -> tuple[RunRecord, Checkpoint]:
        op, finish = self._begin_op(
            run_id,
            flow_name,
            owner=owner,
            ttl=ttl,
            fingerprint=fingerprint,
            info=info,
            method_name=method_name,
            state=state,
            meta=meta,
            expected_seq=expected_seq,
        )
        return finish(await self._acall(op, write=True, what=f"begin_run({run_id!r})"))

    def end_run(
        self,
        run_id: str,
        method_name: str,
        state: dict[str, Any],
        *,
        owner: str | None,
        expected_seq: int | None,
        meta: dict[str, Any] | None = None,
        status: str = "completed",
    ) -> Checkpoint:
        op, finish = self._save_op(
            run_id,
            method_name,
            state,
            expected_seq=expected_seq,
            meta=meta,
            status=status,
            flow_name=None,
            lease_owner=owner,
            release=True,
        )
        return finish(self._call(op, write=True, what=f"end_run({run_id!r})"))

    async def aend_run(
        self,
        run_id: str,
        method_name: str,
        state: dict[str, Any],
        *,
        owner: str | None,
        expected_seq: int | None,
        meta: dict[str, Any] | None = None,
        status: str = "completed",
    ) -> Checkpoint:
        op, finish = self._save_op(
            run_id,
            method_name,
            state,
            expected_seq=expected_seq,
            meta=meta,
            status=status,
            flow_name=None,
            lease_owner=owner,
            release=True,
        )
        return finish(await self._acall(op, write=True, what=f"end_run({run_id!r})"))

    # -- runs ----------------------------------------------------------------------

    def _create_op(
        self,
        run_id: str,
        flow_name: str,
        parent_run_id: str | None,
        parent_seq: int | None,
        fingerprint: str | None,
        info: dict[str, Any] | None,
        exist_ok: bool,
    ) -> Op[RunRecord]:
        return _sql_ops.create_run(
            run_id,
            flow_name,
            parent_run_id=parent_run_id,
            parent_seq=parent_seq,
            fingerprint=fingerprint,
            info_text=dumps(info or {}, what="info"),
            exist_ok=exist_ok,
            at=_rules.now(),
        )

    def create_run(
        self,
        run_id: str,
        flow_name: str,
        *,
        parent_run_id: str | None = None,
        parent_seq: int | None = None,
        fingerprint: str | None = None,
        info: dict[str, Any] | None = None,
        exist_ok: bool = False,
    ) -> RunRecord:
        op = self._create_op(
            run_id, flow_name, parent_run_id, parent_seq, fingerprint, info, exist_ok
        )
        return self._call(op, write=True, what=f"create_run({run_id!r})")

    async def acreate_run(
        self,
        run_id: str,
        flow_name: str,
        *,
        parent_run_id: str | None = None,
        parent_seq: int | None = None,
        fingerprint: str | None = None,
        info: dict[str, Any] | None = None,
        exist_ok: bool = False,
    ) -> RunRecord:
        op = self._create_op(
            run_id, flow_name, parent_run_id, parent_seq, fingerprint, info, exist_ok
        )
        return await self._acall(op, write=True, what=f"create_run({run_id!r})")

    def get_run(self, run_id: str) -> RunRecord | None:
        return self._call(_sql_ops.get_run(run_id), write=False, what=f"get_run({run_id!r})")

    async def aget_run(self, run_id: str) -> RunRecord | None:
        return await self._acall(_sql_ops.get_run(run_id), write=False, what=f"get_run({run_id!r})")

    @staticmethod
    def _update_op(
        run_id: str, status: str | None, fingerprint: str | None, info: dict[str, Any] | None
    ) -> Op[RunRecord]:
        return _sql_ops.update_run(
            run_id,
            status=None if status is None else _rules.check_status(status),
            fingerprint=fingerprint,
            info_text=None if info is None else dumps(info, what="info"),
            at=_rules.now(),
        )

    def update_run(
        self,
        run_id: str,
        *,
        status: str | None = None,
        fingerprint: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> RunRecord:
        op = self._update_op(run_id, status, fingerprint, info)
        return self._call(op, write=True, what=f"update_run({run_id!r})")

    async def aupdate_run(
        self,
        run_id: str,
        *,
        status: str | None = None,
        fingerprint: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> RunRecord:
        op = self._update_op(run_id, status, fingerprint, info)
        return await self._acall(op, write=True, what=f"update_run({run_id!r})")

    @staticmethod
    def _list_op(
        flow_name: str | None,
        status: str | None,
        parent_run_id: str | None,
        limit: int,
        offset: int,
    ) -> Op[list[RunRecord]]:
        _rules.check_paging(limit, offset)
        if status is not None:
            _rules.check_status(status)
        return _sql_ops.list_runs(
            flow_name=flow_name,
            status=status,
            parent_run_id=parent_run_id,
            limit=limit,
            offset=offset,
        )

    def list_runs(
        self,
        *,
        flow_name: str | None = None,
        status: str | None = None,
        parent_run_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunRecord]:
        op = self._list_op(flow_name, status, parent_run_id, limit, offset)
        return self._call(op, write=False, what="list_runs")

    async def alist_runs(
        self,
        *,
        flow_name: str | None = None,
        status: str | None = None,
        parent_run_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunRecord]:
        op = self._list_op(flow_name, status, parent_run_id, limit, offset)
        return await self._acall(op, write=False, what="list_runs")

    def delete_run(self, run_id: str) -> bool:
        self._database().stored_blobs.pop(run_id, None)
        return self._call(_sql_ops.delete_run(run_id), write=True, what=f"delete_run({run_id!r})")

    async def adelete_run(self, run_id: str) -> bool:
        self._database().stored_blobs.pop(run_id, None)
        return await self._acall(
            _sql_ops.delete_run(run_id), write=True, what=f"delete_run({run_id!r})"
        )

    def _prune_op(self, run_id: str, keep_last: int) -> Op[int]:
        _rules.check_keep_last(keep_last)
        return _sql_ops.prune(self.url.get_backend_name(), run_id, keep_last)

    def prune(self, run_id: str, *, keep_last: int) -> int:
        op = self._prune_op(run_id, keep_last)
        return self._call(op, write=True, what=f"prune({run_id!r})")

    async def aprune(self, run_id: str, *, keep_last: int) -> int:
        op = self._prune_op(run_id, keep_last)
        return await self._acall(op, write=True, what=f"prune({run_id!r})")

    # -- leases --------------------------------------------------------------------

    def acquire_lease(self, run_id: str, owner: str, ttl: float) -> RunRecord:
        op = _sql_ops.acquire_lease(run_id, owner, ttl, _rules.now())
        return self._call(op, write=True, what=f"acquire_lease({run_id!r})")

    async def aacquire_lease(self, run_id: str, owner: str, ttl: float) -> RunRecord:
        op = _sql_ops.acquire_lease(run_id, owner, ttl, _rules.now())
        return await self._acall(op, write=True, what=f"acquire_lease({run_id!r})")

    def renew_lease(self, run_id: str, owner: str, ttl: float) -> None:
        op = _sql_ops.renew_lease(run_id, owner, ttl, _rules.now())
        self._call(op, write=True, what=f"renew_lease({run_id!r})")

    async def arenew_lease(self, run_id: str, owner: str, ttl: float) -> None:
        op = _sql_ops.renew_lease(run_id, owner, ttl, _rules.now())
        await self._acall(op, write=True, what=f"renew_lease({run_id!r})")

    def release_lease(self, run_id: str, owner: str) -> None:
        op = _sql_ops.release_lease(run_id, owner)
        self._call(op, write=True, what=f"release_lease({run_id!r})")

    async def arelease_lease(self, run_id: str, owner: str) -> None:
        op = _sql_ops.release_lease(run_id, owner)
        await self._acall(op, write=True, what=f"release_lease({run_id!r})")


def _noop() -> Op[None]:
    return
    yield  # an operation with no statements: just makes sure the schema is ready


class SQLiteFlowPersistence(SQLAlchemyFlowPersistence):
    """The default backend: one SQLite file, safe for several processes at once.

    ``db_path=None`` uses :func:`~flowkit.persistence.default_db_path`
    (``$FLOWKIT_DATA_DIR/flowkit.db`` or the per-user data folder); the folder is created
    on first use. ``":memory:"`` keeps the database in this process. The file runs in WAL
    mode with ``synchronous=FULL``: a saved checkpoint survives a crash or power loss::

        persistence = SQLiteFlowPersistence("runs.db")
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str] | None = None,
        *,
        secret_key: str | bytes | None = None,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        path = default_db_path() if db_path is None else db_path
        database = str(path) if str(path) == ":memory:" else str(Path(path).expanduser())
        self.db_path = database
        super().__init__(
            URL.create("sqlite+aiosqlite", database=database),
            secret_key=secret_key,
            engine_kwargs=engine_kwargs,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.db_path!r})"
