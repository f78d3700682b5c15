"""Typed events a flow emits while it runs. Silent unless you subscribe.

Example::

    from flowkit.events import MethodFinished

    flow = MyFlow()
    flow.subscribe(lambda e: print(e.method, e.output), MethodFinished)
    flow.kickoff()

:func:`subscribe` registers a handler for every flow in the process. Handlers run in
the flow's event loop thread, in order. A handler that raises does not stop the run:
the exception is logged (logger ``flowkit``) and the other handlers still run, as in
CrewAI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "FlowEvent",
    "FlowFinished",
    "FlowInterrupted",
    "FlowResult",
    "FlowStarted",
    "MethodFailed",
    "MethodFinished",
    "MethodRetrying",
    "MethodStarted",
    "subscribe",
]


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True, kw_only=True)
class FlowEvent:
    """Base of every event: which flow and run, and when.

    ``seq`` is the run's latest stored checkpoint when the event was emitted (``None``
    without durable persistence). A method's events carry the checkpoint it started
    from: its own checkpoint is written after ``MethodFinished``.
    """

    flow_name: str
    run_id: str
    timestamp: datetime = field(default_factory=_now)
    seq: int | None = None


@dataclass(frozen=True, kw_only=True)
class FlowStarted(FlowEvent):
    """A kickoff or resume began. ``resumed`` tells which; ``inputs`` is None when
    none were given (as CrewAI's ``FlowStartedEvent``)."""

    inputs: dict[str, Any] | None
    resumed: bool = False


@dataclass(frozen=True, kw_only=True)
class MethodStarted(FlowEvent):
    """A flow method is about to run. ``params`` are the arguments it is called with
    (``{"_0": payload}`` for the trigger's output, as CrewAI names positional ones);
    ``state`` is a copy of the state as plain data when it starts."""

    method: str
    params: dict[str, Any] = field(default_factory=dict)
    state: Any = None


@dataclass(frozen=True, kw_only=True)
class MethodFinished(FlowEvent):
    """A flow method returned; ``state`` is a copy of the state as plain data then."""

    method: str
    output: Any
    state: Any = None


@dataclass(frozen=True, kw_only=True)
class MethodFailed(FlowEvent):
    """A flow method raised and is not retried; the exception propagates to the caller
    after this. ``attempt`` is the attempt that raised (1 unless the method has a retry
    policy, see :class:`flowkit.Retry`)."""

    method: str
    error: BaseException
    attempt: int = 1


@dataclass(frozen=True, kw_only=True)
class MethodRetrying(FlowEvent):
    """A flow method raised and runs again after ``delay`` seconds (its
    :class:`flowkit.Retry` policy allows it). ``attempt`` is the attempt that failed
    (1 = the first call), ``attempts`` the most the policy allows; the next attempt is
    ``attempt + 1``. Emitted after the failed attempt is stored (``seq`` is its
    checkpoint with durable persistence); the failed attempt's changes to the state are
    dropped. No ``MethodFailed`` is emitted for an attempt that is retried."""

    method: str
    error: BaseException
    attempt: int
    attempts: int
    delay: float


@dataclass(frozen=True, kw_only=True)
class FlowInterrupted(FlowEvent):
    """A method called ``self.interrupt(payload)``; the run waits for ``resume``."""

    method: str
    payload: Any


@dataclass(frozen=True, kw_only=True)
class FlowFinished(FlowEvent):
    """The run finished; ``output`` is what kickoff returns."""

    output: Any


@dataclass(frozen=True, kw_only=True)
class FlowResult(FlowEvent):
    """The last item of ``stream_events`` / ``astream``: ``result`` is what ``kickoff``
    returned (the output, or an :class:`flowkit.Interrupted`). Only streams carry it."""

    result: Any


from ._bus import GLOBAL_BUS, Handler  # noqa: E402


def subscribe(handler: Handler, *event_types: type[FlowEvent]) -> Callable[[], None]:
    """Call ``handler`` for events of every flow (of ``event_types``, or all).

    Returns a function that unsubscribes.
    """
    return GLOBAL_BUS.add(handler, event_types)
