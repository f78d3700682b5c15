"""What only the SQL backends promise: schema and versioning, SQLite settings, blobs
stored once, one engine per URL, clean shutdown, error messages."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowkit.exceptions import (
    ConcurrentUpdateError,
    FlowConfigurationError,
    PersistenceError,
    UnserializableStateError,
)
from flowkit.persistence import SQLAlchemyFlowPersistence, SQLiteFlowPersistence
from flowkit.persistence._schema import SCHEMA_VERSION

BIG = "y" * 4000


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "flows.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SQLiteFlowPersistence]:
    persistence = SQLiteFlowPersistence(db_path)
    yield persistence
    persistence.close()


def _rows(db_path: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(db_path)) as connection, connection:
        return connection.execute(sql).fetchall()


def test_unchanged_big_field_is_stored_once(store: SQLiteFlowPersistence, db_path: Path) -> None:
    """A big field that does not change is written to flowkit_blobs once; a changed
    value adds one blob; checkpoint rows hold only a reference."""
    for n in range(5):
        store.save_state("r1", f"s{n}", {"id": "r1", "doc": BIG, "n": n})
    assert _rows(db_path, "SELECT COUNT(*) FROM flowkit_blobs") == [(1,)]
    states = _rows(db_path, "SELECT state FROM flowkit_checkpoints")
    assert all(len(str(state)) < 200 for (state,) in states)
    store.save_state("r1", "s5", {"id": "r1", "doc": BIG + "!", "n": 5})
    assert _rows(db_path, "SELECT COUNT(*) FROM flowkit_blobs") == [(2,)]


def test_prune_and_delete_drop_unreferenced_blobs(
    store: SQLiteFlowPersistence, db_path: Path
) -> None:
    """prune removes blobs no kept checkpoint refers to; delete_run removes them all."""
    store.save_state("r1", "a", {"id": "r1", "doc": BIG + "1"})
    store.save_state("r1", "b", {"id": "r1", "doc": BIG + "2"})
    store.save_state("r1", "c", {"id": "r1", "doc": BIG + "2"})
    assert store.prune("r1", keep_last=2) == 1
    assert _rows(db_path, "SELECT COUNT(*) FROM flowkit_blobs") == [(1,)]
    store.delete_run("r1")
    assert _rows(db_path, "SELECT COUNT(*) FROM flowkit_blobs") == [(0,)]


def test_blobs_resent_after_another_writer_deleted_the_run(db_path: Path) -> None:
    """A blob this process already wrote is sent again when the run was deleted (or
    rewritten) by someone else meanwhile, so no checkpoint refers to a missing blob."""
    writer, other = SQLiteFlowPersistence(db_path), SQLiteFlowPersistence(db_path)
    other._engine_kwargs = {"echo": False}  # a separate engine: like another process
    try:
        writer.save_state("r1", "a", {"id": "r1", "doc": BIG})
        other.delete_run("r1")
        writer.save_state("r1", "b", {"id": "r1", "doc": BIG})
        assert writer.load_state("r1") == {"id": "r1", "doc": BIG}
    finally:
        writer.close()
        other.close()


def test_schema_version_is_recorded(store: SQLiteFlowPersistence, db_path: Path) -> None:
    """init_db creates the tables and records the schema version; again is a no-op."""
    store.init_db()
    store.init_db()
    assert _rows(db_path, "SELECT version FROM flowkit_schema_version") == [(SCHEMA_VERSION,)]
    tables = {name for (name,) in _rows(db_path, "SELECT name FROM sqlite_master")}
    assert {"flowkit_runs", "flowkit_checkpoints", "flowkit_blobs"} <= tables


def test_newer_schema_is_refused(db_path: Path) -> None:
    """A database written by a newer flowkit is refused with an upgrade hint."""
    with contextlib.closing(sqlite3.connect(db_path)) as connection, connection:
        connection.execute("CREATE TABLE flowkit_schema_version (version INTEGER NOT NULL)")
        connection.execute("INSERT INTO flowkit_schema_version VALUES (999)")
    persistence = SQLiteFlowPersistence(db_path)
    try:
        with pytest.raises(PersistenceError, match="Upgrade flowkit"):
            persistence.load_state("r1")
    finally:
        persistence.close()


def _make_v1_database(db_path: Path) -> None:
    """A database as flowkit 0.1 (schema version 1) left it: v1 indexes, one run with two
    checkpoints, version row 1. Written with plain sqlite3, like an old install."""
    from flowkit.persistence._schema import SCHEMA

    v1_indexes = {
        "flowkit_runs_flow_name": "(flow_name, updated_at)",
        "flowkit_runs_status": "(status, updated_at)",
    }
    with contextlib.closing(sqlite3.connect(db_path)) as connection, connection:
        connection.execute("CREATE TABLE flowkit_schema_version (version INTEGER NOT NULL)")
        connection.execute("INSERT INTO flowkit_schema_version VALUES (1)")
        for ddl in SCHEMA:
            for name, columns in v1_indexes.items():
                if f" {name} ON" in ddl:
                    ddl = f"CREATE INDEX {name} ON flowkit_runs {columns}"
            connection.execute(ddl)
        connection.execute(
            "INSERT INTO flowkit_runs (run_id, flow_name, status, created_at, updated_at, "
            "last_seq, info) VALUES ('old', 'f', 'completed', 1.0, 2.0, 2, '{}')"
        )
        for seq in (1, 2):
            connection.execute(
                "INSERT INTO flowkit_checkpoints VALUES ('old', ?, 'm', ?, '{}', NULL, 1.5)",
                (seq, f'{{"id": "old", "n": {seq}}}'),
            )


def _index_columns(db_path: Path, name: str) -> list[str]:
    return [str(row[2]) for row in _rows(db_path, f"PRAGMA index_info({name})")]


def test_version_1_database_is_migrated_in_place(db_path: Path) -> None:
    """A version-1 database is read as it is and upgraded to the current version by the
    first write: the run and its checkpoints are kept, the indexes are the new ones."""
    _make_v1_database(db_path)
    assert _index_columns(db_path, "flowkit_runs_status") == ["status", "updated_at"]
    store = SQLiteFlowPersistence(db_path)
    try:
        assert store.load_state("old") == {"id": "old", "n": 2}
        assert [c.seq for c in store.history("old")] == [1, 2]
        assert _rows(db_path, "SELECT version FROM flowkit_schema_version") == [(1,)]
        saved = store.save_checkpoint("old", "more", {"id": "old", "n": 3}, expected_seq=2)
        assert saved.seq == 3
        assert _rows(db_path, "SELECT version FROM flowkit_schema_version") == [(SCHEMA_VERSION,)]
        assert _index_columns(db_path, "flowkit_runs_status") == ["status"]
        assert _index_columns(db_path, "flowkit_runs_flow_name") == ["flow_name"]
        assert _index_columns(db_path, "flowkit_runs_updated_at") == ["updated_at"]
        run = store.get_run("old")
        assert run is not None and (run.last_seq, run.status, run.flow_name) == (
            3,
            "running",
            "f",
        )
    finally:
        store.close()


def test_a_checkpoint_rewrites_only_the_run_row_and_its_updated_at_entry(
    store: SQLiteFlowPersistence, db_path: Path
) -> None:
    """A step's save changes last_seq and updated_at only (status and flow name are
    written when they change): the WAL grows by the same few pages per save, however
    many runs share the table."""
    for n in range(300):
        store.save_checkpoint(f"other-{n}", "a", {"id": "x"}, expected_seq=0, flow_name="f")
    store.save_checkpoint("r1", "a", {"id": "r1", "n": 0}, expected_seq=0, flow_name="f")

    def wal_frames() -> int:
        return int(_rows(db_path, "PRAGMA wal_checkpoint(PASSIVE)")[0][1])

    _rows(db_path, "PRAGMA wal_checkpoint(TRUNCATE)")
    before = wal_frames()
    for n in range(1, 21):
        store.save_checkpoint("r1", "a", {"id": "r1", "n": n}, expected_seq=n)
    per_save = (wal_frames() - before) / 20
    # run row + updated_at index entry + checkpoint row + its key: 4 pages. Schema
    # version 1 also rewrote the (flow_name, updated_at) and (status, updated_at)
    # entries: 6 pages per save, measured with this test.
    assert per_save < 5, per_save
    run = store.get_run("r1")
    assert run is not None and (run.last_seq, run.status, run.flow_name) == (21, "running", "f")


def test_sqlite_runs_in_wal_with_full_sync(store: SQLiteFlowPersistence, db_path: Path) -> None:
    """The SQLite file is in WAL mode, and connections use synchronous=FULL."""
    store.init_db()
    assert _rows(db_path, "PRAGMA journal_mode") == [("wal",)]
    database = store._database()

    async def pragma() -> object:
        cursor = await database._sqlite_driver.execute("PRAGMA synchronous")
        return (await cursor.fetchone())[0]

    assert database.portal.run(pragma()) == 2  # FULL


def test_same_url_shares_one_engine(db_path: Path) -> None:
    """Backends with the same URL share one engine and see the same data."""
    first, second = SQLiteFlowPersistence(db_path), SQLiteFlowPersistence(db_path)
    try:
        first.save_state("r1", "a", {"id": "r1"})
        assert first._database() is second._database()
        assert second.load_state("r1") == {"id": "r1"}
    finally:
        first.close()
        second.close()


def test_close_stops_the_thread_and_reopens_on_use(db_path: Path) -> None:
    """close() stops the portal thread; using the backend again reconnects."""
    before = set(threading.enumerate())  # other tests' unclosed stores may keep theirs
    persistence = SQLiteFlowPersistence(db_path)
    persistence.save_state("r1", "a", {"id": "r1"})
    database = persistence._database()
    thread = database.portal._thread
    assert thread is not None and thread.is_alive()
    persistence.close()
    assert not thread.is_alive()
    assert persistence.load_state("r1") == {"id": "r1"}
    persistence.close()
    assert not any(t.name.startswith("flowkit-db-") for t in set(threading.enumerate()) - before)


def test_construction_does_no_io(tmp_path: Path) -> None:
    """Constructing a backend neither creates its folder nor starts a thread."""
    threads = set(threading.enumerate())
    persistence = SQLiteFlowPersistence(tmp_path / "later" / "flows.db")
    assert not (tmp_path / "later").exists()
    assert set(threading.enumerate()) == threads
    persistence.save_state("r1", "a", {"id": "r1"})
    assert (tmp_path / "later" / "flows.db").exists()
    persistence.close()


def test_default_path_uses_data_dir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLiteFlowPersistence() stores in $FLOWKIT_DATA_DIR/flowkit.db, created on use."""
    monkeypatch.setenv("FLOWKIT_DATA_DIR", str(tmp_path / "data"))
    persistence = SQLiteFlowPersistence()
    assert persistence.db_path == str(tmp_path / "data" / "flowkit.db")
    assert not (tmp_path / "data").exists()
    persistence.save_state("r1", "a", {"id": "r1"})
    persistence.close()
    assert (tmp_path / "data" / "flowkit.db").exists()


