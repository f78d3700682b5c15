"""The transaction algorithm shared by the memory and file backends.

:class:`StoreBackend` implements every operation of :class:`FlowPersistence` once, over
a :class:`~flowkit.persistence._store.RunStore`: each write is "lock the run, read its
record, check (``_rules``), commit". The memory and file backends are this class plus a
store.
"""

from __future__ import annotations

import json
from typing import Any

from flowkit.persistence import _base, _rules
from flowkit.persistence._base import FlowPersistence
from flowkit.persistence._records import (
    Checkpoint,
    RunRecord,
    corrupt,
    dumps,
    encode_state,
    utc_from_timestamp,
)
from flowkit.persistence._store import PendingCheckpoint, RunStore


def _json_copy(value: dict[str, Any], what: str) -> dict[str, Any]:
    """A private copy of a JSON-ready dict (refused with a clear error otherwise)."""
    copied: dict[str, Any] = json.loads(dumps(value, what=what))
    return copied


def _handed_out(run: RunRecord) -> RunRecord:
    # Records are frozen, their info dict is not: callers get their own copy.
    return run.replace(info=_json_copy(run.info, "info"))


def _new_run(run_id: str, flow_name: str | None, at: float, **fields: Any) -> RunRecord:
    created = utc_from_timestamp(at)
    return RunRecord(
        run_id=run_id,
        flow_name=flow_name,
        status="running",
        created_at=created,
        updated_at=created,
        **fields,
    )


