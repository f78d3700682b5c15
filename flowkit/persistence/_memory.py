"""InMemoryFlowPersistence: every capability, kept in this process's memory.

The operations are the shared algorithm of ``_store_backend``; this module is the store:
three dicts behind one lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from flowkit.persistence._records import (
    Checkpoint,
    RunRecord,
    decode_object,
    decode_state,
    utc_from_timestamp,
)
from flowkit.persistence._store import PendingCheckpoint, RunStore
from flowkit.persistence._store_backend import StoreBackend


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    method_name: str
    state: str  # JSON text, so callers never share objects with the store
    meta: str
    created_at: float
    blobs: frozenset[str]


class MemoryStore(RunStore):
    """Runs in dicts; one lock guards them all (each operation is short)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.runs: dict[str, RunRecord] = {}
        self.checkpoints: dict[str, dict[int, StoredCheckpoint]] = {}
        self.blobs: dict[str, dict[str, str]] = {}

    def lock(self, run_id: str) -> AbstractContextManager[Any]:
        return self._lock

    def read_run(self, run_id: str) -> RunRecord | None:
        return self.runs.get(run_id)

    def write_run(self, run: RunRecord) -> None:
        self.runs[run.run_id] = run
        self.checkpoints.setdefault(run.run_id, {})

    def commit_checkpoint(self, run: RunRecord, pending: PendingCheckpoint) -> None:
        # Under the lock nobody sees the dicts between these lines: one commit.
        run_id = run.run_id
        encoded = pending.encoded
        self.blobs.setdefault(run_id, {}).update(encoded.blobs)
        self.checkpoints.setdefault(run_id, {})[pending.seq] = StoredCheckpoint(
            pending.method_name,
            encoded.text,
            pending.meta_text,
            pending.at,
            frozenset(encoded.blobs),
        )
        self.runs[run_id] = run

    def read_checkpoint(self, run_id: str, seq: int) -> Checkpoint | None:
        stored = self.checkpoints.get(run_id, {}).get(seq)
        if stored is None:
            return None
        blobs = self.blobs.get(run_id, {})
        return Checkpoint(
            run_id=run_id,
            seq=seq,
            method_name=stored.method_name,
            state=decode_state(stored.state, blobs.get, run_id=run_id, seq=seq),
            created_at=utc_from_timestamp(stored.created_at),
            meta=decode_object(stored.meta, run_id=run_id, seq=seq, what="meta"),
        )

    def checkpoint_seqs(self, run_id: str) -> list[int]:
        return sorted(self.checkpoints.get(run_id, {}))

    def drop_checkpoints(self, run_id: str, doomed: list[int], kept: list[int]) -> None:
        checkpoints = self.checkpoints[run_id]
        for seq in doomed:
            del checkpoints[seq]
        used = set().union(*(checkpoints[seq].blobs for seq in kept))
        blobs = self.blobs.get(run_id, {})
        for digest in set(blobs) - used:
            del blobs[digest]

    def drop_run(self, run_id: str) -> bool:
        with self._lock:
            self.checkpoints.pop(run_id, None)
            self.blobs.pop(run_id, None)
            return self.runs.pop(run_id, None) is not None

    def all_runs(self) -> Iterable[RunRecord]:
        with self._lock:
            return list(self.runs.values())


class InMemoryFlowPersistence(StoreBackend):
    """Keeps runs in a dict; for tests and short-lived processes.

    Thread-safe. States are stored as JSON text, so what you get back is always a copy and
    data that could not be stored by a durable backend is refused here too::

        persistence = InMemoryFlowPersistence()
        persistence.save_state("run-1", "start", {"id": "run-1", "n": 1})
        assert persistence.load_state("run-1") == {"id": "run-1", "n": 1}
    """

    _store: MemoryStore

    def __init__(self, *, secret_key: str | bytes | None = None) -> None:
        self.secret_key = secret_key
        self._store = MemoryStore()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<{len(self._store.runs)} runs>)"
