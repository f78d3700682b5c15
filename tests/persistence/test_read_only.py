"""Reading never writes: listing and showing runs do not take the write lock, do not wait
for another writer, and do not create a database or its tables."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from flowkit.persistence import SQLAlchemyFlowPersistence, SQLiteFlowPersistence

# Far below the 30 s SQLite busy timeout a read would hit if it waited for the writer,
# far above what a read takes on a loaded machine.
PROMPT = 10


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "flows.db"
    backend = SQLiteFlowPersistence(path)
    backend.save_state("r1", "start", {"id": "r1", "n": 1})
    backend.close()
    return path


@pytest.fixture
def writer(db_path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection in the middle of a write transaction (it holds the write lock)."""
    connection = sqlite3.connect(db_path, isolation_level=None)
    connection.execute("BEGIN IMMEDIATE")
    connection.execute("UPDATE flowkit_runs SET updated_at = updated_at + 1")
    yield connection
    connection.execute("ROLLBACK")
    connection.close()


def _promptly(call: Callable[[], Any]) -> Any:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result(timeout=PROMPT)


def _tables(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as connection:
        return {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}


def test_backend_reads_do_not_wait_for_a_writer(db_path: Path, writer: sqlite3.Connection) -> None:
    """A fresh backend object answers list_runs, get_run, history, load_checkpoint and
    load_state while another connection holds the write lock."""
    backend = SQLiteFlowPersistence(db_path)
    try:

        def reads() -> tuple[Any, ...]:
            latest = backend.load_checkpoint("r1")
            return (
                [run.run_id for run in backend.list_runs()],
                backend.get_run("r1") is not None,
                len(backend.history("r1")),
                latest.seq if latest is not None else None,
                backend.load_state("r1"),
            )

        assert _promptly(reads) == (["r1"], True, 1, 1, {"id": "r1", "n": 1})
    finally:
        backend.close()


async def test_async_reads_do_not_wait_for_a_writer(
    db_path: Path, writer: sqlite3.Connection
) -> None:
    """The awaitable reads of a fresh backend answer while another connection writes."""
    backend = SQLiteFlowPersistence(db_path)
    try:
        runs = await backend.alist_runs()
        state = await backend.aload_state("r1")
        assert ([run.run_id for run in runs], state) == (["r1"], {"id": "r1", "n": 1})
    finally:
        await backend.aclose()


def test_cli_runs_does_not_wait_for_a_writer(db_path: Path, writer: sqlite3.Connection) -> None:
    """`flowkit runs` in a new process lists the runs while another connection writes."""
    result = subprocess.run(
        [sys.executable, "-m", "flowkit.cli", "runs", "--db", str(db_path)],
        capture_output=True,
        text=True,
        timeout=PROMPT + 20,  # interpreter start-up on a loaded machine comes on top
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert "r1" in result.stdout


def test_cli_show_does_not_wait_for_a_writer(db_path: Path, writer: sqlite3.Connection) -> None:
    """`flowkit show` in a new process shows the run while another connection writes."""
    result = subprocess.run(
        [sys.executable, "-m", "flowkit.cli", "show", "r1", "--db", str(db_path)],
        capture_output=True,
        text=True,
        timeout=PROMPT + 20,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert "r1" in result.stdout


def test_read_of_a_missing_file_creates_nothing(tmp_path: Path) -> None:
    """Reading through a backend whose SQLite file does not exist answers "no runs" and
    creates neither the file nor its folder."""
    path = tmp_path / "not-yet" / "flows.db"
    backend = SQLiteFlowPersistence(path)
    try:
        assert backend.list_runs() == []
        assert backend.get_run("r1") is None
        assert backend.load_state("r1") is None
        assert backend.history("r1") == []
    finally:
        backend.close()
    assert not path.parent.exists()


def test_read_of_a_database_without_flowkit_tables_writes_nothing(tmp_path: Path) -> None:
    """A SQLite database that flowkit never wrote to reads as empty and is left as it was."""
    path = tmp_path / "other.db"
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("CREATE TABLE mine (x INTEGER)")
    backend = SQLiteFlowPersistence(path)
    try:
        assert backend.list_runs() == []
        assert backend.load_checkpoint("r1") is None
        assert _tables(path) == {"mine"}
    finally:
        backend.close()


def test_first_write_after_reads_creates_the_tables(tmp_path: Path) -> None:
    """A backend that has only read an empty database creates the tables on its first
    write, and then reads what it wrote."""
    path = tmp_path / "flows.db"
    backend = SQLiteFlowPersistence(path)
    try:
        assert backend.list_runs() == []
        backend.save_state("r1", "start", {"id": "r1"})
        assert [run.run_id for run in backend.list_runs()] == ["r1"]
    finally:
        backend.close()


def test_reads_see_tables_another_process_creates_later(tmp_path: Path) -> None:
    """A backend that found no tables sees them once another writer creates them."""
    path = tmp_path / "flows.db"
    reader = SQLiteFlowPersistence(path)
    try:
        assert reader.get_run("r1") is None
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from flowkit.persistence import SQLiteFlowPersistence as S; "
                "S(sys.argv[1]).save_state('r1', 'start', {'id': 'r1'})",
                str(path),
            ],
            check=True,
            timeout=60,
        )
        assert reader.load_state("r1") == {"id": "r1"}
    finally:
        reader.close()


def test_postgres_read_without_tables_creates_nothing(postgres_url: str) -> None:
    """On PostgreSQL, reading a schema without flowkit's tables answers empty and creates
    no table; the first write creates them."""
    import asyncio

    import asyncpg

    schema = f"flowkit_ro_{uuid.uuid4().hex[:12]}"
    dsn = postgres_url.replace("postgresql+asyncpg://", "postgresql://")

    async def admin(sql: str) -> Any:
        connection = await asyncpg.connect(dsn)
        try:
            return await connection.fetch(sql)
        finally:
            await connection.close()

    asyncio.run(admin(f"CREATE SCHEMA {schema}"))
    backend = SQLAlchemyFlowPersistence(
        postgres_url,
        engine_kwargs={"connect_args": {"server_settings": {"search_path": schema}}},
    )
    try:
        assert backend.list_runs() == []
        assert backend.get_run("r1") is None
        count = f"SELECT COUNT(*) FROM pg_tables WHERE schemaname = '{schema}'"
        assert asyncio.run(admin(count))[0][0] == 0
        backend.save_state("r1", "start", {"id": "r1"})
        assert backend.load_state("r1") == {"id": "r1"}
        assert asyncio.run(admin(count))[0][0] == 4
    finally:
        backend.close()
        asyncio.run(admin(f"DROP SCHEMA {schema} CASCADE"))


def test_postgres_reads_do_not_wait_for_a_writer(postgres_url: str) -> None:
    """On PostgreSQL a fresh backend reads while another session holds a write on the run
    row and the schema lock (a concurrent first start), and sees the committed row."""
    import asyncio
    import threading

    import asyncpg

    from flowkit.persistence._schema import SCHEMA_LOCK_KEY

    run_id = f"ro-{uuid.uuid4().hex}"
    setup = SQLAlchemyFlowPersistence(postgres_url)
    setup.save_state(run_id, "start", {"id": run_id})
    setup.close()
    holding, release = threading.Event(), threading.Event()

    async def hold() -> None:
        dsn = postgres_url.replace("postgresql+asyncpg://", "postgresql://")
        connection = await asyncpg.connect(dsn)
        try:
            async with connection.transaction():
                await connection.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
                await connection.execute(
                    "UPDATE flowkit_runs SET status = 'failed' WHERE run_id = $1", run_id
                )
                holding.set()
                await asyncio.get_running_loop().run_in_executor(None, release.wait, 60)
                raise RuntimeError("roll back")  # leave the row as it was
        except RuntimeError:
            pass
        finally:
            await connection.close()

    holder = threading.Thread(target=asyncio.run, args=(hold(),))
    holder.start()
    try:
        assert holding.wait(30)
        backend = SQLAlchemyFlowPersistence(postgres_url)
        try:

            def reads() -> tuple[Any, ...]:
                run = backend.get_run(run_id)
                return (run.status if run else None, backend.load_state(run_id))

            assert _promptly(reads) == ("running", {"id": run_id})
        finally:
            backend.close()
    finally:
        release.set()
        holder.join(60)
        cleanup = SQLAlchemyFlowPersistence(postgres_url)
        cleanup.delete_run(run_id)
        cleanup.close()
