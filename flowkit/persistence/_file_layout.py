"""How FileFlowPersistence keeps a run on disk: one folder per run, written atomically, locked.

Layout (one directory per run, so loading the latest checkpoint reads two small files)::

    <directory>/runs/<run>/run.json             the run record; its last_seq commits a save
    <directory>/runs/<run>/000000000001.json    one file per checkpoint
    <directory>/runs/<run>/blobs/<sha256>.json  big state fields, stored once per run
    <directory>/runs/<run>/.lock                an OS file lock: one writer per run

Every file is written to a temporary name, fsynced and renamed into place, then the
folder is fsynced. A save writes checkpoint ``N+1`` (and its blobs) first and run.json
with ``last_seq = N+1`` last: the rename of run.json is the commit point. A checkpoint
file beyond run.json's ``last_seq`` is uncommitted: readers never see it (history, load,
prune read only seqs up to ``last_seq``), the next save of the run renames its own file
over it, and the next claim removes it with any temporary file a crash left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

from flowkit.persistence._records import (
    Checkpoint,
    RunRecord,
    corrupt,
    decode_object,
    dumps,
    inflate_state,
    utc_from_timestamp,
)
from flowkit.persistence._rows import parse_run_json
from flowkit.persistence._store import PendingCheckpoint

_SAFE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,99}")
_CHECKPOINT_FILE = re.compile(r"(\d{12})\.json")
_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{32}\.tmp")

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


def fsync_dir(path: Path) -> None:
    if sys.platform == "win32":  # pragma: no cover - folders cannot be fsynced there
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
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
    return parse_run_json(text, run_id)  # the one validation step every stored run takes


def run_folder(runs_dir: Path, run_id: str) -> Path:
    """The folder of ``run_id`` under ``runs_dir``."""
    if _SAFE_NAME.fullmatch(run_id):
        return runs_dir / run_id
    # Ids with capitals or odd characters: hashed, so case-insensitive file systems
    # and reserved characters never make two runs share a folder.
    return runs_dir / ("~" + hashlib.sha256(run_id.encode()).hexdigest()[:40])


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
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


def read_run(run_dir: Path, run_id: str) -> RunRecord | None:
    try:
        text = (run_dir / "run.json").read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return _run_from_json(text, run_id)


def write_run(run_dir: Path, run: RunRecord) -> None:
    write_atomic(run_dir / "run.json", _run_to_json(run))
    fsync_dir(run_dir)


def read_checkpoint(run_dir: Path, run_id: str, seq: int) -> Checkpoint | None:
    try:
        text = checkpoint_path(run_dir, seq).read_text(encoding="utf-8")
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


def checkpoint_path(run_dir: Path, seq: int) -> Path:
    return run_dir / f"{seq:012d}.json"


def checkpoint_seqs(run_dir: Path) -> list[int]:
    try:
        names = os.listdir(run_dir)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for n in names if (m := _CHECKPOINT_FILE.fullmatch(n)))


def write_checkpoint(run_dir: Path, pending: PendingCheckpoint) -> None:
    """Write checkpoint ``pending.seq`` and its blobs, durably, without committing it:
    until run.json's ``last_seq`` reaches it, readers ignore it (see module doc)."""
    encoded = pending.encoded
    if encoded.blobs:
        blob_dir = run_dir / "blobs"
        blob_dir.mkdir(exist_ok=True)
        for digest, text in encoded.blobs.items():
            if not (blob_dir / f"{digest}.json").exists():
                write_atomic(blob_dir / f"{digest}.json", text)
        fsync_dir(blob_dir)
    method = dumps(pending.method_name, what="method_name")
    blobs = dumps(sorted(encoded.blobs), what="blobs")
    body = (
        f'{{"seq":{pending.seq},"method_name":{method},"created_at":{pending.at!r},'
        f'"blobs":{blobs},"meta":{pending.meta_text},"state":{encoded.text}}}'
    )
    write_atomic(checkpoint_path(run_dir, pending.seq), body)
    # The checkpoint's rename must be on disk before run.json's can point at it.
    fsync_dir(run_dir)


def remove_uncommitted(run_dir: Path, last_seq: int) -> None:
    """Delete checkpoint files beyond ``last_seq`` and temporary files: what a process
    that died in the middle of a commit left (call with the run's lock held)."""
    removed = False
    for folder in (run_dir, run_dir / "blobs"):
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            continue
        for name in names:
            match = _CHECKPOINT_FILE.fullmatch(name)
            if (match is not None and int(match.group(1)) > last_seq) or _TEMPORARY.fullmatch(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(folder / name)
                removed = True
    if removed:
        fsync_dir(run_dir)
