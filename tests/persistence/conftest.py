"""Fixtures for the persistence tests: the PostgreSQL server, when there is one."""

from __future__ import annotations

import asyncio
import os

import pytest

POSTGRES_URL = os.environ.get(
    "FLOWKIT_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def _postgres_reachable() -> str | None:
    """None if the server answers, else why not."""
    try:
        import asyncpg
    except ImportError:
        return "asyncpg is not installed (pip install flowkit[postgres])"

    async def probe() -> None:
        dsn = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")
        connection = await asyncpg.connect(dsn, timeout=3)
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


MYSQL_URL = os.environ.get("FLOWKIT_TEST_MYSQL_URL", "mysql+asyncmy://root@127.0.0.1:3306/test")


def _mysql_reachable() -> str | None:
    """None if the MariaDB/MySQL server answers, else why not."""
    try:
        import asyncmy
    except ImportError:
        return "asyncmy is not installed (pip install flowkit[mysql])"
    from sqlalchemy.engine import make_url

    url = make_url(MYSQL_URL)

    async def probe() -> None:
        connection = await asyncmy.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 3306,
            user=url.username or "root",
            password=url.password or "",
            db=url.database,
            connect_timeout=3,
        )
        connection.close()

    try:
        asyncio.run(probe())
    except (OSError, asyncio.TimeoutError, asyncmy.errors.Error) as exc:
        return f"MariaDB/MySQL at {url.render_as_string()} is unreachable: {exc}"
    return None


@pytest.fixture(scope="session")
def mysql_url() -> str:
    problem = _mysql_reachable()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{problem} (CI is set, so MariaDB tests must run)")
        pytest.skip(problem)
    return MYSQL_URL
