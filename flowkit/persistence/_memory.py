"""InMemoryFlowPersistence: every capability, kept in this process's memory."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from flowkit.persistence import _rules
from flowkit.persistence._base import FlowPersistence
from flowkit.persistence._encoding import (
    EncodedState,
    decode_object,
    decode_state,
    dumps,
    encode_state,
)
from flowkit.persistence._records import Checkpoint, RunRecord, utc_from_timestamp


@dataclass(frozen=True, slots=True)
class _StoredCheckpoint:
    method_name: str
    state: str  # JSON text, so callers never share objects with the store
    meta: str
    created_at: float
    blobs: frozenset[str]


class InMemoryFlowPersistence(FlowPersistence):
    """Keeps runs in a dict; for tests and short-lived processes.

    Thread-safe. States are stored as JSON text, so what you get back is always a copy and
    data that could not be stored by a durable backend is refused here too::

        persistence = InMemoryFlowPersistence()
        persistence.save_state("run-1", "start", {"id": "run-1", "n": 1})
        assert persistence.load_state("run-1") == {"id": "run-1", "n": 1}
    """

    supports_history = True
    supports_runs = True
    supports_cas = True
    supports_leases = True

    def __init__(self, *, secret_key: str | bytes | None = None) -> None:
        self.secret_key = secret_key
        self._lock = threading.Lock()
        self._runs: dict[str, RunRecord] = {}
        self._checkpoints: dict[str, dict[int, _StoredCheckpoint]] = {}
        self._blobs: dict[str, dict[str, str]] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<{len(self._runs)} runs>)"

    def _checkpoint(self, run_id: str, seq: int, stored: _StoredCheckpoint) -> Checkpoint:
        blobs = self._blobs.get(run_id, {})
        return Checkpoint(
            run_id=run_id,
            seq=seq,
            method_name=stored.method_name,
            state=decode_state(stored.state, blobs.get, run_id=run_id, seq=seq),
            created_at=utc_from_timestamp(stored.created_at),
            meta=decode_object(stored.meta, run_id=run_id, seq=seq, what="meta"),
        )

    # -- required ------------------------------------------------------------------

    def save_state(self, flow_uuid: str, method_name: str, state_data: dict[str, Any]) -> None:
        self.save_checkpoint(flow_uuid, method_name, state_data, expected_seq=None)

    def load_state(self, flow_uuid: str) -> dict[str, Any] | None:
        checkpoint = self.load_checkpoint(flow_uuid)
        return checkpoint.state if checkpoint is not None else None

    # -- history -------------------------------------------------------------------

    def history(self, run_id: str) -> list[Checkpoint]:
        with self._lock:
            stored = list(self._checkpoints.get(run_id, {}).items())
            return [self._checkpoint(run_id, seq, item) for seq, item in stored]

    def load_checkpoint(self, run_id: str, seq: int | None = None) -> Checkpoint | None:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return None
            wanted = run.last_seq if seq is None else seq
            stored = self._checkpoints.get(run_id, {}).get(wanted)
            return None if stored is None else self._checkpoint(run_id, wanted, stored)

    # -- runs ----------------------------------------------------------------------

    def create_run(
        self,
        run_id: str,
        flow_name: str,
        *,
        parent_run_id: str | None = None,
        parent_seq: int | None = None,
        fingerprint: str | None = None,
        info: dict[str, Any] | None = None,
        exist_ok: bool = False,
    ) -> RunRecord:
        info_text = dumps(info or {}, what="info")
        with self._lock:
            existing = self._runs.get(run_id)
            if existing is not None:
                if exist_ok:
                    return _copy_run(existing)
                raise _rules.run_exists(run_id)
            created = utc_from_timestamp(_rules.now())
            run = RunRecord(
                run_id=run_id,
                flow_name=flow_name,
                status="running",
                created_at=created,
                updated_at=created,
                parent_run_id=parent_run_id,
                parent_seq=parent_seq,
                fingerprint=fingerprint,
                info=decode_object(info_text, run_id=run_id, seq=None, what="info"),
            )
            self._runs[run_id] = run
            self._checkpoints[run_id] = {}
            return _copy_run(run)

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._lock:
            run = self._runs.get(run_id)
            return None if run is None else _copy_run(run)

    def update_run(
        self,
        run_id: str,
        *,
        status: str | None = None,
        fingerprint: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> RunRecord:
        changes: dict[str, Any] = {}
        if status is not None:
            changes["status"] = _rules.check_status(status)
        if fingerprint is not None:
            changes["fingerprint"] = fingerprint
        if info is not None:
            changes["info"] = decode_object(
                dumps(info, what="info"), run_id=run_id, seq=None, what="info"
            )
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                raise _rules.run_not_found(run_id, "update_run")
            run = run.replace(updated_at=utc_from_timestamp(_rules.now()), **changes)
            self._runs[run_id] = run
            return _copy_run(run)

    def list_runs(
        self,
        *,
        flow_name: str | None = None,
        status: str | None = None,
        parent_run_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunRecord]:
        with self._lock:
            runs = list(self._runs.values())
        chosen = _rules.select_runs(
            runs,
            flow_name=flow_name,
            status=status,
            parent_run_id=parent_run_id,
            limit=limit,
            offset=offset,
        )
        return [_copy_run(run) for run in chosen]

    def delete_run(self, run_id: str) -> bool:
        with self._lock:
            self._checkpoints.pop(run_id, None)
            self._blobs.pop(run_id, None)
            return self._runs.pop(run_id, None) is not None

    def prune(self, run_id: str, *, keep_last: int) -> int:
        _rules.check_keep_last(keep_last)
        with self._lock:
            checkpoints = self._checkpoints.get(run_id, {})
            doomed = sorted(checkpoints)[:-keep_last]
            for seq in doomed:
                del checkpoints[seq]
            if doomed:
                kept = set().union(*(item.blobs for item in checkpoints.values()))
                blobs = self._blobs.get(run_id, {})
                for digest in set(blobs) - kept:
                    del blobs[digest]
            return len(doomed)

    # -- compare-and-set -----------------------------------------------------------

    def save_checkpoint(
        self,
        run_id: str,
        method_name: str,
        state: dict[str, Any],
        *,
        expected_seq: int | None,
        meta: dict[str, Any] | None = None,
        status: str = "running",
        flow_name: str | None = None,
        lease_owner: str | None = None,
    ) -> Checkpoint:
        return self._save(
            run_id, method_name, state, expected_seq, meta, status, flow_name, lease_owner
        )

    def _save(
        self,
        run_id: str,
        method_name: str,
        state: dict[str, Any],
        expected_seq: int | None,
        meta: dict[str, Any] | None,
        status: str,
        flow_name: str | None,
        lease_owner: str | None,
        release: bool = False,
    ) -> Checkpoint:
        _rules.check_status(status)
        encoded = encode_state(state)
        meta_text = dumps(meta or {}, what="meta")
        with self._lock:
            at = _rules.now()
            run = self._runs.get(run_id)
            _rules.check_save(
                run_id, run, expected_seq=expected_seq, lease_owner=lease_owner, at=at
            )
            if run is None:
                created = utc_from_timestamp(at)
                run = RunRecord(
                    run_id=run_id,
                    flow_name=flow_name,
                    status="running",
                    created_at=created,
                    updated_at=created,
                )
            run, saved = self._append(run, method_name, encoded, meta_text, status, flow_name, at)
            if release and lease_owner is not None and run.lease_owner == lease_owner:
                self._runs[run_id] = run.replace(lease_owner=None, lease_expires_at=None)
            return saved

    def _append(
        self,
        run: RunRecord,
        method_name: str,
        encoded: EncodedState,
        meta_text: str,
        status: str,
        flow_name: str | None,
        at: float,
    ) -> tuple[RunRecord, Checkpoint]:
        """Store the next checkpoint of ``run`` (checks done; caller holds the lock)."""
        run_id = run.run_id
        seq = run.last_seq + 1
        run = run.replace(
            last_seq=seq,
            status=status,
            updated_at=utc_from_timestamp(at),
            flow_name=run.flow_name if run.flow_name is not None else flow_name,
        )
        self._runs[run_id] = run
        self._blobs.setdefault(run_id, {}).update(encoded.blobs)
        stored = _StoredCheckpoint(
            method_name, encoded.text, meta_text, at, frozenset(encoded.blobs)
        )
        self._checkpoints.setdefault(run_id, {})[seq] = stored
        return run, self._checkpoint(run_id, seq, stored)

    def begin_run(
        self,
        run_id: str,
        flow_name: str,
        *,
        owner: str | None,
        ttl: float | None = None,
        fingerprint: str | None = None,
        info: dict[str, Any] | None = None,
        method_name: str,
        state: dict[str, Any],
        meta: dict[str, Any] | None = None,
        expected_seq: int | None,
    ) -> tuple[RunRecord, Checkpoint]:
        encoded = encode_state(state)
        meta_text = dumps(meta or {}, what="meta")
        info_text = dumps(info or {}, what="info")
        lease_ttl = _rules.lease_ttl(ttl) if owner is not None else 0.0
        with self._lock:
            at = _rules.now()
            run = self._runs.get(run_id)
            if run is None:
                created = utc_from_timestamp(at)
                run = RunRecord(
                    run_id=run_id,
                    flow_name=flow_name,
                    status="running",
                    created_at=created,
                    updated_at=created,
                    fingerprint=fingerprint,
                    info=decode_object(info_text, run_id=run_id, seq=None, what="info"),
                )
            _rules.check_flow(run, flow_name)
            if owner is not None:
                run = _rules.acquire(run, owner, lease_ttl, at)
            _rules.check_save(run_id, run, expected_seq=expected_seq, lease_owner=owner, at=at)
            self._checkpoints.setdefault(run_id, {})
            run, saved = self._append(run, method_name, encoded, meta_text, "running", None, at)
            return _copy_run(run), saved

    def end_run(
        self,
        run_id: str,
        method_name: str,
        state: dict[str, Any],
        *,
        owner: str | None,
        expected_seq: int | None,
        meta: dict[str, Any] | None = None,
        status: str = "completed",
    ) -> Checkpoint:
        return self._save(
            run_id, method_name, state, expected_seq, meta, status, None, owner, release=True
        )

    # -- leases --------------------------------------------------------------------

    def acquire_lease(self, run_id: str, owner: str, ttl: float) -> RunRecord:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                raise _rules.run_not_found(run_id, "acquire_lease")
            run = _rules.acquire(run, owner, ttl, _rules.now())
            self._runs[run_id] = run
            return _copy_run(run)

    def renew_lease(self, run_id: str, owner: str, ttl: float) -> None:
        with self._lock:
            self._runs[run_id] = _rules.renew(
                self._runs.get(run_id), run_id, owner, ttl, _rules.now()
            )

    def release_lease(self, run_id: str, owner: str) -> None:
        with self._lock:
            run = self._runs.get(run_id)
            if run is not None and run.lease_owner == owner:
                self._runs[run_id] = run.replace(lease_owner=None, lease_expires_at=None)


def _copy_run(run: RunRecord) -> RunRecord:
    # RunRecord is frozen, but its info dict is not: hand out a copy.
    info = decode_object(dumps(run.info, what="info"), run_id=run.run_id, seq=None, what="info")
    return run.replace(info=info)
