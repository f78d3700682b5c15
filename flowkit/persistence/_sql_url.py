"""Which database a URL means, and how each SQLite connection is set up.

Plain ``sqlite://`` / ``postgresql://`` URLs get the asyncio drivers (aiosqlite, asyncpg);
other databases are refused with what to use instead. Every SQLite connection waits for
the write lock instead of failing, and commits durably (WAL, ``synchronous=FULL``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url

from flowkit.exceptions import FlowConfigurationError
from flowkit.persistence import _schema

SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalise_url(url: str | URL) -> URL:
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


def sqlite_file(url: URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def sqlite_pragmas(in_memory: bool, dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    if not in_memory:
        cursor.execute("PRAGMA journal_mode = WAL")
    # FULL: every committed checkpoint is on disk, even in WAL mode.
    cursor.execute("PRAGMA synchronous = FULL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()
