"""Damaged stored rows: every column read back is checked, and a bad value is a
CorruptRunError / CorruptCheckpointError naming the run (and the seq), never a bare
TypeError, ValueError or KeyError; listing skips and reports unreadable runs; the command
line prints one line, never a traceback.

The databases are written by flowkit, then damaged with plain sqlite3 (or asyncpg for
PostgreSQL, where the column types allow the damage)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from flowkit.cli import main
from flowkit.exceptions import CorruptCheckpointError, CorruptRunError
from flowkit.persistence import SQLAlchemyFlowPersistence, SQLiteFlowPersistence

BIG = "z" * 3000


def _populate(backend: SQLAlchemyFlowPersistence, damaged: str, healthy: str) -> None:
    """``damaged``: two checkpoints, the second with a blob-stored field; ``healthy``: one."""
    backend.create_run(damaged, "Flow", info={"note": "kept"}, parent_run_id=None)
    backend.save_checkpoint(damaged, "a", {"id": damaged, "n": 1}, expected_seq=0)
    backend.save_checkpoint(damaged, "b", {"id": damaged, "n": 2, "doc": BIG}, expected_seq=1)
    backend.save_state(healthy, "a", {"id": healthy})


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "flows.db"
    backend = SQLiteFlowPersistence(path)
    _populate(backend, "r1", "r2")
    backend.close()
    return path


@pytest.fixture
def fresh(db_path: Path) -> Iterator[SQLiteFlowPersistence]:
    backend = SQLiteFlowPersistence(db_path)
    yield backend
    backend.close()


def _damage(db_path: Path, sql: str, *params: Any) -> None:
    with closing(sqlite3.connect(db_path)) as connection, connection:
        assert connection.execute(sql, params).rowcount >= 1


# Each run column with values SQLite will store there although they are wrong (a TEXT
# column turns a number into text, so text columns get a BLOB).
RUN_DAMAGE = [
    pytest.param("status", "exploded", id="status-unknown"),
    pytest.param("status", b"\x00", id="status-blob"),
    pytest.param("created_at", "yesterday", id="created_at-text"),
    pytest.param("created_at", 1e300, id="created_at-out-of-range"),
    pytest.param("updated_at", b"\x01", id="updated_at-blob"),
    pytest.param("last_seq", "many", id="last_seq-text"),
    pytest.param("last_seq", 1.5, id="last_seq-fraction"),
    pytest.param("last_seq", -1, id="last_seq-negative"),
    pytest.param("parent_seq", "x", id="parent_seq-text"),
    pytest.param("flow_name", b"\x02", id="flow_name-blob"),
    pytest.param("parent_run_id", b"\x03", id="parent_run_id-blob"),
    pytest.param("fingerprint", b"\x04", id="fingerprint-blob"),
    pytest.param("info", "{not json", id="info-not-json"),
    pytest.param("info", "[1, 2]", id="info-not-object"),
    pytest.param("info", b"{}", id="info-blob"),
    pytest.param("lease_owner", b"\x05", id="lease_owner-blob"),
    pytest.param("lease_expires_at", "soon", id="lease_expires_at-text"),
]


@pytest.mark.parametrize(("column", "value"), RUN_DAMAGE)
def test_damaged_run_column_is_a_corrupt_run_error(
    db_path: Path, fresh: SQLiteFlowPersistence, column: str, value: Any
) -> None:
    """get_run of a run whose row holds a wrong value raises CorruptRunError naming the run
    and the column."""
    _damage(db_path, f"UPDATE flowkit_runs SET {column} = ? WHERE run_id = 'r1'", value)
    with pytest.raises(CorruptRunError, match=rf"'r1'.*{column}") as info:
        fresh.get_run("r1")
    assert info.value.run_id == "r1"


@pytest.mark.parametrize(("column", "value"), RUN_DAMAGE)
def test_list_runs_skips_and_reports_a_damaged_run(
    db_path: Path,
    fresh: SQLiteFlowPersistence,
    caplog: pytest.LogCaptureFixture,
    column: str,
    value: Any,
) -> None:
    """list_runs returns the readable runs and logs a warning naming the damaged one."""
    _damage(db_path, f"UPDATE flowkit_runs SET {column} = ? WHERE run_id = 'r1'", value)
    with caplog.at_level(logging.WARNING, logger="flowkit"):
        runs = fresh.list_runs()
    assert [run.run_id for run in runs] == ["r2"]
    reported = [getattr(r, "unreadable_run", None) for r in caplog.records]
    assert [type(e) for e in reported] == [CorruptRunError]
    assert "'r1'" in caplog.records[0].getMessage()


def test_damaged_run_id_is_skipped_by_list_runs(
    db_path: Path, fresh: SQLiteFlowPersistence, caplog: pytest.LogCaptureFixture
) -> None:
    """A run row whose id is not text is skipped by list_runs, the others listed."""
    _damage(db_path, "UPDATE flowkit_runs SET run_id = ? WHERE run_id = 'r1'", b"\x09")
    with caplog.at_level(logging.WARNING, logger="flowkit"):
        assert [run.run_id for run in fresh.list_runs()] == ["r2"]
    assert "run_id" in caplog.records[0].getMessage()


# Each checkpoint column (of the latest checkpoint, seq 2), and the blob it refers to.
CHECKPOINT_DAMAGE = [
    pytest.param("method_name", b"\x00", id="method_name-blob"),
    pytest.param("state", "{not json", id="state-not-json"),
    pytest.param("state", "[1]", id="state-not-object"),
    pytest.param("state", 5, id="state-number"),
    pytest.param("state", b"{}", id="state-blob"),
    pytest.param("meta", "nope", id="meta-not-json"),
    pytest.param("meta", '"text"', id="meta-not-object"),
    pytest.param("blobs", "not json", id="blobs-not-json"),
    pytest.param("blobs", "[1]", id="blobs-not-hashes"),
    pytest.param("blobs", '{"a": 1}', id="blobs-not-list"),
    pytest.param("created_at", "noon", id="created_at-text"),
    pytest.param("created_at", 1e300, id="created_at-out-of-range"),
]


@pytest.mark.parametrize(("column", "value"), CHECKPOINT_DAMAGE)
def test_damaged_checkpoint_column_is_a_corrupt_checkpoint_error(
    db_path: Path, fresh: SQLiteFlowPersistence, column: str, value: Any
) -> None:
    """Loading the latest checkpoint, and the history, raise CorruptCheckpointError naming
    the run and seq 2 when a column of that row holds a wrong value."""
    _damage(
        db_path,
        f"UPDATE flowkit_checkpoints SET {column} = ? WHERE run_id = 'r1' AND seq = 2",
        value,
    )
    with pytest.raises(CorruptCheckpointError, match=r"seq 2 of run 'r1'") as info:
        fresh.load_checkpoint("r1")
    assert (info.value.run_id, info.value.seq) == ("r1", 2)
    with pytest.raises(CorruptCheckpointError, match=r"seq 2 of run 'r1'"):
        fresh.history("r1")


def test_damaged_checkpoint_seq_is_a_corrupt_checkpoint_error(
    db_path: Path, fresh: SQLiteFlowPersistence
) -> None:
    """A checkpoint whose seq is not a whole number: the latest is reported missing and
    the history names the run."""
    _damage(db_path, "UPDATE flowkit_checkpoints SET seq = 'two' WHERE run_id = 'r1' AND seq = 2")
    with pytest.raises(CorruptCheckpointError, match=r"seq 2 of run 'r1'.*missing"):
        fresh.load_checkpoint("r1")
    with pytest.raises(CorruptCheckpointError, match=r"run 'r1'.*'two'"):
        fresh.history("r1")


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("{bad", id="not-json"),
        pytest.param(b'"text"', id="blob-bytes"),
    ],
)
def test_damaged_blob_is_a_corrupt_checkpoint_error(
    db_path: Path, fresh: SQLiteFlowPersistence, value: Any
) -> None:
    """A blob-stored field whose stored JSON is damaged names the run, the seq and the
    field."""
    _damage(db_path, "UPDATE flowkit_blobs SET data = ? WHERE run_id = 'r1'", value)
    with pytest.raises(CorruptCheckpointError, match=r"seq 2 of run 'r1'.*state\.doc"):
        fresh.load_state("r1")


def test_missing_blob_is_a_corrupt_checkpoint_error(
    db_path: Path, fresh: SQLiteFlowPersistence
) -> None:
    """A checkpoint whose blob row is gone names the run, the seq and the field."""
    _damage(db_path, "DELETE FROM flowkit_blobs WHERE run_id = 'r1'")
    with pytest.raises(CorruptCheckpointError, match=r"seq 2 of run 'r1'.*state\.doc.*missing"):
        fresh.load_checkpoint("r1")


def test_damaged_last_seq_makes_loading_a_corrupt_run_error(
    db_path: Path, fresh: SQLiteFlowPersistence
) -> None:
    """Loading the latest checkpoint through a run row whose last_seq is not a number
    raises CorruptRunError naming the run."""
    _damage(db_path, "UPDATE flowkit_runs SET last_seq = 'many' WHERE run_id = 'r1'")
    with pytest.raises(CorruptRunError, match=r"'r1'.*last_seq"):
        fresh.load_state("r1")


# -- the command line ------------------------------------------------------------------


def test_cli_runs_lists_readable_runs_and_names_damaged_ones(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`flowkit runs` lists the readable runs, prints one stderr line per damaged run and
    exits with 3."""
    _damage(db_path, "UPDATE flowkit_runs SET status = 'exploded' WHERE run_id = 'r1'")
    code = main(["runs", "--db", str(db_path)])
    out, err = capsys.readouterr()
    assert code == 3
    assert "r2" in out and "r1" not in out
    assert err.count("\n") == 1 and "skipped unreadable run 'r1'" in err


