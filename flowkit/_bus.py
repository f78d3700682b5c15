"""Event handlers with type filters: cheap to check when nobody listens."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .events import FlowEvent

__all__ = ["GLOBAL_BUS", "EventBus", "Handler"]

Handler = Callable[["FlowEvent"], Any]
log = logging.getLogger("flowkit")


class EventBus:
    """Handlers with optional type filters; cheap to check when empty."""

    __slots__ = ("handlers",)

    def __init__(self) -> None:
        self.handlers: list[tuple[Handler, tuple[type[FlowEvent], ...]]] = []

    def add(self, handler: Handler, types: tuple[type[FlowEvent], ...]) -> Callable[[], None]:
        entry = (handler, types or (_event_base(),))
        self.handlers.append(entry)

        def unsubscribe() -> None:
            if entry in self.handlers:
                self.handlers.remove(entry)

        return unsubscribe

    def emit(self, event: FlowEvent) -> None:
        for handler, types in list(self.handlers):
            if isinstance(event, types):
                try:
                    handler(event)
                except Exception:
                    # An observer must not change what the flow does (CrewAI logs
                    # and goes on too); the traceback is in the log.
                    log.exception(
                        "flowkit: event handler %r raised on %s of run %s; the run goes on",
                        handler,
                        type(event).__name__,
                        event.run_id,
                    )


GLOBAL_BUS = EventBus()


def _event_base() -> type[FlowEvent]:
    from .events import FlowEvent

    return FlowEvent