def test_unserializable_state_writes_nothing(store: SQLiteFlowPersistence) -> None:
    """A state that is not JSON-ready is refused before anything is written, naming the
    field."""
    with pytest.raises(UnserializableStateError, match=r"state\.blob"):
        store.save_state("r1", "a", {"id": "r1", "blob": b"bytes"})
    assert store.get_run("r1") is None


def test_unknown_dialect_is_a_configuration_error() -> None:
    """Only SQLite, PostgreSQL and MariaDB/MySQL URLs are accepted, with a message saying
    so."""
    with pytest.raises(FlowConfigurationError, match="SQLite, PostgreSQL and MariaDB/MySQL"):
        SQLAlchemyFlowPersistence("oracle+oracledb://u@h/db")


def test_unreachable_database_names_operation_and_run(tmp_path: Path) -> None:
    """A database that cannot be opened raises PersistenceError naming the operation."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    persistence = SQLiteFlowPersistence(blocker / "flows.db")
    try:
        with pytest.raises(PersistenceError, match=r"load_checkpoint\('r1'"):
            persistence.load_state("r1")
    finally:
        persistence.close()


def test_secret_key_is_carried(db_path: Path) -> None:
    """secret_key given to a built-in backend is kept for the engine."""
    persistence = SQLiteFlowPersistence(db_path, secret_key="k" * 32)
    assert persistence.secret_key == "k" * 32


def test_import_does_not_load_sqlalchemy() -> None:
    """import flowkit.persistence leaves SQLAlchemy and the drivers unimported."""
    code = (
        "import sys, flowkit.persistence as p; "
        "assert 'sqlalchemy' not in sys.modules and 'aiosqlite' not in sys.modules; "
        "p.SQLiteFlowPersistence; assert 'sqlalchemy' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unclosed_backend_does_not_hang_exit(tmp_path: Path) -> None:
    """A program that never calls close() still exits promptly and cleanly."""
    code = (
        "from flowkit.persistence import SQLiteFlowPersistence as S; "
        f"p = S({str(tmp_path / 'x.db')!r}); p.save_state('r', 'm', {{'id': 'r'}}); print('ok')"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "ok", "")


def test_async_callers_on_many_loops_at_once(db_path: Path) -> None:
    """Async callers on several threads, each with its own event loop, use one SQLite
    backend at once (straight to aiosqlite's worker, no portal): every save lands, CAS on
    a shared run lets exactly one writer win each seq, and the transactions stay whole."""
    persistence = SQLiteFlowPersistence(db_path)
    shared = f"shared-{uuid.uuid4().hex}"
    persistence.save_checkpoint(shared, "start", {"id": shared, "n": 0}, expected_seq=0)
    outcomes: list[str] = []
    lock = threading.Lock()

    async def work(worker: int) -> None:
        own = f"own-{worker}-{uuid.uuid4().hex}"
        for n in range(10):
            await persistence.asave_checkpoint(own, f"s{n}", {"id": own, "n": n}, expected_seq=n)
            assert (await persistence.aload_state(own)) == {"id": own, "n": n}
        for _ in range(10):
            run = await persistence.aget_run(shared)
            assert run is not None
            try:
                await persistence.asave_checkpoint(
                    shared,
                    f"w{worker}",
                    {"id": shared, "n": run.last_seq},
                    expected_seq=run.last_seq,
                )
                result = "won"
            except ConcurrentUpdateError:
                result = "lost"
            with lock:
                outcomes.append(result)

    threads = [threading.Thread(target=asyncio.run, args=(work(w),)) for w in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
        assert len(outcomes) == 40
        history = persistence.history(shared)
        assert [c.seq for c in history] == list(range(1, outcomes.count("won") + 2))
        # Each winner stored the seq it read: no save was applied on a stale view.
        assert all(c.state["n"] == c.seq - 1 for c in history)
        assert len(persistence.list_runs(limit=100)) == 5
    finally:
        persistence.close()


def test_caller_loop_closed_mid_operation_leaves_backend_usable(db_path: Path) -> None:
    """Operations whose caller's loop is closed before they finish (cancelled at
    shutdown) still complete in the worker, and the backend keeps working from other
    loops (the worker thread must survive replying to a closed loop)."""
    persistence = SQLiteFlowPersistence(db_path)
    persistence.init_db()
    loop = asyncio.new_event_loop()
    try:

        async def save(n: int) -> None:
            run_id = f"orphan-{n}"
            await persistence.asave_checkpoint(run_id, "a", {"id": run_id}, expected_seq=0)

        tasks = [loop.create_task(save(n)) for n in range(20)]
        loop.run_until_complete(asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED))
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    finally:
        loop.close()

    async def later() -> dict[str, object] | None:
        await persistence.asave_state("after", "a", {"id": "after"})
        return await persistence.aload_state("after")

    done: list[object] = []
    thread = threading.Thread(target=lambda: done.append(asyncio.run(later())), daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert done == [{"id": "after"}], "the backend stopped answering after the loop closed"
    try:
        assert persistence.load_state("orphan-19") == {"id": "orphan-19"}
    finally:
        persistence.close()


def test_close_while_async_callers_run(db_path: Path) -> None:
    """close() from another thread while async callers are saving: no operation hangs or
    is lost; the callers reconnect, and the final close leaves no thread behind."""
    before = set(threading.enumerate())  # other tests' unclosed stores may keep theirs
    persistence = SQLiteFlowPersistence(db_path)
    persistence.init_db()
    stop = threading.Event()
    saved: list[int] = []

    async def writer() -> None:
        run_id = f"busy-{uuid.uuid4().hex}"
        n = 0
        while not stop.is_set():
            await persistence.asave_checkpoint(run_id, "s", {"id": run_id, "n": n}, expected_seq=n)
            n += 1
        saved.append(n)
        assert len(await persistence.ahistory(run_id)) == n

    threads = [threading.Thread(target=asyncio.run, args=(writer(),)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for _ in range(5):
        persistence.close()
        stop.wait(0.02)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert len(saved) == 2 and min(saved) > 0
    persistence.close()
    assert not any(t.name.startswith("flowkit-db-") for t in set(threading.enumerate()) - before)


@pytest.mark.postgres
def test_postgres_big_field_stored_once(postgres_url: str) -> None:
    """On PostgreSQL too, an unchanged big field is stored once per run."""
    persistence = SQLAlchemyFlowPersistence(postgres_url)
    run_id = f"blob-{uuid.uuid4().hex}"
    try:
        for n in range(3):
            persistence.save_state(run_id, f"s{n}", {"id": run_id, "doc": BIG, "n": n})
        assert persistence.load_state(run_id) == {"id": run_id, "doc": BIG, "n": 2}
        database = persistence._database()

        async def count() -> int:
            from sqlalchemy import text

            assert database.engine is not None
            async with database.engine.connect() as connection:
                result = await connection.execute(
                    text("SELECT COUNT(*) FROM flowkit_blobs WHERE run_id = :r"), {"r": run_id}
                )
                return int(result.scalar_one())

        assert database.portal.run(count()) == 1
    finally:
        persistence.delete_run(run_id)
        persistence.close()
