"""The small storage interface under the memory and file backends: :class:`RunStore`.

Both backends run the same transaction algorithm (``_store_backend``); what differs is
only where a run record, a checkpoint and a blob live. A store provides a per-run lock
and a handful of primitives that read or write under it. The algorithm decides (CAS,
leases, statuses); the store only keeps bytes.

The one rule a store must keep: :meth:`RunStore.commit_checkpoint` makes the checkpoint
and the run record that points at it (``last_seq``) visible together, or not at all.
Anything a store holds beyond the record's ``last_seq`` is uncommitted: the algorithm
never reads it, and :meth:`RunStore.discard_uncommitted` removes it.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from flowkit.persistence._records import (
    Checkpoint,
    EncodedState,
    RunRecord,
    inflate_state,
    utc_from_timestamp,
)


@dataclass(frozen=True, slots=True)
class PendingCheckpoint:
    """A checkpoint ready to be committed: the checks are done, the JSON is encoded."""

    run_id: str
    seq: int
    method_name: str
    encoded: EncodedState
    meta_text: str
    at: float  # epoch seconds, its created_at

    def record(self) -> Checkpoint:
        """The record a save returns; state and meta are parsed only when read."""
        encoded, meta_text = self.encoded, self.meta_text

        def parse() -> tuple[dict[str, Any], dict[str, Any]]:
            state = inflate_state(
                json.loads(encoded.text), encoded.blobs.get, run_id=self.run_id, seq=self.seq
            )
            return state, json.loads(meta_text)

        return Checkpoint.deferred(
            self.run_id, self.seq, self.method_name, utc_from_timestamp(self.at), parse
        )


class RunStore(ABC):
    """Where one backend keeps runs; every method is synchronous and may block.

    Methods marked *locked* are called only inside ``with store.lock(run_id)`` for the
    same run (the algorithm's transaction); *reading* methods inside
    ``with store.reading(run_id)``; the others take care of themselves.
    """

    @abstractmethod
    def lock(self, run_id: str) -> AbstractContextManager[Any]:
        """Exclusive access to ``run_id`` for one transaction (across threads, and
        across processes for a store shared by several)."""

    def reading(self, run_id: str) -> AbstractContextManager[Any]:
        """Context for a consistent read of ``run_id``; :meth:`lock` unless the store's
        writes are atomic for readers (then nothing)."""
        return self.lock(run_id)

    @abstractmethod
    def read_run(self, run_id: str) -> RunRecord | None:
        """(reading or locked) The run's record, None if there is none. The algorithm
        never mutates what it gets, and copies ``info`` before handing a record out."""

    @abstractmethod
    def write_run(self, run: RunRecord) -> None:
        """(locked) Create or replace the run's record; checkpoints are unchanged."""

    @abstractmethod
    def commit_checkpoint(self, run: RunRecord, pending: PendingCheckpoint) -> None:
        """(locked) Store ``pending`` (its seq is ``run.last_seq``) and ``run`` as one
        commit: after a crash either both are visible or the store is as before."""

    @abstractmethod
    def read_checkpoint(self, run_id: str, seq: int) -> Checkpoint | None:
        """(reading or locked) Checkpoint ``seq`` whole (blobs inflated), None if absent.

        Raises:
            CorruptCheckpointError: It is stored but cannot be read back.
        """

    @abstractmethod
    def checkpoint_seqs(self, run_id: str) -> list[int]:
        """(reading or locked) Ascending seqs stored for the run, committed or not."""

    @abstractmethod
    def drop_checkpoints(self, run_id: str, doomed: list[int], kept: list[int]) -> None:
        """(locked) Delete checkpoints ``doomed`` and the blobs no ``kept`` one uses."""

    def discard_uncommitted(self, run: RunRecord) -> None:  # noqa: B027  (optional hook)
        """(locked) Remove what a crashed commit left beyond ``run.last_seq``. Stores whose
        commits cannot be cut in half have nothing to do."""

    @abstractmethod
    def drop_run(self, run_id: str) -> bool:
        """Delete the run, its checkpoints and blobs; True if its record existed."""

    @abstractmethod
    def all_runs(self) -> Iterable[RunRecord]:
        """Every run record (no order)."""
