"""Blocking reads of a SQLite file answered on the caller's thread: no loop, no thread hop.

The blocking forms of the built-in SQLite backend's reads (``load_checkpoint``,
``load_state``, ``get_run``, ``history``, ``list_runs``) run inline
(:func:`flowkit._concurrency.run_inline`) and end here, on the calling thread, on a
read-only connection of this process: opened through SQLAlchemy's synchronous SQLite
engine (``sqlite+pysqlite``, URI ``mode=ro``, ``PRAGMA query_only``) and taken from a small
pool for one read at a time, so a connection is never used by two threads at once. flowkit
keeps its files in WAL mode, so such a read never waits for a writer and sees everything
committed before it began. A one-statement read runs in autocommit; one of several
statements (a checkpoint with blob-stored fields, a history) in one read transaction, one
snapshot. Writes, and every awaited call, keep going through the aiosqlite connection.

:meth:`ReadConnections.close` closes the idle connections at once and the ones in use as
their reads end. A forked child neither uses nor closes its parent's connections (SQLite
forbids carrying one across ``fork``): it opens its own.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from flowkit._concurrency import NotInline
from flowkit.persistence import _sql_ops
from flowkit.persistence._sql_ops import Op
from flowkit.persistence._sql_url import SQLITE_BUSY_TIMEOUT_MS

T = TypeVar("T")

# Idle connections kept per file; more threads reading at once open and close their own.
KEEP_IDLE = 8

# Connections a forked child inherited: never used there, and never closed there either
# (closing one would act on the parent's locks and files), so kept referenced for good.
_inherited: list[sqlite3.Connection] = []


def _read_only(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only = ON")
    # WAL readers do not wait for writers; this covers the rare moments a reader must
    # (another connection recovering the WAL after a crash).
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


class ReadConnections:
    """Read-only connections to one SQLite file, each used by one thread at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._engine: Engine | None = None
        self._pid = os.getpid()
        self._closed = False
        self._tables_found = False  # flowkit's tables seen: later reads skip the check

    def read(self, op: Op[Any], *, fast: Op[Any] | None, empty: Any) -> Any:
        """Run the read ``op`` (``fast`` first, see ``Database.execute``) on a connection
        of this thread's own for its duration; ``empty`` when there is no flowkit
        database (no file, which is not created, or no tables). NotInline, having run
        nothing, when no read-only connection can be had (closed, or the file cannot be
        opened read-only): the caller then takes the usual path."""
        try:
            connection = self._take()
        except BaseException:
            _close_ops(op, fast)
            raise
        if connection is None:  # no such file
            _close_ops(op, fast)
            return empty
        try:
            if not self._tables_found:
                if not _drive(connection, _sql_ops.read_schema_version("sqlite"), None):
                    _close_ops(op, fast)
                    return empty
                self._tables_found = True  # (older schema versions read the same)
            return _drive(connection, op, fast)
        finally:
            self._give_back(connection)

    def _take(self) -> sqlite3.Connection | None:
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's connections are not ours
                _inherited.extend(self._idle)
                self._idle, self._pid = [], os.getpid()
            if self._closed:
                raise NotInline
            if self._idle:
                return self._idle.pop()
            if self._engine is None:
                self._engine = self._create_engine()
            engine = self._engine
        if file_missing(self.path):
            return None
        try:
            proxy = engine.raw_connection()
        except DBAPIError:
            raise NotInline from None  # the usual path opens it, or says why it cannot
        connection: sqlite3.Connection = proxy.driver_connection  # type: ignore[assignment]
        proxy.detach()  # ours from now on: closed by us, never handed back to a pool
        return connection

    def _create_engine(self) -> Engine:
        # mode=ro: this connection cannot write the file (nor create it); uri=true lets
        # SQLite read the mode from a file: URI (the absolute path, percent-encoded).
        url = URL.create(
            "sqlite+pysqlite", database=self.path.as_uri(), query={"mode": "ro", "uri": "true"}
        )
        engine = create_engine(
            url,
            poolclass=NullPool,  # the pool is ours (see _take)
            connect_args={"check_same_thread": False, "isolation_level": None},
        )
        event.listen(engine, "connect", _read_only)
        return engine

    def _give_back(self, connection: sqlite3.Connection) -> None:
        with self._lock:
            keep = not self._closed and self._pid == os.getpid() and len(self._idle) < KEEP_IDLE
            if keep:
                self._idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        """Close the idle connections now; those in use close as their reads end, and
        later reads raise NotInline."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            engine, self._engine = self._engine, None
            if self._pid != os.getpid():
                _inherited.extend(idle)
                idle = []
        for connection in idle:
            connection.close()
        if engine is not None:
            engine.dispose()


def file_missing(path: Path) -> bool:
    """True for a SQLite file that does not exist but could be created (a read answers
    "nothing here" and creates nothing); a path that cannot be (under a regular file) is
    opened anyway, so the read reports why."""
    if path.expanduser().exists():
        return False
    existing = next((p for p in path.expanduser().absolute().parents if p.exists()), None)
    return existing is not None and existing.is_dir()


def _close_ops(op: Op[Any], fast: Op[Any] | None) -> None:
    op.close()
    if fast is not None:
        fast.close()


def _drive(driver: sqlite3.Connection, op: Op[T], fast: Op[Any] | None) -> T:
    """Run the read ``op`` on ``driver`` (autocommit mode): ``fast``, if given, first as
    one statement in autocommit; when it answers None, ``op`` in one read transaction."""
    if driver.in_transaction:  # left open by a read interrupted half way
        driver.rollback()
    if fast is not None:
        stmt = next(fast)
        rows = driver.execute(stmt.sql, stmt.params).fetchall()
        try:
            fast.send(rows)
        except StopIteration as done:
            if done.value is not None:
                op.close()
                return done.value  # type: ignore[no-any-return]
        else:
            fast.close()
            raise RuntimeError("a single-statement operation yielded a second statement")
    driver.execute("BEGIN")
    try:
        stmt = next(op)
        while True:
            stmt = op.send(driver.execute(stmt.sql, stmt.params).fetchall())
    except StopIteration as done:
        driver.execute("COMMIT")
        return done.value  # type: ignore[no-any-return]
    except BaseException:
        if driver.in_transaction:
            driver.rollback()
        raise
