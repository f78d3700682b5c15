"""Which database a URL means, and how each SQLite connection is set up.

flowkit talks to databases through SQLAlchemy's asyncio engine, so a URL must end up
naming an asyncio driver. A URL without one gets flowkit's: ``sqlite://`` aiosqlite,
``postgresql://`` and ``postgres://`` asyncpg (SQLAlchemy's own default for PostgreSQL
is psycopg, which flowkit does not install), ``mysql://`` and ``mariadb://`` asyncmy
(SQLAlchemy's default there is the synchronous mysqlclient). A URL naming another
asyncio driver (``aiomysql``, ``psycopg``) is used as written when that driver is
installed; a missing driver, or a synchronous one (``psycopg2``, ``pg8000``,
``pysqlite``, ``pymysql``, ``mysqldb``), is refused with what to install or write
instead. Every SQLite connection waits for the write lock instead of failing, and
commits durably (WAL, ``synchronous=FULL``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url

from flowkit.exceptions import FlowConfigurationError
from flowkit.persistence import _schema

SQLITE_BUSY_TIMEOUT_MS = 30_000

# backend name as written -> the driver a URL without one gets
_DEFAULT_DRIVER = {
    "sqlite": "aiosqlite",
    "postgresql": "asyncpg",
    "mysql": "asyncmy",
    "mariadb": "asyncmy",
}

# (dialect, asyncio driver) -> (module that must be importable, how to install it)
_ASYNC_DRIVERS = {
    ("sqlite", "aiosqlite"): ("aiosqlite", "pip install flowkit"),
    ("postgresql", "asyncpg"): ("asyncpg", "pip install 'flowkit[postgres]'"),
    ("postgresql", "psycopg"): ("psycopg", "pip install 'psycopg[binary]'"),
    ("postgresql", "psycopg_async"): ("psycopg", "pip install 'psycopg[binary]'"),
    ("mysql", "asyncmy"): ("asyncmy", "pip install 'flowkit[mysql]'"),
    ("mysql", "aiomysql"): ("aiomysql", "pip install aiomysql"),
    ("mariadb", "asyncmy"): ("asyncmy", "pip install 'flowkit[mysql]'"),
    ("mariadb", "aiomysql"): ("aiomysql", "pip install aiomysql"),
}

_EXAMPLES = (
    "'sqlite+aiosqlite:///path.db', 'postgresql+asyncpg://user@host/db' or "
    "'mysql+asyncmy://user@host/db'"
)

# backend name -> the SQL flowkit speaks to it (MariaDB is MySQL's dialect for flowkit)
_FLOWKIT_DIALECT = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
}


def dialect_of(url: URL) -> str:
    """The dialect flowkit's SQL is written for: ``sqlite``, ``postgresql`` or ``mysql``
    (MariaDB included), for a URL :func:`normalise_url` accepted."""
    return _FLOWKIT_DIALECT[url.get_backend_name()]


def normalise_url(url: str | URL) -> URL:
    """``url`` with the asyncio driver flowkit will use; FlowConfigurationError for a
    database flowkit does not support or a driver it cannot use."""
    parsed = make_url(url)
    # The name as written (``URL.get_driver_name`` would load SQLAlchemy's default
    # driver, psycopg, for a plain postgresql:// URL).
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "postgres":  # the scheme many hosting platforms hand out
        backend = "postgresql"
    if _FLOWKIT_DIALECT.get(backend) not in _schema.SUPPORTED_DIALECTS:
        raise FlowConfigurationError(
            f"SQLAlchemyFlowPersistence supports SQLite, PostgreSQL and MariaDB/MySQL URLs, got "
            f"{parsed.render_as_string()!r}. Use {_EXAMPLES}, or write your own "
            "FlowPersistence."
        )
    driver = driver or _DEFAULT_DRIVER[backend]
    known = _ASYNC_DRIVERS.get((backend, driver))
    if known is None:
        raise FlowConfigurationError(
            f"The URL {parsed.render_as_string()!r} names the driver {driver!r}, which "
            "flowkit cannot use: it talks to the database through SQLAlchemy's asyncio "
            f"engine. Write the URL as {backend}+{_DEFAULT_DRIVER[backend]}://... "
            f"({_ASYNC_DRIVERS[(backend, _DEFAULT_DRIVER[backend])][1]})."
        )
    module, install = known
    if importlib.util.find_spec(module) is None:
        raise FlowConfigurationError(
            f"The URL {parsed.render_as_string()!r} needs the {driver} driver, which is not "
            f"installed: {install}."
        )
    return parsed.set(drivername=f"{backend}+{driver}")


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
    # This connection's one-statement writes (TEMP objects, see _schema.flowkit_writes).
    for ddl in _schema.SQLITE_CONNECTION_SCHEMA:
        cursor.execute(ddl)
    cursor.close()


def mysql_session(dbapi_connection: Any, _record: Any) -> None:
    """Strict mode on every MariaDB/MySQL connection: a run id or value too long for its
    column is an error, never silently cut short (servers may run without it)."""
    cursor = dbapi_connection.cursor()
    cursor.execute(
        "SET SESSION sql_mode = IF(@@SESSION.sql_mode = '', 'STRICT_ALL_TABLES', "
        "CONCAT(@@SESSION.sql_mode, ',STRICT_ALL_TABLES'))"
    )
    cursor.close()
