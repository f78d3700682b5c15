"""Loading the latest checkpoint is an index lookup, whatever the history length."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

from flowkit.persistence import SQLiteFlowPersistence
from flowkit.persistence._schema import SELECT_LATEST

HISTORY = 100_000


def test_latest_of_a_100k_checkpoint_history_is_a_primary_key_lookup(tmp_path: Path) -> None:
    """With 100,000 checkpoints stored, load_checkpoint/load_state return the newest, and
    SQLite's plan for the query searches both tables by key -- it never scans."""
    db = tmp_path / "long.db"
    store = SQLiteFlowPersistence(db)
    store.save_checkpoint("long", "step", {"id": "long", "n": 1}, expected_seq=0)
    store.close()
    # Build the long history quickly with one bulk insert (the API would need 100k commits).
    with contextlib.closing(sqlite3.connect(db)) as raw, raw:
        raw.executemany(
            "INSERT INTO flowkit_checkpoints (run_id, seq, method_name, state, meta, blobs, "
            "created_at) VALUES ('long', ?, 'step', ?, '{}', NULL, 0)",
            ((seq, json.dumps({"id": "long", "n": seq})) for seq in range(2, HISTORY + 1)),
        )
        raw.execute("UPDATE flowkit_runs SET last_seq = ? WHERE run_id = 'long'", (HISTORY,))
        plan = raw.execute("EXPLAIN QUERY PLAN " + SELECT_LATEST, {"run_id": "long"}).fetchall()
    details = [row[-1] for row in plan]
    assert details, "sqlite gave no plan"
    assert not any(d.startswith("SCAN") for d in details), details
    assert all("USING" in d for d in details), details
    store = SQLiteFlowPersistence(db)
    try:
        latest = store.load_checkpoint("long")
        assert latest is not None and latest.seq == HISTORY
        assert store.load_state("long") == {"id": "long", "n": HISTORY}
        assert store.load_checkpoint("long", 50_000).state["n"] == 50_000  # type: ignore[union-attr]
    finally:
        store.close()
