"""How the ``flowkit`` command shows stored data: pure functions, no storage access.

Two views of a stored (tagged) value, see :mod:`flowkit._codec`:

* the *plain* view, for people: tags become the nearest JSON value (a datetime its ISO
  text, a set a list), bytes become ``"<N bytes>"`` and secrets ``"<secret>"``;
* the *stored* view, for ``--json``: the tagged JSON exactly as stored, except that a
  secret's ciphertext is replaced by ``"<secret>"``. Nothing is ever decrypted.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from flowkit._edit import edit_of
from flowkit.persistence._rules import owner_is_dead

from ._journal import PositionSummary

if TYPE_CHECKING:
    from flowkit.persistence import Checkpoint, RunRecord

__all__ = [
    "REDACTED",
    "checkpoint_json",
    "checkpoint_summary",
    "display_status",
    "dump_json",
    "edit_of",
    "error_line",
    "format_time",
    "interrupt_of",
    "is_stale",
    "pending_of",
    "plain",
    "pretty",
    "record_json",
    "redacted",
    "table",
]

TAG_KEY = "__fk__"  # the same key as flowkit._codec.TAG_KEY, without importing the codec
REDACTED = "<secret>"
_SECRET_TAGS = frozenset({"secret_str", "secret_bytes"})


# --- stored values ------------------------------------------------------------------------


def redacted(data: Any) -> Any:
    """The stored (tagged) JSON with every secret's ciphertext replaced by ``"<secret>"``."""
    if isinstance(data, dict):
        if data.get(TAG_KEY) in _SECRET_TAGS and len(data) == 2 and "v" in data:
            return {TAG_KEY: data[TAG_KEY], "v": REDACTED}
        return {key: redacted(value) for key, value in data.items()}
    if isinstance(data, list):
        return [redacted(item) for item in data]
    return data


def plain(data: Any) -> Any:
    """The stored (tagged) JSON as plain JSON for people to read.

    A malformed or unknown tag is shown as stored: an inspector must not fail on the
    rows it is used to investigate.
    """
    if isinstance(data, list):
        return [plain(item) for item in data]
    if not isinstance(data, dict):
        return data
    if TAG_KEY in data and len(data) == 2 and "v" in data:
        try:
            return _plain_tagged(data[TAG_KEY], data["v"])
        except (TypeError, ValueError, binascii.Error):
            pass
    return {key: plain(value) for key, value in data.items()}


def _plain_tagged(tag: Any, value: Any) -> Any:
    if tag in _SECRET_TAGS:
        return REDACTED
    if tag in ("bytes", "bytearray"):
        if not isinstance(value, str):
            raise TypeError(tag)
        return f"<{len(base64.b64decode(value, validate=True))} bytes>"
    if isinstance(value, str):  # datetime, date, time, uuid, decimal, path, ip_*, float
        return value
    if tag == "timedelta":
        days, seconds, micros = value
        return str(timedelta(days=days, seconds=seconds, microseconds=micros))
    if tag in ("set", "frozenset", "tuple") and isinstance(value, list):
        return [plain(item) for item in value]
    if tag == "dict" and isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if tag == "map" and isinstance(value, list):
        pairs = [(plain(key), plain(item)) for key, item in value]
        if all(isinstance(key, (str, int, float, bool)) or key is None for key, _ in pairs):
            return {
                json.dumps(key) if not isinstance(key, str) else key: item for key, item in pairs
            }
        return [[key, item] for key, item in pairs]
    raise ValueError(f"unknown tag {tag!r}")


def pretty(data: Any) -> str:
    """Indented JSON of the plain view, for people."""
    return json.dumps(plain(data), indent=2, ensure_ascii=False, default=str)


def dump_json(data: Any) -> str:
    """The ``--json`` output: sorted keys, two-space indent, ASCII-safe."""
    return json.dumps(data, indent=2, sort_keys=True, default=str)


# --- records ------------------------------------------------------------------------------


def format_time(moment: datetime | None) -> str:
    """``2024-05-01 12:00:03Z`` (UTC, to the second), or ``-``."""
    if moment is None:
        return "-"
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat()


def is_stale(run: RunRecord, *, leases: bool, now: datetime | None = None) -> bool:
    """A "running" run that nothing is executing: its lease expired (or was released),
    or its owner's process on this host is gone.

    Such a run was cut off (a crash, a kill) and can be resumed. Backends without leases
    cannot tell, so their running runs are never called stale.
    """
    if run.status != "running" or not leases:
        return False
    expires = run.lease_expires_at
    if run.lease_owner is None or expires is None or owner_is_dead(run.lease_owner):
        return True
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=timezone.utc)
    return expires <= (now or datetime.now(timezone.utc))


def display_status(run: RunRecord, *, leases: bool) -> str:
    """The status column: ``running (stale: resumable)`` for a run nobody executes."""
    if is_stale(run, leases=leases):
        return "running (stale: resumable)"
    return run.status


