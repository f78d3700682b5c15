"""Who holds a run's lease, and whether that process is still alive.

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

import os
import socket
import uuid
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["Owner", "new_owner", "owner_is_dead", "parse_owner", "this_host"]


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
