"""FileFlowPersistence: every capability, as JSON files in a directory.

The operations are the shared algorithm of ``_store_backend``; this module is the store
that keeps runs in folders. How a folder is laid out, written atomically, committed and
locked is in ``_file_layout``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from flowkit.exceptions import CorruptRunError
from flowkit.persistence import _rules
from flowkit.persistence._file_layout import (
    checkpoint_path,
    checkpoint_seqs,
    fsync_dir,
    locked,
    read_checkpoint,
    read_run,
    remove_uncommitted,
    run_folder,
    write_checkpoint,
    write_run,
)
from flowkit.persistence._records import Checkpoint, RunRecord, decode_object
from flowkit.persistence._store import PendingCheckpoint, RunStore
from flowkit.persistence._store_backend import StoreBackend


class FileStore(RunStore):
    """Runs as folders under ``<directory>/runs`` (see ``_file_layout``)."""

    def __init__(self, directory: Path) -> None:
        self.runs_dir = directory / "runs"

    def folder(self, run_id: str) -> Path:
        return run_folder(self.runs_dir, run_id)

    def lock(self, run_id: str) -> AbstractContextManager[Any]:
        return locked(self.folder(run_id))

    def reading(self, run_id: str) -> AbstractContextManager[Any]:
        # Every file appears by an atomic rename, and a checkpoint counts only once
        # run.json points at it: readers need no lock.
        return nullcontext()

    def read_run(self, run_id: str) -> RunRecord | None:
        return read_run(self.folder(run_id), run_id)

    def write_run(self, run: RunRecord) -> None:
        write_run(self.folder(run.run_id), run)

    def commit_checkpoint(self, run: RunRecord, pending: PendingCheckpoint) -> None:
        run_dir = self.folder(run.run_id)
        write_checkpoint(run_dir, pending)
        write_run(run_dir, run)  # the commit point: run.json now says last_seq = seq

    def read_checkpoint(self, run_id: str, seq: int) -> Checkpoint | None:
        return read_checkpoint(self.folder(run_id), run_id, seq)

    def checkpoint_seqs(self, run_id: str) -> list[int]:
        return checkpoint_seqs(self.folder(run_id))

    def drop_checkpoints(self, run_id: str, doomed: list[int], kept: list[int]) -> None:
        run_dir = self.folder(run_id)
        for seq in doomed:
            os.unlink(checkpoint_path(run_dir, seq))
        referenced: set[str] = set()
        for seq in kept:
            text = checkpoint_path(run_dir, seq).read_text(encoding="utf-8")
            data = decode_object(text, run_id=run_id, seq=seq, what="checkpoint file")
            referenced.update(data.get("blobs", []))
        blob_dir = run_dir / "blobs"
        for name in os.listdir(blob_dir) if blob_dir.exists() else []:
            if name.removesuffix(".json") not in referenced:
                os.unlink(blob_dir / name)
        fsync_dir(run_dir)

    def discard_uncommitted(self, run: RunRecord) -> None:
        remove_uncommitted(self.folder(run.run_id), run.last_seq)

    def drop_run(self, run_id: str) -> bool:
        run_dir = self.folder(run_id)
        if not run_dir.exists():
            return False
        with locked(run_dir):
            existed = (run_dir / "run.json").exists()
            trash = self.runs_dir / f".deleted-{uuid.uuid4().hex}"
            os.replace(run_dir, trash)  # waiting writers see their lock file vanish
        shutil.rmtree(trash, ignore_errors=True)
        return existed

    def all_runs(self) -> Iterator[RunRecord]:
        try:
            folders = list(os.scandir(self.runs_dir))
        except FileNotFoundError:
            return
        for entry in folders:
            if entry.is_dir() and not entry.name.startswith("."):
                try:
                    run = read_run(Path(entry.path), entry.name)
                except CorruptRunError as exc:  # one damaged run must not hide the others
                    _rules.report_unreadable(exc)
                    continue
                if run is not None:
                    yield run


class FileFlowPersistence(StoreBackend):
    """Runs as JSON files under ``directory`` (created on first save).

    Several processes may share the directory: writes to one run are serialised with an
    OS file lock (``fcntl.flock``; ``msvcrt.locking`` on Windows), and a save becomes
    visible in one atomic rename of the run's ``run.json``, so a crash never leaves half a
    save behind. Listing runs reads every run.json, so prefer SQLite when you keep
    thousands of runs::

        persistence = FileFlowPersistence("./flow-runs")
    """

    _store: FileStore

    def __init__(
        self, directory: str | os.PathLike[str], *, secret_key: str | bytes | None = None
    ) -> None:
        self.directory = Path(directory).expanduser()
        self.secret_key = secret_key
        self._store = FileStore(self.directory)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.directory)!r})"

    def _run_dir(self, run_id: str) -> Path:
        """The folder holding ``run_id`` (for tests and tools that look at the files)."""
        return self._store.folder(run_id)
