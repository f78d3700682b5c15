"""Running one operation (a statement generator of ``_sql_ops``) on a connection.

SQLite: statements go to aiosqlite's connection through its public coroutine API
(``execute_fetchall``, ``executemany``, ``commit``, ``rollback``); the connection runs
in autocommit mode, so an operation opens its own transaction (``BEGIN IMMEDIATE`` for
a write) and a single-statement operation (:func:`drive_sqlite_statement`) is a
transaction by itself. The caller holds the connection's lock, so operations never
interleave on it. Other databases: each statement is awaited on an SQLAlchemy async
connection whose transaction the caller owns.
"""

from __future__ import annotations

import contextlib
import functools
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import TextClause

from flowkit.persistence._schema import WRITE_REFUSED
from flowkit.persistence._sql_ops import Op

T = TypeVar("T")

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
