"""flowkit: decorator-driven flows whose runs survive crashes, wait for humans and can be
inspected later.

Example::

    from flowkit import Flow, FlowState, listen, start

    class Counter(FlowState):
        count: int = 0

    class CountFlow(Flow[Counter]):
        @start()
        def first(self):
            self.state.count += 1

        @listen(first)
        def second(self):
            self.state.count += 1
            return self.state.count

    assert CountFlow().kickoff() == 2
"""

from typing import TYPE_CHECKING, Any

from ._ask import InputProvider, InputResponse
from ._conditions import and_, or_
from ._decorators import listen, router, start
from ._flow import Flow
from ._interrupt import Interrupted
from ._persist import persist
from ._recover import RecoveredRun, RecoveryReport
from ._retry import Retry
from .exceptions import FlowkitError

if TYPE_CHECKING:
    from ._secrets import generate_key
    from ._state import FlowState, migration

__all__ = [
    "Flow",
    "FlowState",
    "FlowkitError",
    "InputProvider",
    "InputResponse",
    "Interrupted",
    "RecoveredRun",
    "RecoveryReport",
    "Retry",
    "and_",
    "generate_key",
    "listen",
    "migration",
    "or_",
    "persist",
    "router",
    "start",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # FlowState needs pydantic's model machinery: load it when first asked for, so
    # that ``import flowkit`` stays light.
    if name in ("FlowState", "migration"):
        from . import _state

        value = getattr(_state, name)
        globals()[name] = value
        return value
    if name == "generate_key":
        from ._secrets import generate_key

        globals()[name] = generate_key
        return generate_key
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
