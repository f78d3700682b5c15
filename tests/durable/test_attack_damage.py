"""Attack: damaged rows in the latest checkpoint (truncated JSON, wrong types, a missing
blob), written straight into the real database. Resuming or kicking off the run again
must fail with a FlowkitError naming the run and the checkpoint's seq, append nothing,
give the lease back, and never start the run afresh."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from attack_proc import Bulky
from flows import PG_URL, backend

from flowkit.exceptions import FlowkitError

# SQL run against the latest checkpoint of run :run (seq :seq)
DAMAGE = {
    "state-truncated": "UPDATE flowkit_checkpoints SET state = substr(state, 1, 7) "
    "WHERE run_id = :run AND seq = :seq",
    "state-not-an-object": "UPDATE flowkit_checkpoints SET state = '[1, 2]' "
    "WHERE run_id = :run AND seq = :seq",
    "state-field-wrong-type": "UPDATE flowkit_checkpoints SET state = "
    '\'{"id": "\' || run_id || \'", "legs": 5}\' WHERE run_id = :run AND seq = :seq',
    "meta-truncated": "UPDATE flowkit_checkpoints SET meta = substr(meta, 1, 9) "
    "WHERE run_id = :run AND seq = :seq",
    "position-wrong-type": "UPDATE flowkit_checkpoints SET meta = '{\"position\": 5}' "
    "WHERE run_id = :run AND seq = :seq",
    "position-malformed": "UPDATE flowkit_checkpoints SET meta = "
    '\'{"position": {"pending": 5, "answers": []}, "state_version": 1}\' '
    "WHERE run_id = :run AND seq = :seq",
    "blob-missing": "DELETE FROM flowkit_blobs WHERE run_id = :run",
}


def _damage(spec: str, sql: str, run_id: str, seq: int) -> None:
    if spec.startswith("sqlite:"):
        connection = sqlite3.connect(spec.partition(":")[2])
        try:
            connection.execute(sql, {"run": run_id, "seq": seq})
            connection.commit()
        finally:
            connection.close()
        return
    import asyncpg

    async def run() -> None:
        connection = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            args: list[Any] = [run_id]
            if ":seq" in sql:
                args.append(seq)
            await connection.execute(sql.replace(":run", "$1").replace(":seq", "$2::bigint"), *args)
        finally:
            await connection.close()

    asyncio.run(run())


def _half_finished(spec: str, run_id: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """A run whose `load` committed (seq 2) and whose `settle` failed: the latest seq."""
    monkeypatch.setattr(Bulky, "halt_at", "settle")
    p = backend(spec)
    try:
        with pytest.raises(RuntimeError, match="halted at settle"):
            Bulky(persistence=p).kickoff(inputs={"id": run_id})
        latest = p.load_checkpoint(run_id)
        assert latest is not None and latest.method_name == "load"
        return latest.seq
    finally:
        p.close()
        monkeypatch.setattr(Bulky, "halt_at", None)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("action", ["resume", "kickoff"])
def test_a_damaged_latest_checkpoint_is_named_never_restarted(
    backend_spec: str, run_id: str, damage: str, action: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """resume(run_id) / kickoff(inputs={"id": run_id}) of a run whose latest checkpoint is
    damaged raises a FlowkitError naming the run and the seq; nothing is appended, no
    method runs, and the lease is given back."""
    if action == "kickoff" and damage.startswith("position"):
        pytest.skip(
            "a kickoff of an existing id starts from the starts: it never reads the position"
        )
    seq = _half_finished(backend_spec, run_id, monkeypatch)
    _damage(backend_spec, DAMAGE[damage], run_id, seq)
    p = backend(backend_spec)
    try:
        flow = Bulky(persistence=p)
        go: Any = (
            (lambda: flow.resume(run_id))
            if action == "resume"
            else (lambda: flow.kickoff(inputs={"id": run_id}))
        )
        with pytest.raises(FlowkitError) as caught:
            go()
        message = str(caught.value)
        assert run_id in message, message
        assert re.search(rf"(seq|checkpoint) {seq}\b", message), message
        run = p.get_run(run_id)
        assert run is not None
        assert (run.last_seq, run.lease_owner) == (seq, None), (run.last_seq, run.lease_owner)
    finally:
        p.close()


# SQL run against the run row of run :run (SQLite stores any type in any column)
RUN_DAMAGE = {
    "last-seq-text": "UPDATE flowkit_runs SET last_seq = 'abc' WHERE run_id = :run",
    "lease-expiry-text": "UPDATE flowkit_runs SET lease_owner = 'h:1:2:3', "
    "lease_expires_at = 'soon' WHERE run_id = :run",
    "created-at-text": "UPDATE flowkit_runs SET created_at = 'yesterday' WHERE run_id = :run",
}


@pytest.mark.parametrize("damage", sorted(RUN_DAMAGE))
def test_a_damaged_run_row_is_named(
    tmp_path: Path, run_id: str, damage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """resume of a run whose run row holds text in a numeric column (SQLite) raises a
    FlowkitError naming the run."""
    spec = f"sqlite:{tmp_path / 'runs.db'}"
    _half_finished(spec, run_id, monkeypatch)
    _damage(spec, RUN_DAMAGE[damage], run_id, 0)
    p = backend(spec)
    try:
        with pytest.raises(FlowkitError, match=re.escape(run_id)):
            Bulky(persistence=p).resume(run_id)
    finally:
        p.close()
