"""The records every backend returns: immutable snapshots, timestamps in aware UTC."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, get_args

RunStatus = Literal["running", "completed", "failed", "interrupted"]
RUN_STATUSES: frozenset[str] = frozenset(get_args(RunStatus))


class Checkpoint:
    """One saved step of a run (immutable).

    ``state`` is the JSON-ready dict the engine saved; each load returns a fresh copy, so
    mutating it never changes what is stored. ``meta`` is the engine's opaque dict
    (execution position, state version, ...), stored verbatim.

    A backend that has the stored JSON at hand may build the record with
    :meth:`deferred`: ``state`` and ``meta`` are then parsed on first access, so a save
    whose returned record is only read for its ``seq`` (the engine's case) parses
    nothing.
    """

    __slots__ = ("_meta", "_parse", "_state", "created_at", "method_name", "run_id", "seq")

    run_id: str
    seq: int
    method_name: str
    created_at: datetime
    _state: dict[str, Any]
    _meta: dict[str, Any]
    _parse: Callable[[], tuple[dict[str, Any], dict[str, Any]]] | None

    def __init__(
        self,
        run_id: str,
        seq: int,
        method_name: str,
        state: dict[str, Any],
        created_at: datetime,
        meta: dict[str, Any] | None = None,
    ) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "run_id", run_id)
        setattr_(self, "seq", seq)
        setattr_(self, "method_name", method_name)
        setattr_(self, "created_at", created_at)
        setattr_(self, "_state", state)
        setattr_(self, "_meta", {} if meta is None else meta)
        setattr_(self, "_parse", None)

    @classmethod
    def deferred(
        cls,
        run_id: str,
        seq: int,
        method_name: str,
        created_at: datetime,
        parse: Callable[[], tuple[dict[str, Any], dict[str, Any]]],
    ) -> Checkpoint:
        """A record whose ``(state, meta)`` come from ``parse()``, called once, on the
        first access to either."""
        record = cls(run_id, seq, method_name, {}, created_at)
        object.__setattr__(record, "_parse", parse)
        return record

    def _parsed(self) -> None:
        parse = self._parse
        if parse is not None:
            state, meta = parse()
            object.__setattr__(self, "_state", state)
            object.__setattr__(self, "_meta", meta)
            object.__setattr__(self, "_parse", None)

    @property
    def state(self) -> dict[str, Any]:
        self._parsed()
        return self._state

    @property
    def meta(self) -> dict[str, Any]:
        self._parsed()
        return self._meta

    def _fields(self) -> tuple[Any, ...]:
        return (self.run_id, self.seq, self.method_name, self.state, self.created_at, self.meta)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Checkpoint)
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Checkpoint(run_id={self.run_id!r}, seq={self.seq!r}, "
            f"method_name={self.method_name!r}, state={self.state!r}, "
            f"created_at={self.created_at!r}, meta={self.meta!r})"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What a backend knows about a run besides its checkpoints.

    ``last_seq`` is the seq of the newest checkpoint ever written (0 before the first save);
    it never decreases, even when old checkpoints are pruned. ``flow_name`` is ``None`` for
    runs created through the CrewAI-style ``save_state``, which does not pass one.
    :attr:`metadata` is what callers attached to the run (``kickoff(metadata=...)``), kept
    in ``info["metadata"]``.
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

    @property
    def metadata(self) -> dict[str, Any]:
        """The run's metadata: ``info["metadata"]``, or {} when it has none::

        run = persistence.get_run(run_id)
        print(run.metadata.get("user"))
        """
        found = self.info.get("metadata")
        return found if isinstance(found, dict) else {}


def utc_from_timestamp(timestamp: float) -> datetime:
    """Convert stored epoch seconds to the aware UTC datetime records carry."""
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)
