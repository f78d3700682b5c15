"""Fixtures for the persistence tests: the PostgreSQL server, when there is one."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

POSTGRES_URL = os.environ.get(
    "FLOWKIT_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


async def connect_postgres(url: str, **options: Any) -> Any:
    """An asyncpg connection to the database of the SQLAlchemy ``url``."""
    import asyncpg

    return await asyncpg.connect(
        url.replace("postgresql+asyncpg://", "postgresql://", 1), **options
    )


def _postgres_reachable() -> str | None:
    """None if the server answers, else why not."""
    try:
        import asyncpg
    except ImportError:
        return "asyncpg is not installed (pip install flowkit[postgres])"

    async def probe() -> None:
        connection = await connect_postgres(POSTGRES_URL, timeout=3)
        await connection.close()

    try:
        asyncio.run(probe())
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
        return f"PostgreSQL at {POSTGRES_URL} is unreachable: {exc}"
    return None


@pytest.fixture(scope="session")
def postgres_url() -> str:
    problem = _postgres_reachable()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{problem} (CI is set, so PostgreSQL tests must run)")
        pytest.skip(problem)
    return POSTGRES_URL


@pytest.fixture(scope="session")
def postgres_connect(postgres_url: str) -> Callable[..., Awaitable[Any]]:
    """Opens an asyncpg connection to the test database, as the reachability probe does."""
    return functools.partial(connect_postgres, postgres_url)


MYSQL_URL = os.environ.get("FLOWKIT_TEST_MYSQL_URL", "mysql+asyncmy://root@127.0.0.1:3306/test")


async def connect_mysql(url: str, **options: Any) -> Any:
    """An asyncmy connection to the database of the SQLAlchemy ``url``."""
    import asyncmy
    from sqlalchemy.engine import make_url

    parts = make_url(url)
    return await asyncmy.connect(
        host=parts.host or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        database=parts.database,
        **options,
    )


def _mysql_reachable() -> str | None:
    """None if the MariaDB/MySQL server answers, else why not."""
    try:
        import asyncmy
    except ImportError:
        return "asyncmy is not installed (pip install flowkit[mysql])"

    async def probe() -> None:
        connection = await connect_mysql(MYSQL_URL, connect_timeout=3)
        connection.close()

    try:
        asyncio.run(probe())
    except (OSError, asyncio.TimeoutError, asyncmy.errors.Error) as exc:
        from sqlalchemy.engine import make_url

        where = make_url(MYSQL_URL).render_as_string()  # password hidden
        return f"MariaDB/MySQL at {where} is unreachable: {exc}"
    return None


@pytest.fixture(scope="session")
def mysql_url() -> str:
    problem = _mysql_reachable()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{problem} (CI is set, so MariaDB tests must run)")
        pytest.skip(problem)
    return MYSQL_URL


@pytest.fixture(scope="session")
def mysql_connect(mysql_url: str) -> Callable[..., Awaitable[Any]]:
    """Opens an asyncmy connection to the test database, as the reachability probe does."""
    return functools.partial(connect_mysql, mysql_url)