def test_cli_runs_json_reports_damaged_runs_on_stderr(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`flowkit runs --json` keeps stdout machine-readable: damaged runs go to stderr."""
    import json

    _damage(db_path, "UPDATE flowkit_runs SET info = '{' WHERE run_id = 'r1'")
    code = main(["runs", "--json", "--db", str(db_path)])
    out, err = capsys.readouterr()
    assert code == 3
    assert [run["run_id"] for run in json.loads(out)] == ["r2"]
    assert "'r1'" in err


@pytest.mark.parametrize(
    ("command", "table", "sql"),
    [
        pytest.param(["show", "r1"], "runs", "status = 'exploded'", id="show-run"),
        pytest.param(["show", "r1"], "checkpoints", "state = '{'", id="show-checkpoint"),
        pytest.param(["history", "r1"], "checkpoints", "meta = '['", id="history"),
        pytest.param(["checkpoint", "r1", "2"], "checkpoints", "created_at = 'x'", id="checkpoint"),
    ],
)
def test_cli_reports_damaged_data_without_a_traceback(
    db_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    table: str,
    sql: str,
) -> None:
    """Reading a damaged run from the command line is one error line naming the run, exit 1."""
    where = "run_id = 'r1'" + (" AND seq = 2" if table == "checkpoints" else "")
    _damage(db_path, f"UPDATE flowkit_{table} SET {sql} WHERE {where}")
    code = main([*command, "--db", str(db_path)])
    _, err = capsys.readouterr()
    assert code == 1
    assert err.startswith(f"flowkit {command[0]}: error: Stored ") and "'r1'" in err
    assert "Traceback" not in err and err.count("\n") == 1


# -- PostgreSQL: the damage its column types allow -------------------------------------


PG_RUN_DAMAGE = [
    pytest.param("status = 'exploded'", "status", id="status"),
    pytest.param("info = '{not json'", "info", id="info-not-json"),
    pytest.param("info = '[]'", "info", id="info-not-object"),
    pytest.param("created_at = 'Infinity'", "created_at", id="created_at-infinite"),
    pytest.param("updated_at = 'NaN'", "updated_at", id="updated_at-nan"),
    pytest.param("last_seq = -5", "last_seq", id="last_seq-negative"),
    pytest.param("lease_expires_at = '-Infinity'", "lease_expires_at", id="lease-infinite"),
]

PG_CHECKPOINT_DAMAGE = [
    pytest.param("state = '{not json'", id="state-not-json"),
    pytest.param("state = '7'", id="state-not-object"),
    pytest.param("meta = 'x'", id="meta-not-json"),
    pytest.param("blobs = 'x'", id="blobs-not-json"),
    pytest.param("blobs = '[1]'", id="blobs-not-hashes"),
    pytest.param("created_at = 'Infinity'", id="created_at-infinite"),
]


@pytest.fixture
def pg(postgres_url: str) -> Iterator[tuple[SQLAlchemyFlowPersistence, str, str]]:
    """A fresh backend and two new runs (damaged, healthy) on the PostgreSQL server."""
    damaged, healthy = f"dmg-{uuid.uuid4().hex}", f"ok-{uuid.uuid4().hex}"
    writer = SQLAlchemyFlowPersistence(postgres_url)
    _populate(writer, damaged, healthy)
    writer.close()
    backend = SQLAlchemyFlowPersistence(postgres_url)
    yield backend, damaged, healthy
    backend.delete_run(damaged)
    backend.delete_run(healthy)
    backend.close()


def _pg_damage(postgres_url: str, sql: str, *params: Any) -> None:
    import asyncpg

    async def run() -> None:
        connection = await asyncpg.connect(
            postgres_url.replace("postgresql+asyncpg://", "postgresql://")
        )
        try:
            assert await connection.execute(sql, *params) != "UPDATE 0"
        finally:
            await connection.close()

    asyncio.run(run())


@pytest.mark.parametrize(("assignment", "column"), PG_RUN_DAMAGE)
def test_postgres_damaged_run_column(
    postgres_url: str,
    pg: tuple[SQLAlchemyFlowPersistence, str, str],
    caplog: pytest.LogCaptureFixture,
    assignment: str,
    column: str,
) -> None:
    """On PostgreSQL a damaged run row is a CorruptRunError naming the run and column, and
    list_runs skips it."""
    backend, damaged, healthy = pg
    _pg_damage(postgres_url, f"UPDATE flowkit_runs SET {assignment} WHERE run_id = $1", damaged)
    with pytest.raises(CorruptRunError, match=rf"{damaged}.*{column}"):
        backend.get_run(damaged)
    with caplog.at_level(logging.WARNING, logger="flowkit"):
        listed = {run.run_id for run in backend.list_runs(limit=10_000)}
    assert healthy in listed and damaged not in listed
    assert any(damaged in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("assignment", PG_CHECKPOINT_DAMAGE)
def test_postgres_damaged_checkpoint_column(
    postgres_url: str, pg: tuple[SQLAlchemyFlowPersistence, str, str], assignment: str
) -> None:
    """On PostgreSQL a damaged latest checkpoint is a CorruptCheckpointError naming the run
    and seq 2."""
    backend, damaged, _ = pg
    _pg_damage(
        postgres_url,
        f"UPDATE flowkit_checkpoints SET {assignment} WHERE run_id = $1 AND seq = 2",
        damaged,
    )
    with pytest.raises(CorruptCheckpointError, match=rf"seq 2 of run '{damaged}'"):
        backend.load_checkpoint(damaged)


def test_cli_fork_of_a_damaged_position_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Forking a checkpoint whose stored execution position is not an object is an error
    naming the run and seq (exit 1), not a traceback."""
    from cli_flows import CountFlow

    path = tmp_path / "flows.db"
    backend = SQLiteFlowPersistence(path)
    CountFlow(persistence=backend).kickoff(inputs={"id": "c1"})
    backend.close()
    _damage(path, "UPDATE flowkit_checkpoints SET meta = '{\"position\": 5}' WHERE seq = 1")
    code = main(["fork", "cli_flows:CountFlow", "c1", "1", "--db", str(path)])
    _, err = capsys.readouterr()
    assert code == 1
    assert "checkpoint 1 of run 'c1'" in err and err.count("\n") == 1


# -- the file backend: run.json goes through the same validation step -------------------


@pytest.mark.parametrize(
    ("change", "named"),
    [
        pytest.param({"status": "exploded"}, "status", id="status"),
        pytest.param({"last_seq": "many"}, "last_seq", id="last_seq"),
        pytest.param({"created_at": None}, "created_at", id="created_at"),
        pytest.param({"info": [1]}, "info", id="info"),
        pytest.param({"lease_owner": 5}, "lease_owner", id="lease_owner"),
        pytest.param({"flow_name": None, "status": None}, "status", id="two-fields"),
    ],
)
def test_file_backend_damaged_run_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, change: dict[str, Any], named: str
) -> None:
    """A FileFlowPersistence run.json with a wrong value is a CorruptRunError naming the
    run and field, and list_runs skips and reports it."""
    import json

    from flowkit.persistence import FileFlowPersistence

    backend = FileFlowPersistence(tmp_path)
    try:
        backend.save_state("r1", "a", {"id": "r1"})
        backend.save_state("r2", "a", {"id": "r2"})
        record = tmp_path / "runs" / "r1" / "run.json"
        record.write_text(json.dumps({**json.loads(record.read_text()), **change}))
        with pytest.raises(CorruptRunError, match=rf"'r1'.*{named}"):
            backend.get_run("r1")
        with caplog.at_level(logging.WARNING, logger="flowkit"):
            assert [run.run_id for run in backend.list_runs()] == ["r2"]
        assert "'r1'" in caplog.records[0].getMessage()
    finally:
        backend.close()


def test_file_backend_run_record_missing_a_field(tmp_path: Path) -> None:
    """A run.json lacking a field is a CorruptRunError naming the field."""
    import json

    from flowkit.persistence import FileFlowPersistence

    backend = FileFlowPersistence(tmp_path)
    try:
        backend.save_state("r1", "a", {"id": "r1"})
        record = tmp_path / "runs" / "r1" / "run.json"
        data = json.loads(record.read_text())
        del data["last_seq"]
        record.write_text(json.dumps(data))
        with pytest.raises(CorruptRunError, match=r"'r1'.*lacks last_seq"):
            backend.get_run("r1")
    finally:
        backend.close()
