"""FileFlowPersistence: every capability, as JSON files in a directory.

How a run is laid out on disk, written atomically and locked is in ``_file_layout``; this
module is the backend: each operation's checks and state changes, under the run's lock.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from flowkit.exceptions import CorruptRunError
from flowkit.persistence import _rules
from flowkit.persistence._base import FlowPersistence
from flowkit.persistence._encoding import (
    EncodedState,
    corrupt,
    decode_object,
    dumps,
    encode_state,
    inflate_state,
)
from flowkit.persistence._file_layout import (
    append_checkpoint,
    checkpoint_seqs,
    fsync_dir,
    locked,
    read_checkpoint,
    read_run,
    run_folder,
    write_run,
)
from flowkit.persistence._records import Checkpoint, RunRecord, utc_from_timestamp


class FileFlowPersistence(FlowPersistence):
    """Runs as JSON files under ``directory`` (created on first save).

    Several processes may share the directory: writes to one run are serialised with an
    OS file lock (``fcntl.flock``; ``msvcrt.locking`` on Windows). Listing runs reads
    every run.json, so prefer SQLite when you keep thousands of runs::

        persistence = FileFlowPersistence("./flow-runs")
    """

    supports_history = True
    supports_runs = True
    supports_cas = True
    supports_leases = True

    def __init__(
        self, directory: str | os.PathLike[str], *, secret_key: str | bytes | None = None
    ) -> None:
        self.directory = Path(directory).expanduser()
        self.secret_key = secret_key

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.directory)!r})"

    # -- paths and locking ---------------------------------------------------------

    @property
    def _runs_dir(self) -> Path:
        return self.directory / "runs"

    def _run_dir(self, run_id: str) -> Path:
        return run_folder(self._runs_dir, run_id)

    # -- required ------------------------------------------------------------------

    def save_state(self, flow_uuid: str, method_name: str, state_data: dict[str, Any]) -> None:
        self.save_checkpoint(flow_uuid, method_name, state_data, expected_seq=None)

    def load_state(self, flow_uuid: str) -> dict[str, Any] | None:
        checkpoint = self.load_checkpoint(flow_uuid)
        return None if checkpoint is None else checkpoint.state

    # -- history -------------------------------------------------------------------

    def history(self, run_id: str) -> list[Checkpoint]:
        run_dir = self._run_dir(run_id)
        found = (read_checkpoint(run_dir, run_id, seq) for seq in checkpoint_seqs(run_dir))
        return [checkpoint for checkpoint in found if checkpoint is not None]

    def load_checkpoint(self, run_id: str, seq: int | None = None) -> Checkpoint | None:
        run_dir = self._run_dir(run_id)
        if seq is not None:
            return read_checkpoint(run_dir, run_id, seq)
        run = read_run(run_dir, run_id)
        if run is None or run.last_seq == 0:
            return None
        checkpoint = read_checkpoint(run_dir, run_id, run.last_seq)
        if checkpoint is None and read_run(run_dir, run_id) is not None:
            raise corrupt(run_id, run.last_seq, "its file is missing")
        return checkpoint

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
        info_copy = json.loads(dumps(info or {}, what="info"))
        run_dir = self._run_dir(run_id)
        with locked(run_dir):
            existing = read_run(run_dir, run_id)
            if existing is not None:
                if exist_ok:
                    return existing
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
                info=info_copy,
            )
            write_run(run_dir, run)
            return read_run(run_dir, run_id) or run

    def get_run(self, run_id: str) -> RunRecord | None:
        return read_run(self._run_dir(run_id), run_id)

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
            changes["info"] = json.loads(dumps(info, what="info"))
        run_dir = self._run_dir(run_id)
        if not run_dir.exists():
            raise _rules.run_not_found(run_id, "update_run")
        with locked(run_dir):
            run = read_run(run_dir, run_id)
            if run is None:
                raise _rules.run_not_found(run_id, "update_run")
            run = run.replace(updated_at=utc_from_timestamp(_rules.now()), **changes)
            write_run(run_dir, run)
            return read_run(run_dir, run_id) or run

    def list_runs(
        self,
        *,
        flow_name: str | None = None,
        status: str | None = None,
        parent_run_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunRecord]:
        try:
            folders = list(os.scandir(self._runs_dir))
        except FileNotFoundError:
            folders = []
        runs = []
        for folder in folders:
            if folder.is_dir() and not folder.name.startswith("."):
                try:
                    run = read_run(Path(folder.path), folder.name)
                except CorruptRunError as exc:  # one damaged run must not hide the others
                    _rules.report_unreadable(exc)
                    continue
                if run is not None:
                    runs.append(run)
        return _rules.select_runs(
            runs,
            flow_name=flow_name,
            status=status,
            parent_run_id=parent_run_id,
            limit=limit,
            offset=offset,
        )

    def delete_run(self, run_id: str) -> bool:
        run_dir = self._run_dir(run_id)
        if not run_dir.exists():
            return False
        with locked(run_dir):
            existed = (run_dir / "run.json").exists()
            trash = self._runs_dir / f".deleted-{uuid.uuid4().hex}"
            os.replace(run_dir, trash)  # waiting writers see their lock file vanish
        shutil.rmtree(trash, ignore_errors=True)
        return existed

    def prune(self, run_id: str, *, keep_last: int) -> int:
        _rules.check_keep_last(keep_last)
        run_dir = self._run_dir(run_id)
        if not run_dir.exists():
            return 0
        with locked(run_dir):
            seqs = checkpoint_seqs(run_dir)
            doomed, kept = seqs[:-keep_last], seqs[-keep_last:]
            if not doomed:
                return 0
            for seq in doomed:
                os.unlink(run_dir / f"{seq:012d}.json")
            referenced: set[str] = set()
            for seq in kept:
                text = (run_dir / f"{seq:012d}.json").read_text(encoding="utf-8")
                referenced.update(
                    decode_object(text, run_id=run_id, seq=seq, what="checkpoint file").get(
                        "blobs", []
                    )
                )
            blob_dir = run_dir / "blobs"
            for name in os.listdir(blob_dir) if blob_dir.exists() else []:
                if name.removesuffix(".json") not in referenced:
                    os.unlink(blob_dir / name)
            fsync_dir(run_dir)
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
        info_copy = json.loads(dumps(info or {}, what="info"))
        lease_ttl = _rules.lease_ttl(ttl) if owner is not None else 0.0
        run_dir = self._run_dir(run_id)
        with locked(run_dir):
            at = _rules.now()
            run = read_run(run_dir, run_id)
            if run is None:
                created = utc_from_timestamp(at)
                run = RunRecord(
                    run_id=run_id,
                    flow_name=flow_name,
                    status="running",
                    created_at=created,
                    updated_at=created,
                    fingerprint=fingerprint,
                    info=info_copy,
                )
            _rules.check_flow(run, flow_name)
            if owner is not None:
                run = _rules.acquire(run, owner, lease_ttl, at)
            _rules.check_save(run_id, run, expected_seq=expected_seq, lease_owner=owner, at=at)
            run = append_checkpoint(
                run_dir, run, method_name, encoded, meta_text, "running", None, at
            )
        return run, self._saved(run, method_name, encoded, meta_text)

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
        run_dir = self._run_dir(run_id)
        with locked(run_dir):
            run = read_run(run_dir, run_id)
            at = _rules.now()
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
            if release and lease_owner is not None and run.lease_owner == lease_owner:
                run = run.replace(lease_owner=None, lease_expires_at=None)
            run = append_checkpoint(
                run_dir, run, method_name, encoded, meta_text, status, flow_name, at
            )
        return self._saved(run, method_name, encoded, meta_text)

    @staticmethod
    def _saved(
        run: RunRecord, method_name: str, encoded: EncodedState, meta_text: str
    ) -> Checkpoint:
        blobs = encoded.blobs
        seq = run.last_seq
        return Checkpoint(
            run_id=run.run_id,
            seq=seq,
            method_name=method_name,
            state=inflate_state(json.loads(encoded.text), blobs.get, run_id=run.run_id, seq=seq),
            created_at=run.updated_at,
            meta=json.loads(meta_text),
        )

    # -- leases --------------------------------------------------------------------

    def acquire_lease(self, run_id: str, owner: str, ttl: float) -> RunRecord:
        run_dir = self._run_dir(run_id)
        if not run_dir.exists():
            raise _rules.run_not_found(run_id, "acquire_lease")
        with locked(run_dir):
            run = read_run(run_dir, run_id)
            if run is None:
                raise _rules.run_not_found(run_id, "acquire_lease")
            run = _rules.acquire(run, owner, ttl, _rules.now())
            write_run(run_dir, run)
            return run

    def renew_lease(self, run_id: str, owner: str, ttl: float) -> None:
        run_dir = self._run_dir(run_id)
        if not run_dir.exists():
            raise _rules.lease_lost(run_id, owner, None)
        with locked(run_dir):
            run = read_run(run_dir, run_id)
            write_run(run_dir, _rules.renew(run, run_id, owner, ttl, _rules.now()))

    def release_lease(self, run_id: str, owner: str) -> None:
        run_dir = self._run_dir(run_id)
        if not run_dir.exists():
            return
        with locked(run_dir):
            run = read_run(run_dir, run_id)
            if run is not None and run.lease_owner == owner:
                write_run(run_dir, run.replace(lease_owner=None, lease_expires_at=None))
