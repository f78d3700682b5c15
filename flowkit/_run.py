"""One execution of a flow (a kickoff, a resume): everything that changes while it runs.

The :class:`Flow` object is the user's; a :class:`Run` is built for each kickoff or
resume by the preparation in :mod:`flowkit._execution` and handed to the
:class:`~flowkit._runner.Runner`, which owns it until it returns. The state, the
scheduler's position, the journal (where checkpoints go) and the answers to interrupts
all live here, so nothing patches the flow object from outside while a run executes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._position import FailedAttempts, PendingInterrupt, Position

if TYPE_CHECKING:
    from ._flow import Flow
    from ._interrupt import CallContext
    from ._journal import Journal
    from ._scheduler import Scheduler, Task
    from .persistence import FlowPersistence

__all__ = ["Run"]


@dataclass
class Run:
    """A run being executed: its state, position and where it is committed."""

    flow: Flow[Any]
    state: Any
    scheduler: Scheduler
    journal: Journal
    backend: FlowPersistence | None
    cipher: Any
    #: the calls to start with (kickoff: the starts; resume: the stored pending calls)
    tasks: list[Task]
    resumed: bool = False
    #: the kickoff's inputs as the FlowStarted event shows them (None: none given)
    inputs: dict[str, Any] | None = None
    #: interrupt answers for pending calls, by call id
    answers: dict[int, list[Any]] = field(default_factory=dict)
    #: the last method that finished and its output (what kickoff returns)
    last: tuple[str, Any] | None = None
    #: the journal's last committed state is ``state`` (no method finished since
    #: without a checkpoint): a method that ran alone can be rolled back by reading it
    committed_is_current: bool = True
    #: failed attempts of pending calls being retried, by call id (stored with the
    #: position: a crash between attempts does not reset the count)
    retries: dict[int, FailedAttempts] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.flow._adapter.state_id(self.state)

    def position(
        self, interrupt: PendingInterrupt | None = None, retry: dict[str, Any] | None = None
    ) -> Position:
        return Position(
            self.scheduler.snapshot(),
            self.last,
            self.answers,
            interrupt=interrupt,
            retries=dict(self.retries),
            retry=retry,
        )

    async def commit(
        self,
        method: str,
        status: str,
        interrupt: PendingInterrupt | None = None,
        retry: dict[str, Any] | None = None,
    ) -> None:
        """Write a checkpoint of the current state and position after ``method`` (or,
        with ``retry``, after a failed attempt of it)."""
        await self.journal.checkpoint(method, self.state, self.position(interrupt, retry), status)
        self.committed_is_current = True

    def rollback(self, ctx: CallContext) -> None:
        """Drop the changes of a method that did not finish. An isolated method's view
        is simply never merged; a method that ran alone changed the live state, which
        goes back to the state it started with."""
        if ctx.isolated:
            return
        if ctx.base is not None:
            self.state = ctx.base
        elif self.committed_is_current:
            restored = self.journal.committed_state()
            if restored is not None:
                self.state = restored
