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

from ._conditions import and_, or_
from ._decorators import listen, router, start
from ._flow import Flow
from ._persist import persist
from ._runner import Interrupted
from ._state import FlowState, migration
from .exceptions import FlowkitError

__all__ = [
    "Flow",
    "FlowState",
    "FlowkitError",
    "Interrupted",
    "and_",
    "listen",
    "migration",
    "or_",
    "persist",
    "router",
    "start",
]

__version__ = "0.1.0"
