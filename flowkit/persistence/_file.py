"""FileFlowPersistence: every capability, as JSON files in a directory.

Layout (one directory per run, so loading the latest checkpoint reads two small files)::

    <directory>/runs/<run>/run.json             the run record; its last_seq commits a save
    <directory>/runs/<run>/000000000001.json    one file per checkpoint
    <directory>/runs/<run>/blobs/<sha256>.json  big state fields, stored once per run
    <directory>/runs/<run>/.lock                an OS file lock: one writer per run

Files are written atomically (temporary file, fsync, rename, fsync of the folder). A
checkpoint file becomes visible only when run.json points at it, so a crash between the
two writes leaves the previous checkpoint as the latest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
from flowkit.persistence._records import Checkpoint, RunRecord, utc_from_timestamp

_SAFE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,99}")
_CHECKPOINT_FILE = re.compile(r"(\d{12})\.json")

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock_file(fd: int) -> None:
        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
                return
            except OSError:  # LK_LOCK gives up after ~10 s; keep waiting
                continue

    def _unlock_file(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock_file(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)

    def _unlock_file(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _fsync_dir(path: Path) -> None:
    if sys.platform == "win32":  # pragma: no cover - folders cannot be fsynced there
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _run_to_json(run: RunRecord) -> str:
    expires = run.lease_expires_at
    return dumps(
        {
            "run_id": run.run_id,
            "flow_name": run.flow_name,
            "status": run.status,
            "created_at": run.created_at.timestamp(),
            "updated_at": run.updated_at.timestamp(),
            "last_seq": run.last_seq,
            "parent_run_id": run.parent_run_id,
            "parent_seq": run.parent_seq,
            "fingerprint": run.fingerprint,
            "info": run.info,
            "lease_owner": run.lease_owner,
            "lease_expires_at": None if expires is None else expires.timestamp(),
        },
        what="run record",
    )


def _run_from_json(text: str, run_id: str) -> RunRecord:
    data = decode_object(text, run_id=run_id, seq=None, what="run record (run.json)")
    try:
        expires = data["lease_expires_at"]
        return RunRecord(
            run_id=data["run_id"],
            flow_name=data["flow_name"],
            status=data["status"],
            created_at=utc_from_timestamp(data["created_at"]),
            updated_at=utc_from_timestamp(data["updated_at"]),
            last_seq=int(data["last_seq"]),
            parent_run_id=data["parent_run_id"],
            parent_seq=data["parent_seq"],
            fingerprint=data["fingerprint"],
            info=dict(data["info"]),
            lease_owner=data["lease_owner"],
            lease_expires_at=None if expires is None else utc_from_timestamp(expires),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise corrupt(run_id, None, f"run.json lacks a valid field ({exc})") from exc


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
        if _SAFE_NAME.fullmatch(run_id):
            return self._runs_dir / run_id
        # Ids with capitals or odd characters: hashed, so case-insensitive file systems
        # and reserved characters never make two runs share a folder.
        return self._runs_dir / ("~" + hashlib.sha256(run_id.encode()).hexdigest()[:40])

    @contextlib.contextmanager
    def _locked(self, run_dir: Path) -> Iterator[None]:
        lock_path = run_dir / ".lock"
        while True:
            run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                _lock_file(fd)
                try:
                    current = os.stat(lock_path)
                except FileNotFoundError:
                    current = None
                # delete_run moves the folder away while we wait: lock the new one then.
                if current is not None and os.path.samestat(os.fstat(fd), current):
                    break
                _unlock_file(fd)
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        try:
            yield
        finally:
            _unlock_file(fd)
            os.close(fd)

    def _read_run(self, run_dir: Path, run_id: str) -> RunRecord | None:
        try:
            text = (run_dir / "run.json").read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return _run_from_json(text, run_id)

    def _write_run(self, run_dir: Path, run: RunRecord) -> None:
        _write_atomic(run_dir / "run.json", _run_to_json(run))
        _fsync_dir(run_dir)

    def _read_checkpoint(self, run_dir: Path, run_id: str, seq: int) -> Checkpoint | None:
        try:
            text = (run_dir / f"{seq:012d}.json").read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        data = decode_object(text, run_id=run_id, seq=seq, what="checkpoint file")
        state = data.get("state")
        if not isinstance(state, dict) or not isinstance(data.get("meta"), dict):
            raise corrupt(run_id, seq, "its file lacks the state or meta object")

        def fetch_blob(digest: str) -> str | None:
            try:
                return (run_dir / "blobs" / f"{digest}.json").read_text(encoding="utf-8")
            except (FileNotFoundError, ValueError):
                return None

        try:
            created_at = utc_from_timestamp(data["created_at"])
            method_name = str(data["method_name"])
        except (KeyError, TypeError, ValueError) as exc:
            raise corrupt(run_id, seq, f"its file lacks a valid field ({exc})") from exc
        return Checkpoint(
            run_id=run_id,
            seq=seq,
            method_name=method_name,
            state=inflate_state(state, fetch_blob, run_id=run_id, seq=seq),
            created_at=created_at,
            meta=data["meta"],
        )

    def _seqs(self, run_dir: Path) -> list[int]:
        try:
            names = os.listdir(run_dir)
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for n in names if (m := _CHECKPOINT_FILE.fullmatch(n)))

    # -- required ------------------------------------------------------------------

    def save_state(self, flow_uuid: str, method_name: str, state_data: dict[str, Any]) -> None:
        self.save_checkpoint(flow_uuid, method_name, state_data, expected_seq=None)

    def load_state(self, flow_uuid: str) -> dict[str, Any] | None:
        checkpoint = self.load_checkpoint(flow_uuid)
        return None if checkpoint is None else checkpoint.state

    # -- history -------------------------------------------------------------------

    def history(self, run_id: str) -> list[Checkpoint]:
        run_dir = self._run_dir(run_id)
        found = (self._read_checkpoint(run_dir, run_id, seq) for seq in self._seqs(run_dir))
        return [checkpoint for checkpoint in found if checkpoint is not None]

    def load_checkpoint(self, run_id: str, seq: int | None = None) -> Checkpoint | None:
        run_dir = self._run_dir(run_id)
        if seq is not None:
            return self._read_checkpoint(run_dir, run_id, seq)
        run = self._read_run(run_dir, run_id)
        if run is None or run.last_seq == 0:
            return None
        checkpoint = self._read_checkpoint(run_dir, run_id, run.last_seq)
        if checkpoint is None and self._read_run(run_dir, run_id) is not None:
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
        with self._locked(run_dir):
            existing = self._read_run(run_dir, run_id)
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
            self._write_run(run_dir, run)
            return self._read_run(run_dir, run_id) or run

    def get_run(self, run_id: str) -> RunRecord | None:
        return self._read_run(self._run_dir(run_id), run_id)

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
        with self._locked(run_dir):
            run = self._read_run(run_dir, run_id)
            if run is None:
                raise _rules.run_not_found(run_id, "update_run")
            run = run.replace(updated_at=utc_from_timestamp(_rules.now()), **changes)
            self._write_run(run_dir, run)
            return self._read_run(run_dir, run_id) or run

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
                run = self._read_run(Path(folder.path), folder.name)
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
        with self._locked(run_dir):
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
        with self._locked(run_dir):
            seqs = self._seqs(run_dir)
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
            _fsync_dir(run_dir)
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
        with self._locked(run_dir):
            at = _rules.now()
            run = self._read_run(run_dir, run_id)
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
            run = self._append(run_dir, run, method_name, encoded, meta_text, "running", None, at)
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
        with self._locked(run_dir):
            run = self._read_run(run_dir, run_id)
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
            run = self._append(run_dir, run, method_name, encoded, meta_text, status, flow_name, at)
        return self._saved(run, method_name, encoded, meta_text)

    def _append(
        self,
        run_dir: Path,
        run: RunRecord,
        method_name: str,
        encoded: EncodedState,
        meta_text: str,
        status: str,
        flow_name: str | None,
        at: float,
    ) -> RunRecord:
        """Write the next checkpoint of ``run`` and commit it in run.json (checks done;
        the caller holds the run's lock). Returns the run as written."""
        seq = run.last_seq + 1
        if encoded.blobs:
            blob_dir = run_dir / "blobs"
            blob_dir.mkdir(exist_ok=True)
            for digest, text in encoded.blobs.items():
                if not (blob_dir / f"{digest}.json").exists():
                    _write_atomic(blob_dir / f"{digest}.json", text)
            _fsync_dir(blob_dir)
        body = (
            f'{{"seq":{seq},"method_name":{dumps(method_name, what="method_name")},'
            f'"created_at":{at!r},"blobs":{dumps(sorted(encoded.blobs), what="blobs")},'
            f'"meta":{meta_text},"state":{encoded.text}}}'
        )
        _write_atomic(run_dir / f"{seq:012d}.json", body)
        run = run.replace(
            last_seq=seq,
            status=status,
            updated_at=utc_from_timestamp(at),
            flow_name=run.flow_name if run.flow_name is not None else flow_name,
        )
        self._write_run(run_dir, run)
        return run

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
        with self._locked(run_dir):
            run = self._read_run(run_dir, run_id)
            if run is None:
                raise _rules.run_not_found(run_id, "acquire_lease")
            run = _rules.acquire(run, owner, ttl, _rules.now())
            self._write_run(run_dir, run)
            return run

    def renew_lease(self, run_id: str, owner: str, ttl: float) -> None:
        run_dir = self._run_dir(run_id)
        if not run_dir.exists():
            raise _rules.lease_lost(run_id, owner, None)
        with self._locked(run_dir):
            run = self._read_run(run_dir, run_id)
            self._write_run(run_dir, _rules.renew(run, run_id, owner, ttl, _rules.now()))

    def release_lease(self, run_id: str, owner: str) -> None:
        run_dir = self._run_dir(run_id)
        if not run_dir.exists():
            return
        with self._locked(run_dir):
            run = self._read_run(run_dir, run_id)
            if run is not None and run.lease_owner == owner:
                self._write_run(run_dir, run.replace(lease_owner=None, lease_expires_at=None))