class StoreBackend(FlowPersistence):
    """Every capability, implemented once over ``self._store`` (see module doc)."""

    supports_history = True
    supports_runs = True
    supports_cas = True
    supports_leases = True

    _store: RunStore

    # -- required ------------------------------------------------------------------

    def save_state(self, flow_uuid: str, method_name: str, state_data: dict[str, Any]) -> None:
        self.save_checkpoint(flow_uuid, method_name, state_data, expected_seq=None)

    def load_state(self, flow_uuid: str) -> dict[str, Any] | None:
        checkpoint = self.load_checkpoint(flow_uuid)
        return None if checkpoint is None else checkpoint.state

    # -- history: only committed checkpoints (seq <= last_seq) exist -------------------

    def history(self, run_id: str) -> list[Checkpoint]:
        store = self._store
        with store.reading(run_id):
            run = store.read_run(run_id)
            if run is None:
                return []
            found = (
                store.read_checkpoint(run_id, seq)
                for seq in store.checkpoint_seqs(run_id)
                if seq <= run.last_seq
            )
            # A checkpoint pruned while we list is simply gone.
            return [checkpoint for checkpoint in found if checkpoint is not None]

    def load_checkpoint(self, run_id: str, seq: int | None = None) -> Checkpoint | None:
        store = self._store
        for _ in range(3):
            with store.reading(run_id):
                run = store.read_run(run_id)
                if run is None:
                    return None
                wanted = run.last_seq if seq is None else seq
                if not 1 <= wanted <= run.last_seq:
                    return None
                checkpoint = store.read_checkpoint(run_id, wanted)
                if checkpoint is not None or seq is not None:
                    return checkpoint
                # The latest is missing: a reader without a lock may have raced a commit
                # and a prune; it is damage only if the record still points at it.
                again = store.read_run(run_id)
                if again is None:
                    return None
                if again.last_seq == wanted:
                    raise corrupt(run_id, wanted, "it is missing")
        raise corrupt(run_id, None, "its latest checkpoint keeps disappearing")

    # -- runs ----------------------------------------------------------------------

    # create_run, update_run, list_runs, save_checkpoint, end_run and begin_run are
    # FlowPersistence's: they hand their arguments to the plain seams here as one value
    # (the contract is in FlowPersistence's docstrings).

    def _create_run(self, new: _base.NewRun) -> RunRecord:
        run_id = new.run_id
        info_copy = _json_copy(new.info or {}, "info")
        store = self._store
        with store.lock(run_id):
            existing = store.read_run(run_id)
            if existing is not None:
                if new.exist_ok:
                    return _handed_out(existing)
                raise _rules.run_exists(run_id)
            run = _new_run(
                run_id,
                new.flow_name,
                _rules.now(),
                parent_run_id=new.parent_run_id,
                parent_seq=new.parent_seq,
                fingerprint=new.fingerprint,
                info=info_copy,
            )
            store.discard_uncommitted(run)
            store.write_run(run)
            return _handed_out(run)

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._store.reading(run_id):
            run = self._store.read_run(run_id)
        return None if run is None else _handed_out(run)

    def _update_run(self, update: _base.RunUpdate) -> RunRecord:
        run_id, lease_owner = update.run_id, update.lease_owner
        changes: dict[str, Any] = {}
        if update.status is not None:
            changes["status"] = _rules.check_status(update.status)
        if update.fingerprint is not None:
            changes["fingerprint"] = update.fingerprint
        if update.info is not None:
            changes["info"] = _json_copy(update.info, "info")
        store = self._store
        with self._existing(run_id, "update_run"):
            run = self._must_read(run_id, "update_run")
            at = _rules.now()
            if lease_owner is not None:  # fenced, under the lock the commit holds
                _rules.check_owner(run_id, run, lease_owner, at)
            run = run.replace(updated_at=utc_from_timestamp(at), **changes)
            store.write_run(run)
            return _handed_out(run)

    def _list_runs(self, query: _base.RunQuery) -> list[RunRecord]:
        chosen = _rules.select_runs(
            self._store.all_runs(),
            flow_name=query.flow_name,
            status=query.status,
            parent_run_id=query.parent_run_id,
            limit=query.limit,
            offset=query.offset,
            metadata=query.metadata,
        )
        return [_handed_out(run) for run in chosen]

    def delete_run(self, run_id: str) -> bool:
        return self._store.drop_run(run_id)

    def prune(self, run_id: str, *, keep_last: int) -> int:
        _rules.check_keep_last(keep_last)
        store = self._store
        if not self._exists(run_id):
            return 0
        with store.lock(run_id):
            run = store.read_run(run_id)
            if run is None:
                return 0
            store.discard_uncommitted(run)
            seqs = [seq for seq in store.checkpoint_seqs(run_id) if seq <= run.last_seq]
            doomed, kept = seqs[:-keep_last], seqs[-keep_last:]
            if doomed:
                store.drop_checkpoints(run_id, doomed, kept)
            return len(doomed)

    # -- writes with compare-and-set -------------------------------------------------

    def _write_checkpoint(self, write: _base.CheckpointWrite) -> Checkpoint:
        checked_status = _rules.check_status(write.status)
        run_id, lease_owner, flow_name = write.run_id, write.lease_owner, write.flow_name
        encoded = encode_state(write.state)
        meta_text = dumps(write.meta or {}, what="meta")
        store = self._store
        with store.lock(run_id):
            at = _rules.now()
            run = store.read_run(run_id)
            _rules.check_save(
                run_id, run, expected_seq=write.expected_seq, lease_owner=lease_owner, at=at
            )
            if run is None:
                run = _new_run(run_id, flow_name, at)
                store.discard_uncommitted(run)
            if write.release and lease_owner is not None and run.lease_owner == lease_owner:
                run = run.replace(lease_owner=None, lease_expires_at=None)
            pending = PendingCheckpoint(
                run_id, run.last_seq + 1, write.method_name, encoded, meta_text, at
            )
            store.commit_checkpoint(
                run.replace(
                    last_seq=pending.seq,
                    status=checked_status,
                    updated_at=utc_from_timestamp(at),
                    flow_name=run.flow_name if run.flow_name is not None else flow_name,
                ),
                pending,
            )
        return pending.record()

    def _begin_run(self, start: _base.RunStart) -> tuple[RunRecord, Checkpoint]:
        run_id, flow_name, owner = start.run_id, start.flow_name, start.owner
        encoded = encode_state(start.state)
        meta_text = dumps(start.meta or {}, what="meta")
        info_copy = _json_copy(start.info or {}, "info")
        lease_ttl = _rules.lease_ttl(start.ttl) if owner is not None else 0.0
        store = self._store
        with store.lock(run_id):
            at = _rules.now()
            run = store.read_run(run_id)
            if run is None:
                run = _new_run(run_id, flow_name, at, fingerprint=start.fingerprint, info=info_copy)
            _rules.check_flow(run, flow_name)
            if owner is not None:
                run = _rules.acquire(run, owner, lease_ttl, at)
            expected_seq = start.expected_seq
            _rules.check_save(run_id, run, expected_seq=expected_seq, lease_owner=owner, at=at)
            store.discard_uncommitted(run)
            pending = PendingCheckpoint(
                run_id, run.last_seq + 1, start.method_name, encoded, meta_text, at
            )
            run = run.replace(
                last_seq=pending.seq, status="running", updated_at=utc_from_timestamp(at)
            )
            store.commit_checkpoint(run, pending)
        return _handed_out(run), pending.record()

    # -- leases --------------------------------------------------------------------

    def claim_run(self, run_id: str, owner: str, ttl: float) -> tuple[RunRecord, Checkpoint | None]:
        # The contract is FlowPersistence.claim_run's docstring. Here: one transaction
        # under the run's lock, which also removes what a crashed commit left behind;
        # nothing is written when the latest checkpoint cannot be read back.
        _rules.check_ttl(ttl)
        store = self._store
        with self._existing(run_id, "claim_run"):
            run = self._must_read(run_id, "claim_run")
            run = _rules.acquire(run, owner, ttl, _rules.now())
            store.discard_uncommitted(run)
            latest = None
            if run.last_seq > 0:
                latest = store.read_checkpoint(run_id, run.last_seq)
                if latest is None:
                    raise corrupt(run_id, run.last_seq, "it is missing")
            store.write_run(run)
        return _handed_out(run), latest

    def acquire_lease(self, run_id: str, owner: str, ttl: float) -> RunRecord:
        _rules.check_ttl(ttl)
        with self._existing(run_id, "acquire_lease"):
            run = _rules.acquire(self._must_read(run_id, "acquire_lease"), owner, ttl, _rules.now())
            self._store.write_run(run)
        return _handed_out(run)

    def renew_lease(self, run_id: str, owner: str, ttl: float) -> None:
        _rules.check_ttl(ttl)
        if not self._exists(run_id):
            raise _rules.lease_lost(run_id, owner, None)
        store = self._store
        with store.lock(run_id):
            run = store.read_run(run_id)
            store.write_run(_rules.renew(run, run_id, owner, ttl, _rules.now()))

    def release_lease(self, run_id: str, owner: str) -> None:
        if not self._exists(run_id):
            return
        store = self._store
        with store.lock(run_id):
            run = store.read_run(run_id)
            if run is not None and run.lease_owner == owner:
                store.write_run(run.replace(lease_owner=None, lease_expires_at=None))

    # -- helpers -------------------------------------------------------------------

    def _exists(self, run_id: str) -> bool:
        # Checked before locking, so that operations on unknown runs leave no trace (a
        # file store's lock would create the run's folder).
        with self._store.reading(run_id):
            return self._store.read_run(run_id) is not None

    def _existing(self, run_id: str, operation: str) -> Any:
        if not self._exists(run_id):
            raise _rules.run_not_found(run_id, operation)
        return self._store.lock(run_id)

    def _must_read(self, run_id: str, operation: str) -> RunRecord:
        """(locked) The run's record; it may have been deleted while we waited."""
        run = self._store.read_run(run_id)
        if run is None:
            raise _rules.run_not_found(run_id, operation)
        return run
