"""Rules every backend enforces the same way: argument checks, CAS and lease decisions,
and the error messages that go with them; and who holds a lease.

Everything here is a pure function except the owner's liveness check, which reads this
machine's process table (``/proc``).

A lease owner is a string ``"host:pid:start:token"``: the host name, the process id,
the process's start time as the operating system reports it (so a recycled pid is not
taken for the old owner) and a random token (one process may hold many leases). Any
backend can store it in one text column.

:func:`owner_is_dead` answers only what can be known for sure from this machine: an
owner on this host whose process is gone (or whose pid now belongs to a process started
at another time) is dead. An owner on another host is never declared dead here; the
backend's own liveness signal (a PostgreSQL session, say) or the lease expiry decides.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from flowkit.exceptions import (
    ConcurrentUpdateError,
    CorruptRunError,
    FlowConfigurationError,
    InvalidArgumentError,
    LeaseLostError,
    PersistenceError,
    RunExistsError,
    RunLockedError,
    RunNotFoundError,
)
from flowkit.persistence import _metadata
from flowkit.persistence._records import RUN_STATUSES, RunRecord, RunStatus, utc_from_timestamp

log = logging.getLogger("flowkit")

_clock_lock = threading.Lock()
_last_timestamp = 0.0


def now() -> float:
    """Epoch seconds, strictly increasing within this process.

    Strictly increasing so that "newest ``updated_at`` first" is a total order for runs
    written by one process, even when the wall clock's resolution is coarse.
    """
    global _last_timestamp
    with _clock_lock:
        current = max(time.time(), _last_timestamp + 1e-6)
        _last_timestamp = current
        return current


#: how long closing a server database's last backend waits for operations in flight
CLOSE_GRACE = 5.0


def cut_off(what: str, where: str) -> PersistenceError:
    """The error of an operation that close() cut off after ``CLOSE_GRACE`` seconds."""
    return PersistenceError(
        f"{what} was cut off on {where}: the backend was closed while the operation "
        f"was still running after {CLOSE_GRACE:g} s. Close a backend only after the runs "
        "using it have stopped; whether the operation took effect is unknown, so read "
        "the run back (load_checkpoint, get_run) before going on; a durable run resumes "
        "from its last committed checkpoint."
    )


def check_status(status: str) -> RunStatus:
    if status not in RUN_STATUSES:
        allowed = ", ".join(sorted(RUN_STATUSES))
        raise InvalidArgumentError(f"Unknown run status {status!r}; use one of: {allowed}.")
    return status  # type: ignore[return-value]  # narrowed by the membership test


def check_keep_last(keep_last: int) -> None:
    if keep_last < 1:
        raise InvalidArgumentError(
            f"prune(keep_last={keep_last}) would delete the latest checkpoint; "
            "keep_last must be at least 1 (use delete_run to remove a whole run)."
        )


def check_ttl(ttl: float) -> None:
    if not ttl > 0:
        raise InvalidArgumentError(
            f"A lease needs ttl > 0 (its seconds), got ttl={ttl!r}. Pass a positive number."
        )


def lease_ttl(ttl: float | None) -> float:
    """The ttl of a lease taken by ``begin_run`` (which has an owner)."""
    if ttl is None:
        raise FlowConfigurationError("begin_run(owner=...) needs ttl, the lease's seconds.")
    check_ttl(ttl)
    return ttl


def check_flow(run: RunRecord, flow_name: str) -> None:
    """``begin_run`` may continue a run of the same flow, or one with no flow name yet."""
    if run.flow_name is not None and run.flow_name != flow_name:
        raise RunExistsError(
            f"A run with id {run.run_id!r} already exists and belongs to flow "
            f"{run.flow_name!r}, not {flow_name!r}; nothing was written. Use that flow, or "
            "another run id."
        )


def check_paging(limit: int, offset: int) -> None:
    if limit < 0 or offset < 0:
        raise InvalidArgumentError(
            f"list_runs needs limit >= 0 and offset >= 0, got limit={limit}, offset={offset}."
        )


def lease_blocks(run: RunRecord | None, owner: str | None, at: float) -> bool:
    """True if ``owner`` may not write ``run`` because someone else holds a live lease."""
    if run is None or owner is None or run.lease_owner is None or run.lease_owner == owner:
        return False
    expires = run.lease_expires_at
    return expires is not None and expires.timestamp() > at


def check_save(
    run_id: str,
    run: RunRecord | None,
    *,
    expected_seq: int | None,
    lease_owner: str | None,
    at: float,
) -> None:
    """Raise what ``save_checkpoint`` must raise before writing anything.

    Fencing: a writer that names an owner appends to an existing run only while the run's
    lease names that owner. A free or expired lease does not admit it: after a takeover
    (and after the new owner gave the lease back) a paused former owner must never append.
    """
    if lease_blocks(run, lease_owner, at):
        assert run is not None
        raise run_locked(run_id, run.lease_owner, run.lease_expires_at)
    if run is not None and lease_owner is not None and run.lease_owner != lease_owner:
        raise lease_lost(run_id, lease_owner, run)
    stored = run.last_seq if run is not None else 0
    if expected_seq is not None and expected_seq != stored:
        raise concurrent_update(run_id, expected_seq, stored)


def check_owner(run_id: str, run: RunRecord, owner: str, at: float) -> None:
    """Raise what a write fenced by ``owner`` (``update_run(lease_owner=...)``) must
    raise when the run's lease does not name it: RunLockedError while another owner's
    lease is unexpired, LeaseLostError when it is free or another's and expired."""
    if lease_blocks(run, owner, at):
        raise run_locked(run_id, run.lease_owner, run.lease_expires_at)
    if run.lease_owner != owner:
        raise lease_lost(run_id, owner, run)