def record_json(run: RunRecord, *, leases: bool) -> dict[str, Any]:
    """A run record for ``--json``: every field, times in ISO 8601 UTC, plus ``stale``."""
    return {
        "run_id": run.run_id,
        "flow_name": run.flow_name,
        "status": run.status,
        "stale": is_stale(run, leases=leases),
        "created_at": _iso(run.created_at),
        "updated_at": _iso(run.updated_at),
        "last_seq": run.last_seq,
        "parent_run_id": run.parent_run_id,
        "parent_seq": run.parent_seq,
        "fingerprint": run.fingerprint,
        "lease_owner": run.lease_owner,
        "lease_expires_at": _iso(run.lease_expires_at),
        "info": redacted(run.info),
    }


def pending_of(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The methods waiting to run after a checkpoint: ``[{"id", "method", "trigger"}]``,
    plus ``"failed_attempts"`` and ``"last_error"`` for a call being retried."""
    summary = PositionSummary.read(meta)
    if summary is None:
        return []
    pending = []
    for item in summary.pending:
        retried = summary.retries.get(str(item["id"]))
        if retried is not None:
            item = {
                **item,
                "failed_attempts": retried.get("count"),
                "last_error": retried.get("error"),
            }
        pending.append(item)
    return pending


def error_line(error: dict[str, Any]) -> str:
    """``load (attempt 2 of 3): TimeoutError: slow`` for a stored error record (the
    attempt part only when the method had a retry policy)."""
    attempt, attempts = error.get("attempt"), error.get("attempts")
    where = str(error.get("method"))
    if isinstance(attempts, int) and isinstance(attempt, int) and attempt > attempts:
        # the retry policy was lowered after earlier attempts were counted
        where += f" (attempt {attempt}; the retry policy allows {attempts})"
    elif isinstance(attempts, int) and attempts > 1:
        where += f" (attempt {attempt} of {attempts})"
    return f"{where}: {error.get('type')}: {_one_line(error.get('message'))}"


def _one_line(text: Any, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def interrupt_of(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The interrupt recorded with a checkpoint (payload still in stored form), or None."""
    summary = PositionSummary.read(meta)
    return summary.interrupt if summary is not None else None


def checkpoint_summary(checkpoint: Checkpoint) -> str:
    """One line saying where the run stood after a checkpoint (and, for an edit, who
    changed what and why)."""
    edit = edit_of(checkpoint.meta)
    if edit is not None:
        changes = edit.get("changes")
        paths = [c.get("path") for c in changes if isinstance(c, dict)] if changes else []
        return (
            f"EDIT by {edit.get('actor')}: {edit.get('reason')} "
            f"[{', '.join(str(p) for p in paths)}]; " + _position_summary(checkpoint, edited=True)
        )
    return _position_summary(checkpoint)


def _position_summary(checkpoint: Checkpoint, *, edited: bool = False) -> str:
    summary = PositionSummary.read(checkpoint.meta)
    if summary is None:
        return "state only (no position)"
    if summary.interrupt is not None:
        return f"interrupted in {summary.interrupt.get('method')}"
    failed = ""
    retry = summary.retry
    if retry is not None and not edited:
        error = retry.get("error")
        failed = (
            f"FAILED {error_line(error) if isinstance(error, dict) else retry.get('method')}; "
            f"retry in {_seconds(retry.get('delay'))}; "
        )
    if summary.pending:
        return failed + "next: " + ", ".join(str(item["method"]) for item in summary.pending)
    return failed + "finished"


def _seconds(value: Any) -> str:
    return f"{value:g}s" if isinstance(value, (int, float)) else "?"


def _retry_of(meta: dict[str, Any]) -> dict[str, Any] | None:
    summary = PositionSummary.read(meta)
    return None if summary is None or edit_of(meta) is not None else summary.retry


def checkpoint_json(checkpoint: Checkpoint, *, state: bool) -> dict[str, Any]:
    """A checkpoint for ``--json``; its state (stored form) only when ``state``."""
    data: dict[str, Any] = {
        "run_id": checkpoint.run_id,
        "seq": checkpoint.seq,
        "method_name": checkpoint.method_name,
        "created_at": _iso(checkpoint.created_at),
        "summary": checkpoint_summary(checkpoint),
        "pending": pending_of(checkpoint.meta),
        "interrupt": redacted(interrupt_of(checkpoint.meta)),
        "state_version": checkpoint.meta.get("state_version"),
        "edit": redacted(edit_of(checkpoint.meta)),
        "retry": _retry_of(checkpoint.meta),
    }
    if state:
        data["state"] = redacted(checkpoint.state)
    return data


# --- tables -------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    all_rows = [list(headers), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in all_rows) for i in range(len(headers))]
    lines = []
    for row in all_rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths[:-1], strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)
