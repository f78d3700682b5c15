"""The one step every stored row goes through before it becomes a record.

SQLite stores any value in any column and a JSON column may hold anything, so a row read
back is checked field by field: text where text belongs, whole numbers for ``seq``,
finite epoch seconds for timestamps, a known status, JSON objects for state, meta and
info, a JSON list of hashes for blob references. Anything else raises
:class:`~flowkit.exceptions.CorruptRunError` (a run row) or
:class:`~flowkit.exceptions.CorruptCheckpointError` (a checkpoint row) naming the run and
the seq, never a bare ``TypeError`` / ``ValueError`` / ``KeyError``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from flowkit.exceptions import CorruptRunError
from flowkit.persistence._records import (
    RUN_STATUSES,
    Checkpoint,
    RunRecord,
    corrupt,
    decode_object,
    decode_state,
    utc_from_timestamp,
)

Row = tuple[Any, ...]

_HOW_TO_RECOVER = (
    "Restore the database from a backup or delete the run (delete_run / `flowkit delete`); "
    "flowkit will not start it afresh silently."
)


class _Bad(Exception):
    """A column holds a value of the wrong kind (caught here, turned into a Corrupt*)."""

    def __init__(self, column: str, value: Any, expected: str) -> None:
        self.problem = f"its {column} is {_short(value)}, not {expected}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _text(value: Any, column: str) -> str:
    if type(value) is not str:
        raise _Bad(column, value, "text")
    return value


def _optional_text(value: Any, column: str) -> str | None:
    return None if value is None else _text(value, column)


def _whole(value: Any, column: str, minimum: int) -> int:
    if type(value) is not int or value < minimum:
        raise _Bad(column, value, f"a whole number >= {minimum}")
    return value


def _time(value: Any, column: str) -> datetime:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise _Bad(column, value, "epoch seconds")
    try:
        return utc_from_timestamp(value)
    except (OverflowError, OSError, ValueError):
        raise _Bad(column, value, "epoch seconds in a datetime's range") from None


def corrupt_run(run_id: str, problem: str) -> CorruptRunError:
    return CorruptRunError(
        f"Stored run {run_id!r} cannot be read back: {problem}. {_HOW_TO_RECOVER}",
        run_id=run_id,
    )


RUN_FIELDS = (
    "run_id",
    "flow_name",
    "status",
    "created_at",
    "updated_at",
    "last_seq",
    "parent_run_id",
    "parent_seq",
    "fingerprint",
    "info",
    "lease_owner",
    "lease_expires_at",
)


def run_from_row(row: Row) -> RunRecord:
    """A ``flowkit_runs`` row (``_schema.RUN_COLUMNS`` order) as a checked RunRecord."""
    run_id = row[0]
    if type(run_id) is not str:
        raise corrupt_run(repr(run_id), f"its run_id is {_short(run_id)}, not text")
    if type(row[9]) is not str:
        raise corrupt_run(run_id, f"its info is {_short(row[9])}, not JSON text")
    return _checked_run(run_id, row, _run_info(row[9], run_id))


def run_from_mapping(data: Any, run_id: str) -> RunRecord:
    """A run record stored as a JSON object (``RUN_FIELDS``, ``info`` an object), checked
    like a row; ``run_id`` names the run in errors."""
    if type(data) is not dict:
        raise corrupt_run(run_id, "its record is not a JSON object")
    missing = [name for name in RUN_FIELDS if name not in data]
    if missing:
        raise corrupt_run(run_id, f"its record lacks {', '.join(missing)}")
    if type(data["run_id"]) is not str:
        raise corrupt_run(run_id, f"its run_id is {_short(data['run_id'])}, not text")
    run_id = data["run_id"]  # the folder's name may be a hash of it
    info = data["info"]
    if type(info) is not dict:
        raise corrupt_run(run_id, f"its info is {_short(info)}, not a JSON object")
    return _checked_run(run_id, tuple(data[name] for name in RUN_FIELDS), info)


def _checked_run(run_id: str, row: Row, info: dict[str, Any]) -> RunRecord:
    try:
        # read as "no labels" / "no error", damaged ones would be replaced by the next
        # kickoff(metadata=...) or failure without anyone knowing
        for key in ("metadata", "error"):
            if type(info.get(key, {})) is not dict and (key, info[key]) != ("error", None):
                raise _Bad(f"info.{key}", info[key], "a JSON object")
        status = _text(row[2], "status")
        if status not in RUN_STATUSES:
            raise _Bad("status", status, "one of " + ", ".join(sorted(RUN_STATUSES)))
        parent_seq = row[7]
        expires = row[11]
        return RunRecord(
            run_id=row[0],
            flow_name=_optional_text(row[1], "flow_name"),
            status=status,  # type: ignore[arg-type]  # checked against RUN_STATUSES
            created_at=_time(row[3], "created_at"),
            updated_at=_time(row[4], "updated_at"),
            last_seq=_whole(row[5], "last_seq", 0),
            parent_run_id=_optional_text(row[6], "parent_run_id"),
            parent_seq=None if parent_seq is None else _whole(parent_seq, "parent_seq", 0),
            fingerprint=_optional_text(row[8], "fingerprint"),
            info=info,
            lease_owner=_optional_text(row[10], "lease_owner"),
            lease_expires_at=None if expires is None else _time(expires, "lease_expires_at"),
        )
    except _Bad as bad:
        raise corrupt_run(run_id, bad.problem) from None


def _run_info(text: str, run_id: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise corrupt_run(run_id, f"its info is not valid JSON ({exc})") from None
    if type(value) is not dict:
        raise corrupt_run(run_id, "its info is not a JSON object")
    return value


def parse_run_json(text: str, run_id: str) -> RunRecord:
    """A run record stored as JSON text (the file backend's run.json), checked."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise corrupt_run(run_id, f"its record is not valid JSON ({exc})") from None
    return run_from_mapping(data, run_id)


def checked_last_seq(run_id: str, value: Any) -> int:
    """A run row's ``last_seq`` read on its own (the latest-checkpoint lookup)."""
    try:
        return _whole(value, "last_seq", 0)
    except _Bad as bad:
        raise corrupt_run(run_id, bad.problem) from None


def _checkpoint_seq(run_id: str, value: Any) -> int:
    if type(value) is not int or value < 1:
        raise corrupt(run_id, None, f"a checkpoint's seq is {_short(value)}, not a whole number")
    return value


def blob_refs(run_id: str, seq: int, value: Any) -> str | None:
    """A checkpoint's blob references (a JSON list of hashes, or NULL), checked; returns
    the JSON text to look the blobs up with."""
    if value is None:
        return None
    try:
        refs = json.loads(value) if type(value) is str else None
    except ValueError:
        refs = None
    if type(refs) is not list or not all(type(ref) is str for ref in refs):
        raise corrupt(run_id, seq, f"its blob references are {_short(value)}, not a JSON list")
    return value  # type: ignore[no-any-return]  # checked: JSON text of a list of str


def checkpoint_from_row(run_id: str, row: Row, blobs: Mapping[str, str]) -> Checkpoint:
    """A ``flowkit_checkpoints`` row (``_schema.CHECKPOINT_COLUMNS`` order) as a checked
    Checkpoint, its blob-stored fields put back from ``blobs``."""
    seq = _checkpoint_seq(run_id, row[0])
    method_name, state, meta, _refs, created_at = row[1:]
    try:
        method = _text(method_name, "method_name")
        when = _time(created_at, "created_at")
        for column, value in (("state", state), ("meta", meta)):
            if type(value) is not str:
                raise _Bad(column, value, "JSON text")
    except _Bad as bad:
        raise corrupt(run_id, seq, bad.problem) from None
    fetch: Callable[[str], str | None] = blobs.get
    return Checkpoint(
        run_id=run_id,
        seq=seq,
        method_name=method,
        state=decode_state(state, fetch, run_id=run_id, seq=seq),
        created_at=when,
        meta=decode_object(meta, run_id=run_id, seq=seq, what="meta"),
    )
