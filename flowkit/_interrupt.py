"""Interrupts: what ``self.interrupt()`` raises, and what kickoff returns for it.

No asyncio here: ``import flowkit`` loads this, and the runner only on first kickoff.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._flow import Flow

__all__ = ["CallContext", "InterruptSignal", "Interrupted", "current_call"]


@dataclass(frozen=True)
class Interrupted:
    """What ``kickoff`` / ``resume`` return when a method called ``self.interrupt()``.

    Resume the run later, in any process, with ``MyFlow().resume(run_id, value)``.
    """

    run_id: str
    payload: Any
    method_name: str


class InterruptSignal(BaseException):
    """Raised inside a method by ``self.interrupt()`` when no answer is stored yet.

    A BaseException so that a method's ``except Exception`` does not swallow it.
    """

    def __init__(self, payload: Any) -> None:
        super().__init__(payload)
        self.payload = payload


@dataclass
class CallContext:
    """The method call a piece of code runs in: for ``self.interrupt`` and, when the
    method overlaps with others, for the private view of the state it works on."""

    flow: Flow[Any]
    task_id: int
    method: str
    #: answers to this call's interrupts, in order (stored with the position)
    answers: Sequence[Any]
    asked: int = 0
    #: True when the method runs beside others: ``self.state`` is then its own view
    isolated: bool = False
    #: the run's state when the method started (isolated methods; never modified)
    base: Any = None
    #: the method's private copy of ``base``, made on its first read of ``self.state``
    view: Any = None

    def state_view(self) -> Any:
        """This isolated method's view of the state (copied from ``base`` on first use)."""
        view = self.view
        if view is None:
            view = self.view = (_copy_state or _load_copy_state())(self.base)
        return view


#: :func:`flowkit._isolation.copy_state`, imported on first use (it needs pydantic)
_copy_state: Callable[[Any], Any] | None = None


def _load_copy_state() -> Callable[[Any], Any]:
    global _copy_state
    from ._isolation import copy_state

    _copy_state = copy_state
    return copy_state


current_call: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar(
    "flowkit_current_call", default=None
)
