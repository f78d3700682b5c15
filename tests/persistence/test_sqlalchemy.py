"""The contract on the SQL backends (SQLite file, SQLite in memory, PostgreSQL), and what
is specific to them: schema, blob dedupe, engine sharing, shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from flowkit.persistence import (
    FlowPersistence,
    SQLAlchemyFlowPersistence,
    SQLiteFlowPersistence,
)
from flowkit.testing import PersistenceContract


async def _corrupt_latest_sql(persistence: FlowPersistence, run_id: str) -> None:
    """Overwrite the latest checkpoint's state with text that is not JSON, via SQL."""
    from sqlalchemy import text

    assert isinstance(persistence, SQLAlchemyFlowPersistence)
    database = persistence._database()

    async def damage() -> None:
        await database._start(write=True)
        statement = text(
            "UPDATE flowkit_checkpoints SET state = :bad WHERE run_id = :run_id AND seq = "
            "(SELECT last_seq FROM flowkit_runs WHERE run_id = :run_id)"
        )
        if database.dialect == "sqlite":
            driver = database._sqlite_driver
            await driver.execute(statement.text, {"bad": "{not json", "run_id": run_id})
            await driver.commit()
        else:
            assert database.engine is not None
            async with database.engine.begin() as connection:
                await connection.execute(statement, {"bad": "{not json", "run_id": run_id})

    await database.portal.arun(damage())


class TestSQLiteFileContract(PersistenceContract):
    @pytest.fixture
    def persistence(self, tmp_path: Path) -> Iterator[SQLiteFlowPersistence]:
        store = SQLiteFlowPersistence(tmp_path / "flows.db")
        yield store
        store.close()

    corrupt_latest = staticmethod(lambda p, run_id: _corrupt_latest_sql(p, run_id))  # type: ignore[assignment]


class TestSQLiteMemoryContract(PersistenceContract):
    @pytest.fixture
    async def persistence(self) -> AsyncIterator[SQLAlchemyFlowPersistence]:
        store = SQLAlchemyFlowPersistence("sqlite+aiosqlite://")
        yield store
        await store.aclose()

    corrupt_latest = staticmethod(lambda p, run_id: _corrupt_latest_sql(p, run_id))  # type: ignore[assignment]


@pytest.mark.postgres
class TestPostgresContract(PersistenceContract):
    @pytest.fixture
    def persistence(self, postgres_url: str) -> Iterator[SQLAlchemyFlowPersistence]:
        store = SQLAlchemyFlowPersistence(postgres_url)
        yield store
        store.close()

    corrupt_latest = staticmethod(lambda p, run_id: _corrupt_latest_sql(p, run_id))  # type: ignore[assignment]


@pytest.mark.mysql
class TestMariaDBContract(PersistenceContract):
    @pytest.fixture
    def persistence(self, mysql_url: str) -> Iterator[SQLAlchemyFlowPersistence]:
        store = SQLAlchemyFlowPersistence(mysql_url)
        yield store
        store.close()

    corrupt_latest = staticmethod(lambda p, run_id: _corrupt_latest_sql(p, run_id))  # type: ignore[assignment]
