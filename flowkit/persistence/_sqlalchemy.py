"""SQLAlchemyFlowPersistence (any SQLAlchemy async URL) and SQLiteFlowPersistence.

The backends are thin: each method checks its arguments, builds an operation from
``_sql_ops`` and runs it on the shared :class:`~._sql_database.Database` for its URL
(``_sql_database``: engine, portal thread, registry); the compare-and-set checkpoint
writes are built here too. URL normalisation and SQLite connection setup live in
``_sql_url``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.engine import URL

from flowkit._concurrency import NotInline, Portal, inline, keep_from_parent
from flowkit.persistence import _base, _rules, _sql_mysql, _sql_ops, _sql_postgres
from flowkit.persistence._base import FlowPersistence
from flowkit.persistence._paths import default_db_path
from flowkit.persistence._records import (
    Checkpoint,
    EncodedState,
    RunRecord,
    dumps,
    encode_state,
    inflate_state,
    utc_from_timestamp,
)
from flowkit.persistence._sql_database import (
    Database,
    DatabaseClosed,
    LeaseRef,
    acquire_database,
    release_database,
)
from flowkit.persistence._sql_ops import Op
from flowkit.persistence._sql_url import dialect_of, normalise_url, sqlite_file

T = TypeVar("T")

_BLOB_CACHE_RUNS = 1024


class SQLAlchemyFlowPersistence(FlowPersistence):
    """Runs and checkpoints in a SQL database reached through SQLAlchemy's asyncio engine.

    ``url`` is an SQLite, PostgreSQL or MariaDB/MySQL URL (``sqlite+aiosqlite:///runs.db``,
    ``postgresql+asyncpg://user@host/db``, ``mysql+asyncmy://user@host/db``; plain
    ``sqlite://``, ``postgresql://``, ``postgres://``, ``mysql://`` and ``mariadb://``
    pick those drivers; ``mysql+aiomysql://`` works too). Backends with the same URL
    share one engine and connection pool. The tables are created by the first write;
    reads never write (a database without them reads as empty); nothing connects at
    construction::

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
    # SQLite: aiosqlite's connection takes calls from any loop, so a blocking call runs
    # on the caller's own loop (see FlowPersistence._any_loop); PostgreSQL through asyncpg
    # too, on a connection the caller's thread owns (or through the portal when it gets
    # none: see _sql_pg_connections); set per URL in __init__.
    _any_loop = True
    # SQLite file: the blocking forms of the reads are answered on the caller's thread,
    # on a read-only connection (see _sql_sqlite_reads); set per URL in __init__.
    _inline_ops = frozenset({"load_checkpoint", "load_state", "get_run", "history", "list_runs"})

    def __init__(
        self,
        url: str | URL,
        *,
        secret_key: str | bytes | None = None,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.url = normalise_url(url)
        self._any_loop = type(self)._any_loop and (
            self._dialect() == "sqlite"
            or (self._dialect() == "postgresql" and self.url.get_driver_name() == "asyncpg")
        )
        if self._dialect() != "sqlite" or sqlite_file(self.url) is None:
            self._inline_ops = frozenset()  # a server, or SQLite in memory
        self.secret_key = secret_key
        self._engine_kwargs = dict(engine_kwargs or {})
        self._database_handle: Database | None = None
        self._handle_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url.render_as_string(hide_password=True)!r})"

    def _dialect(self) -> str:
        return dialect_of(self.url)

    def _mysql(self) -> bool:
        return self._dialect() == "mysql"

    def _database(self) -> Database:
        handle = self._database_handle
        if handle is None or handle.pid != os.getpid():
            with self._handle_lock:
                handle = self._database_handle
                if handle is not None and handle.pid != os.getpid():
                    # Forked: the parent's connections and threads are not ours to use
                    # or close; this process opens its own.
                    keep_from_parent(handle)
                    handle = None
                if handle is None:
                    handle = self._database_handle = acquire_database(self.url, self._engine_kwargs)
        return handle

    def _home_portal(self) -> Portal | None:
        # PostgreSQL and MariaDB: every operation runs on the database's portal anyway;
        # a blocking call is sent straight there. Not for a subclass that brings its own
        # async operation (its resources may be bound elsewhere: _any_loop says so).
        if self._dialect() == "sqlite" or not type(self)._any_loop:
            return None
        database = self._database()
        return None if database.closed else database.portal

    async def _acall(
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
        if inline():  # a blocking read run inline (FlowPersistence._inline_ops)
            database = self._database()
            if write or database.closed:
                op.close()
                if fast is not None:
                    fast.close()
                raise NotInline
            return database.read_inline(op, what=what, empty=empty, fast=fast)
        while True:
            try:
                return await self._database().acall(
                    op, write=write, what=what, takes=takes, gives=gives, empty=empty, fast=fast
                )
            except DatabaseClosed:  # closed under the call, before it ran: reopen
                self._forget(closed=True)

    # -- lifecycle -----------------------------------------------------------------

    async def ainit_db(self) -> None:
        await self._acall(_noop(), write=True, what="init_db")

    def close(self) -> None:
        self._forget(closed=False)

    def _forget(self, *, closed: bool) -> None:
        """Release our Database; ``closed``: drop it only if it was shut down already."""
        with self._handle_lock:
            handle = self._database_handle
            if handle is None or (closed and not handle.closed):
                return
            self._database_handle = None
            if handle.pid != os.getpid():
                keep_from_parent(handle)  # the parent's (see _database)
                return
        if not closed:
            release_database(handle)

    # -- required ------------------------------------------------------------------

    async def asave_state(
        self, flow_uuid: str, method_name: str, state_data: dict[str, Any]
    ) -> None:
        await self.asave_checkpoint(flow_uuid, method_name, state_data, expected_seq=None)

    async def aload_state(self, flow_uuid: str) -> dict[str, Any] | None:
        checkpoint = await self.aload_checkpoint(flow_uuid)
        return None if checkpoint is None else checkpoint.state

    # -- history -------------------------------------------------------------------

    async def ahistory(self, run_id: str) -> list[Checkpoint]:
        return await self._acall(
            _sql_ops.history(run_id), write=False, what=f"history({run_id!r})", empty=[]
        )

    async def aload_checkpoint(self, run_id: str, seq: int | None = None) -> Checkpoint | None:
        dialect = self._dialect()
        op = _sql_ops.load_checkpoint(dialect, run_id, seq)
        # SQLite: the lookup alone in autocommit, one call to aiosqlite's thread instead
        # of three (BEGIN, SELECT, COMMIT); a checkpoint with blobs is read in one
        # transaction. (PostgreSQL reads in autocommit already.)
        fast = _sql_ops.load_checkpoint_statement(run_id, seq) if dialect == "sqlite" else None
        found: Checkpoint | bool | None = await self._acall(
            op, write=False, what=f"load_checkpoint({run_id!r}, {seq!r})", fast=fast
        )
        return found if isinstance(found, Checkpoint) else None

    # -- runs ----------------------------------------------------------------------

    # create_run, update_run and list_runs are FlowPersistence's: they hand their
    # arguments to the seams below as one value.

    async def _acreate_run(self, new: _base.NewRun) -> RunRecord:
        create = _sql_mysql.create_run if self._mysql() else _sql_ops.create_run
        info_text = dumps(new.info or {}, what="info")
        op = create(
            _sql_ops.NewRunRow(
                new.run_id,
                new.flow_name,
                new.parent_run_id,
                new.parent_seq,
                new.fingerprint,
                info_text,
                new.exist_ok,
                _rules.now(),
            )
        )
        return await self._acall(op, write=True, what=f"create_run({new.run_id!r})")

    async def aget_run(self, run_id: str) -> RunRecord | None:
        return await self._acall(_sql_ops.get_run(run_id), write=False, what=f"get_run({run_id!r})")

    async def _aupdate_run(self, update: _base.RunUpdate) -> RunRecord:
        status, info = update.status, update.info
        change = _sql_ops.RunChange(
            update.run_id,
            None if status is None else _rules.check_status(status),
            update.fingerprint,
            None if info is None else dumps(info, what="info"),
            _rules.now(),
            update.lease_owner,
        )
        op = (_sql_mysql.update_run if self._mysql() else _sql_ops.update_run)(change)
        return await self._acall(op, write=True, what=f"update_run({update.run_id!r})")

    async def _alist_runs(self, query: _base.RunQuery) -> list[RunRecord]:
        status, limit, offset = query.status, query.limit, query.offset
        wanted = _rules.check_list_filters(status, limit, offset, query.metadata)
        op = _sql_ops.list_runs(
            flow_name=query.flow_name,
            status=status,
            parent_run_id=query.parent_run_id,
            limit=limit,
            offset=offset,
            metadata=wanted,
        )
        return await self._acall(op, write=False, what="list_runs", empty=[])

    def _delete_op(self, run_id: str) -> Op[bool]:
        self._database().stored_blobs.pop(run_id, None)
        return (_sql_mysql.delete_run if self._mysql() else _sql_ops.delete_run)(run_id)

    async def adelete_run(self, run_id: str) -> bool:
        op = self._delete_op(run_id)
        return await self._acall(op, write=True, what=f"delete_run({run_id!r})")

    def _prune_op(self, run_id: str, keep_last: int) -> Op[int]:
        _rules.check_keep_last(keep_last)
        prune = _sql_mysql.prune if self._mysql() else _sql_ops.prune
        return prune(self._dialect(), run_id, keep_last)

    async def aprune(self, run_id: str, *, keep_last: int) -> int:
        op = self._prune_op(run_id, keep_last)
        return await self._acall(op, write=True, what=f"prune({run_id!r})")

    # -- leases --------------------------------------------------------------------

    def _acquire_op(self, run_id: str, owner: str, ttl: float) -> Op[RunRecord]:
        acquire = _sql_mysql.acquire_lease if self._mysql() else _sql_ops.acquire_lease
        return acquire(self._dialect(), run_id, owner, ttl, _rules.now())

    def _claim_op(
        self, run_id: str, owner: str, ttl: float
    ) -> Op[tuple[RunRecord, Checkpoint | None]]:
        claim = _sql_mysql.claim_run if self._mysql() else _sql_ops.claim_run
        return claim(self._dialect(), run_id, owner, ttl, _rules.now())

    def _renew_op(self, run_id: str, owner: str, ttl: float) -> Op[None]:
        renew = _sql_mysql.renew_lease if self._mysql() else _sql_ops.renew_lease
        return renew(run_id, owner, ttl, _rules.now())

    async def aacquire_lease(self, run_id: str, owner: str, ttl: float) -> RunRecord:
        op = self._acquire_op(run_id, owner, ttl)
        what = f"acquire_lease({run_id!r})"
        return await self._acall(op, write=True, what=what, takes=(owner, run_id))

    async def aclaim_run(
        self, run_id: str, owner: str, ttl: float
    ) -> tuple[RunRecord, Checkpoint | None]:
        op = self._claim_op(run_id, owner, ttl)
        fast = None
        if self._dialect() == "postgresql":
            fast = _sql_postgres.claim_statement(run_id, owner, ttl, _rules.now())
        what = f"claim_run({run_id!r})"
        return await self._acall(op, write=True, what=what, takes=(owner, run_id), fast=fast)

    async def arenew_lease(self, run_id: str, owner: str, ttl: float) -> None:
        op = self._renew_op(run_id, owner, ttl)
        what = f"renew_lease({run_id!r})"
        await self._acall(op, write=True, what=what, takes=(owner, run_id))

    async def arelease_lease(self, run_id: str, owner: str) -> None:
        op = _sql_ops.release_lease(run_id, owner)
        what = f"release_lease({run_id!r})"
        await self._acall(op, write=True, what=what, gives=(owner, run_id))

    # -- checkpoint writes: save_checkpoint, begin_run, end_run ---------------------
    #
    # The public methods are FlowPersistence's: they hand their arguments to the seams
    # below as one value. Each write is built by ``_save_op`` / ``_begin_op``: the state is
    # encoded before anything touches the database, the operation skips the big fields
    # this process already stored for the run, and a committed save is turned into the
    # Checkpoint returned to the caller.

    def _save_op(
        self, write: _base.CheckpointWrite
    ) -> tuple[
        Op[_sql_ops.SavedCheckpoint],
        Op[_sql_ops.SavedCheckpoint | None] | None,
        Callable[[_sql_ops.SavedCheckpoint], Checkpoint],
    ]:
        _rules.check_status(write.status)
        run_id, release = write.run_id, write.release
        encoded = encode_state(write.state)
        meta_text = dumps(write.meta or {}, what="meta")
        database = self._database()
        append = _sql_ops.Append(
            run_id,
            write.method_name,
            encoded,
            meta_text,
            status=write.status,
            flow_name=write.flow_name,
            expected_seq=write.expected_seq,
            lease_owner=write.lease_owner,
            at=_rules.now(),
            stored_blobs=database.stored_blobs.get(run_id),
            release=release,
        )
        save = (
            _sql_mysql.save_checkpoint if database.dialect == "mysql" else _sql_ops.save_checkpoint
        )
        op = save(append)
        fast: Op[_sql_ops.SavedCheckpoint | None] | None = None
        if database.dialect == "sqlite" and not release:
            fast = _sql_ops.save_checkpoint_statement(append)
        elif database.dialect == "sqlite":
            fast = _sql_ops.end_run_statement(append)
        elif database.dialect == "postgresql":
            fast = _sql_postgres.save_statement(append)
        return op, fast, self._finisher(database, run_id, write.method_name, encoded, meta_text)

    @staticmethod
    def _finisher(
        database: Database,
        run_id: str,
        method_name: str,
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

            def parse() -> tuple[dict[str, Any], dict[str, Any]]:
                # From the JSON written (not the caller's objects, which may have
                # changed since): a fresh copy of exactly what is stored.
                state_copy = inflate_state(
                    json.loads(encoded.text), encoded.blobs.get, run_id=run_id, seq=saved.seq
                )
                return state_copy, json.loads(meta_text)

            # Parsed on first access: the engine reads only ``seq``.
            return Checkpoint.deferred(
                run_id, saved.seq, method_name, utc_from_timestamp(saved.created_at), parse
            )

        return finish

    async def _awrite_checkpoint(self, write: _base.CheckpointWrite) -> Checkpoint:
        op, fast, finish = self._save_op(write)
        owner, run_id = write.lease_owner, write.run_id
        gives = (owner, run_id) if write.release and owner is not None else None
        what = f"{'end_run' if write.release else 'save_checkpoint'}({run_id!r})"
        return finish(await self._acall(op, write=True, what=what, gives=gives, fast=fast))

    def _begin_op(
        self, start: _base.RunStart
    ) -> tuple[
        Op[tuple[RunRecord, _sql_ops.SavedCheckpoint]],
        Op[tuple[RunRecord, _sql_ops.SavedCheckpoint] | None] | None,
        Callable[[tuple[RunRecord, _sql_ops.SavedCheckpoint]], tuple[RunRecord, Checkpoint]],
    ]:
        run_id, owner, ttl = start.run_id, start.owner, start.ttl
        encoded = encode_state(start.state)
        meta_text = dumps(start.meta or {}, what="meta")
        info_text = dumps(start.info or {}, what="info")
        if owner is not None:
            _rules.lease_ttl(ttl)
        database = self._database()
        begin = _sql_ops.Start(
            run_id,
            start.flow_name,
            owner=owner,
            ttl=ttl,
            fingerprint=start.fingerprint,
            info_text=info_text,
            method_name=start.method_name,
            encoded=encoded,
            meta_text=meta_text,
            expected_seq=start.expected_seq,
            at=_rules.now(),
            stored_blobs=database.stored_blobs.get(run_id),
        )
        op = (_sql_mysql.begin_run if database.dialect == "mysql" else _sql_ops.begin_run)(
            database.dialect, begin
        )
        fast = None
        one_statement = {
            "sqlite": _sql_ops.start_run_statement,
            "postgresql": _sql_postgres.begin_statement,
        }.get(database.dialect)
        if one_statement is not None:
            fast = one_statement(begin)

        finish_save = self._finisher(database, run_id, start.method_name, encoded, meta_text)

        def finish(
            result: tuple[RunRecord, _sql_ops.SavedCheckpoint],
        ) -> tuple[RunRecord, Checkpoint]:
            run, saved = result
            return run, finish_save(saved)

        return op, fast, finish

    async def _abegin_run(self, start: _base.RunStart) -> tuple[RunRecord, Checkpoint]:
        op, fast, finish = self._begin_op(start)
        takes = None if start.owner is None else (start.owner, start.run_id)
        what = f"begin_run({start.run_id!r})"
        return finish(await self._acall(op, write=True, what=what, takes=takes, fast=fast))


def _noop() -> Op[None]:
    return
    yield  # an operation with no statements: the write start creates the schema


class SQLiteFlowPersistence(SQLAlchemyFlowPersistence):
    """The default backend: one SQLite file, safe for several processes at once.

    ``db_path=None`` uses :func:`~flowkit.persistence.default_db_path`
    (``$FLOWKIT_DATA_DIR/flowkit.db`` or the per-user data folder); the folder and file
    are created by the first write. ``":memory:"`` keeps the database in this process.
    The file runs in WAL mode with ``synchronous=FULL``: a saved checkpoint survives a
    crash or power loss::

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
