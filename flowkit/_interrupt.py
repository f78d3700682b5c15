"""Interrupts: what ``self.interrupt()`` raises, and what kickoff returns for it.

The call context ``self.interrupt()`` reads (its answers, how many it asked) is the
flow's: :class:`flowkit._flow.CallContext`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["InterruptSignal", "Interrupted"]


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
