"""The records every backend returns: immutable snapshots, timestamps in aware UTC."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, get_args

RunStatus = Literal["running", "completed", "failed", "interrupted"]
RUN_STATUSES: frozenset[str] = frozenset(get_args(RunStatus))


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One saved step of a run.

    ``state`` is the JSON-ready dict the engine saved; each load returns a fresh copy, so
    mutating it never changes what is stored. ``meta`` is the engine's opaque dict
    (execution position, state version, ...), stored verbatim.
    """

    run_id: str
    seq: int
    method_name: str
    state: dict[str, Any]
    created_at: datetime
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What a backend knows about a run besides its checkpoints.

    ``last_seq`` is the seq of the newest checkpoint ever written (0 before the first save);
    it never decreases, even when old checkpoints are pruned. ``flow_name`` is ``None`` for
    runs created through the CrewAI-style ``save_state``, which does not pass one.
    """

    run_id: str
    flow_name: str | None
    status: RunStatus
    created_at: datetime
    updated_at: datetime
    last_seq: int = 0
    parent_run_id: str | None = None
    parent_seq: int | None = None
    fingerprint: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None

    def replace(self, **changes: Any) -> RunRecord:
        """Return a copy with ``changes`` applied (records are frozen)."""
        return dataclasses.replace(self, **changes)


def utc_from_timestamp(timestamp: float) -> datetime:
    """Convert stored epoch seconds to the aware UTC datetime records carry."""
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)