def concurrent_update(run_id: str, expected_seq: int, stored_seq: int) -> ConcurrentUpdateError:
    return ConcurrentUpdateError(
        f"Run {run_id!r} was written by someone else: expected its last checkpoint to be "
        f"seq {expected_seq}, but it is seq {stored_seq}. Nothing was saved; reload the run "
        "(resume it) instead of overwriting the other writer's work."
    )


def run_locked(run_id: str, holder: str | None, expires: datetime | None) -> RunLockedError:
    until = expires.isoformat() if expires is not None else "unknown"
    return RunLockedError(
        f"Run {run_id!r} is leased by {holder!r} until {until}, and that owner is alive as "
        "far as can be told (a dead owner on this host, or whose database session ended, "
        "is taken over at once). Wait for it to finish (Flow(lease_wait=...) retries for "
        "you), or retry after the expiry if it is stuck."
    )


def lease_lost(run_id: str, owner: str, run: RunRecord | None) -> LeaseLostError:
    holder = run.lease_owner if run is not None else None
    return LeaseLostError(
        f"Owner {owner!r} does not hold the lease on run {run_id!r} (held by {holder!r} "
        "now); nothing was written. Stop writing to this run: another process took it "
        "over. Claim it again (resume) to continue from its latest checkpoint."
    )


def run_not_found(run_id: str, operation: str) -> RunNotFoundError:
    return RunNotFoundError(
        f"{operation}: no run with id {run_id!r}. Create it first (create_run or a first "
        "save), or check the id."
    )


def run_exists(run_id: str) -> RunExistsError:
    return RunExistsError(
        f"A run with id {run_id!r} already exists. Choose another id, or pass exist_ok=True "
        "to get the existing run."
    )


def acquire(run: RunRecord, owner: str, ttl: float, at: float) -> RunRecord:
    """The run after ``owner`` takes or extends its lease (raises if someone else holds it).

    The lease can be taken when it is free, expired, already ``owner``'s, or held by an
    owner known to be dead (:func:`owner_is_dead`)."""
    check_ttl(ttl)
    if lease_blocks(run, owner, at) and not owner_is_dead(run.lease_owner):
        raise run_locked(run.run_id, run.lease_owner, run.lease_expires_at)
    return run.replace(lease_owner=owner, lease_expires_at=utc_from_timestamp(at + ttl))


def renew(run: RunRecord | None, run_id: str, owner: str, ttl: float, at: float) -> RunRecord:
    """The run after ``owner`` renews its lease (LeaseLostError if it is not ours any more)."""
    check_ttl(ttl)
    if run is None or run.lease_owner != owner:
        raise lease_lost(run_id, owner, run)
    return run.replace(lease_expires_at=utc_from_timestamp(at + ttl))


