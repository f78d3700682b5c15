"""The ``flowkit`` logger: what a run does, for people who configure logging.

Silent by default (Python's default level is WARNING). At INFO, each run's start,
end, interrupt and failing method; at DEBUG, also every method's start and finish.
``@persist(verbose=True)`` adds one INFO line per stored checkpoint.

Example::

    import logging
    logging.basicConfig(level=logging.INFO)   # or: logging.getLogger("flowkit").setLevel(...)
"""

from __future__ import annotations

import logging
from logging import DEBUG, INFO
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .events import FlowEvent

__all__ = ["DEBUG", "INFO", "LOG", "log_event"]

LOG = logging.getLogger("flowkit")

# Keyed by class name: importing the event classes here would load them with flowkit.
_LEVELS = {
    "FlowStarted": INFO,
    "FlowFinished": INFO,
    "FlowInterrupted": INFO,
    "MethodFailed": INFO,
    "MethodRetrying": INFO,
    "MethodStarted": DEBUG,
    "MethodFinished": DEBUG,
}


def log_event(event: FlowEvent) -> None:
    """Log ``event`` on the ``flowkit`` logger at its level, if that level is enabled."""
    kind = type(event).__name__
    level = _LEVELS.get(kind, DEBUG)
    if not LOG.isEnabledFor(level):
        return
    where = f"{event.flow_name} run {event.run_id}"
    method = getattr(event, "method", None)
    if kind == "FlowStarted":
        verb = "resumed" if getattr(event, "resumed", False) else "started"
        LOG.log(level, "%s %s", where, verb)
    elif kind == "FlowFinished":
        LOG.log(level, "%s finished (last checkpoint %s)", where, event.seq)
    elif kind == "FlowInterrupted":
        LOG.log(level, "%s interrupted in %s: waits for resume(run_id, value)", where, method)
    elif kind == "MethodFailed":
        error = getattr(event, "error", None)
        LOG.log(level, "%s: %s failed: %s: %s", where, method, type(error).__name__, error)
    elif kind == "MethodRetrying":
        error = getattr(event, "error", None)
        LOG.log(
            level,
            "%s: %s failed (attempt %s of %s): %s: %s; retrying in %.3gs",
            where,
            method,
            getattr(event, "attempt", "?"),
            getattr(event, "attempts", "?"),
            type(error).__name__,
            error,
            getattr(event, "delay", 0.0),
        )
    elif kind == "MethodStarted":
        LOG.log(level, "%s: %s started", where, method)
    else:
        LOG.log(level, "%s: %s finished", where, method)
