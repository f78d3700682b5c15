"""The path one stored run took through its flow, read from its checkpoints (for plots)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .exceptions import ResumeError, RunNotFoundError, UnsupportedOperationError

if TYPE_CHECKING:
    from .persistence import FlowPersistence

__all__ = ["EDIT_METHOD", "KICKOFF_METHOD", "RunPath", "Step", "read_run_path"]

#: method name of the checkpoint a kickoff writes before any method runs
KICKOFF_METHOD = "kickoff"
#: method name of a checkpoint written by an audited edit (never a Python identifier,
#: so it cannot collide with a flow method)
EDIT_METHOD = "<edit>"


@dataclass(frozen=True)
class Step:
    seq: int
    method: str
    created_at: datetime
    edit: bool = False
    #: written when the method paused at an interrupt: it did not finish
    paused: bool = False


@dataclass
class RunPath:
    """Methods done in order, how often each ran, and where the run stopped."""

    run_id: str
    status: str
    steps: list[Step] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    #: the first seq still stored when older checkpoints were pruned, else None
    pruned_before: int | None = None
    #: (method, what happened there): "waits for input", "failed", "finished", "next"
    stops: list[tuple[str, str]] = field(default_factory=list)

    @property
    def methods(self) -> list[str]:
        """Flow methods in the order their checkpoints were written."""
        return [
            s.method for s in self.steps if not (s.edit or s.paused) and s.method != KICKOFF_METHOD
        ]


def read_run_path(backend: FlowPersistence, run_id: str, flow_name: str) -> RunPath:
    """Read run ``run_id`` of flow ``flow_name``: its history and status.

    Raises:
        RunNotFoundError: no such run.
        ResumeError: the run belongs to another flow (its path means nothing here).
        UnsupportedOperationError: the backend keeps no run records or history.
    """
    if not (backend.supports_runs and backend.supports_history):
        raise UnsupportedOperationError(
            f"drawing run {run_id!r} needs a backend with runs and history; "
            f"{type(backend).__name__} lacks them. Use a built-in backend."
        )
    run = backend.get_run(run_id)
    if run is None:
        raise RunNotFoundError(
            f"no run {run_id!r} in {backend!r}; list runs with `flowkit runs` (and pass the "
            "same database)."
        )
    if run.flow_name is not None and run.flow_name != flow_name:
        raise ResumeError(
            f"run {run_id!r} belongs to flow {run.flow_name!r}, not {flow_name!r}; draw it "
            "with that flow class."
        )
    history = backend.history(run_id)
    path = RunPath(run_id=run_id, status=run.status)
    path.steps = [
        Step(
            cp.seq,
            cp.method_name,
            cp.created_at,
            edit=cp.method_name == EDIT_METHOD,
            paused=cp.method_name != EDIT_METHOD and "interrupt" in cp.meta,
        )
        for cp in history
    ]
    if history and history[0].seq > 1:
        path.pruned_before = history[0].seq
    path.counts = dict(Counter(path.methods))
    latest = history[-1] if history else None
    meta: dict[str, Any] = latest.meta if latest is not None else {}
    if run.status == "interrupted" and isinstance(meta.get("interrupt"), dict):
        path.stops.append((str(meta["interrupt"].get("method")), "waits for input"))
    elif run.status == "failed" and isinstance(run.info.get("error"), dict):
        path.stops.append((str(run.info["error"].get("method")), "failed"))
    elif run.status == "completed" and path.methods:
        path.stops.append((path.methods[-1], "finished"))
    else:
        position = meta.get("position")
        pending = position.get("pending") if isinstance(position, dict) else None
        for item in pending or []:
            if isinstance(item, dict) and isinstance(item.get("method"), str):
                path.stops.append((item["method"], "next"))
    return path