def select_runs(
    runs: Iterable[RunRecord],
    *,
    flow_name: str | None,
    status: str | None,
    parent_run_id: str | None,
    limit: int,
    offset: int,
    metadata: Mapping[str, Any] | None = None,
) -> list[RunRecord]:
    """Filter, order (newest ``updated_at`` first, then run id) and page runs."""
    wanted = check_list_filters(status, limit, offset, metadata)
    chosen = [
        run
        for run in runs
        if (flow_name is None or run.flow_name == flow_name)
        and (status is None or run.status == status)
        and (parent_run_id is None or run.parent_run_id == parent_run_id)
        and (wanted is None or _metadata.matches(run.info, wanted))
    ]
    chosen.sort(key=lambda run: (run.updated_at, run.run_id), reverse=True)
    return chosen[offset : offset + limit]


def check_list_filters(
    status: str | None, limit: int, offset: int, metadata: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """Check ``list_runs``' arguments; returns the metadata filter as a plain dict."""
    check_paging(limit, offset)
    if status is not None:
        check_status(status)
    if metadata is None:
        return None
    return _metadata.check_metadata(metadata, what="list_runs(metadata=...)")


def report_unreadable(error: CorruptRunError) -> None:
    """``list_runs`` skips a run it cannot read and reports it here: a warning on the
    ``flowkit`` logger whose record carries the error as ``unreadable_run``."""
    log.warning(
        "list_runs skipped run %r: %s", error.run_id, error, extra={"unreadable_run": error}
    )


# -- lease owners ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Owner:
    host: str
    pid: int
    start: str
    token: str

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.start}:{self.token}"


@lru_cache(maxsize=1)
def this_host() -> str:
    # A colon would break the owner format; host names never have one, but be safe.
    return socket.gethostname().replace(":", "_") or "localhost"


def process_start(pid: int) -> str | None:
    """An opaque start-time mark of process ``pid``, or None if it does not exist.

    On Linux it is the start time in clock ticks since boot (``/proc/PID/stat`` field
    22); a zombie counts as gone. Elsewhere it is ``"?"`` for a process that exists
    (liveness by pid alone).
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError:
        return _start_without_proc(pid)
    # The command name (field 2) is in parentheses and may contain spaces.
    fields = raw[raw.rfind(b")") + 2 :].split()
    if fields and fields[0] in (b"Z", b"X"):  # killed, not yet reaped: gone for us
        return None
    return fields[19].decode() if len(fields) > 19 else "?"


def _start_without_proc(pid: int) -> str | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # exists, owned by someone else
        return "?"
    return "?"


_own_start: dict[int, str] = {}


def new_owner() -> str:
    """A fresh lease owner id for this process."""
    pid = os.getpid()  # keyed by pid: a forked child is another owner
    start = _own_start.get(pid)
    if start is None:
        start = _own_start[pid] = process_start(pid) or "?"
    return str(Owner(this_host(), pid, start, uuid.uuid4().hex[:8]))


def parse_owner(owner: str) -> Owner | None:
    """The parts of an owner id, or None for a string not made by :func:`new_owner`
    (older flowkit versions wrote ``host:pid:token``; those parse with start ``"?"``)."""
    parts = owner.split(":")
    try:
        if len(parts) == 4:
            return Owner(parts[0], int(parts[1]), parts[2], parts[3])
        if len(parts) == 3:
            return Owner(parts[0], int(parts[1]), "?", parts[2])
    except ValueError:
        return None
    return None


def owner_is_dead(owner: str | None) -> bool:
    """True only when ``owner`` is known for sure to be gone: it ran on this host and its
    process no longer exists (or its pid was reused by a process started later)."""
    if owner is None:
        return False
    parsed = parse_owner(owner)
    if parsed is None or parsed.host != this_host():
        return False
    if parsed.pid == os.getpid():
        # Our own process: alive by definition (a lease of ours we no longer track is
        # still ours; the lease keeper decides about it).
        return False
    start = process_start(parsed.pid)
    if start is None:
        return True
    return parsed.start not in ("?", start) and start != "?"
