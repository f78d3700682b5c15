"""One execution of a flow (:class:`Run`) and its executor (:class:`Runner`), which
drives the scheduler, runs methods and commits checkpoints.

A :class:`Run` is built for each kickoff or resume by the preparation in
:mod:`flowkit._execution` and handed to the :class:`Runner`, which owns it until it
returns: the state, the scheduler, the journal (where checkpoints go) and the answers to
interrupts all live there, so nothing patches the flow object from outside while a run
executes. Its commit hands the state and a :class:`~flowkit._journal.Position` to the
journal.

Kept thin on purpose: every decision about *what* runs lives in the scheduler. A sync
method runs inline when it is the only thing that could run; it goes to a worker thread
only when something could overlap with it. What a call costs is paid per call (a fan-out
of 50 pays it 50 times): nothing here is recomputed per call that the run already knows,
and events are built only when someone listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

from ._flow import CallContext, Flow, current_call
from ._graph import TRIGGER_PAYLOAD
from ._interrupt import Interrupted, InterruptSignal
from ._isolation import copy_state
from ._journal import FailedAttempts, PendingInterrupt, Position
from ._merge import Merge
from ._retry import error_record
from ._workers import Inbox, MethodCall, ThreadCall, keep_moving, workers
from .events import (
    FlowFinished,
    FlowInterrupted,
    FlowStarted,
    MethodFailed,
    MethodFinished,
    MethodRetrying,
    MethodStarted,
)
from .exceptions import (
    FlowConfigurationError,
    FlowkitError,
    FlowUsageError,
    StateConflictError,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from ._journal import Journal
    from ._retry import Retry
    from ._scheduler import Scheduler, Task
    from .persistence import FlowPersistence

__all__ = ["Run", "Runner"]


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


#: the answers of a call that has none (shared: a CallContext only reads them)
_NO_ANSWERS: tuple[Any, ...] = ()


async def _call_async(ctx: CallContext, func: Any, args: tuple[Any, ...]) -> Any:
    token = current_call.set(ctx)
    try:
        return await func(*args)
    finally:
        current_call.reset(token)


class Runner:
    """Executes one :class:`Run` (a kickoff or a resume) to its end.

    The run's state is ``run.state``. A method that runs alone mutates it in place; a
    method that overlaps with others works on its own view (see :mod:`flowkit._isolation`)
    whose changes are merged in when it finishes, before its checkpoint is written. So a
    checkpoint never holds the effects of a method that has not finished.
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self.flow = run.flow
        self.scheduler = run.scheduler
        self.nodes = run.scheduler.graph.nodes
        self.journal = run.journal
        #: method -> its retry policy (None: one attempt); see :meth:`_load_policies`
        self.policies: dict[str, Retry | None] | None = None
        #: method -> what calling it means, for methods called the same way every time
        #: (no payload, no trigger payload): worked out on their first call
        self.plain_calls: dict[str, tuple[Any, tuple[Any, ...], dict[str, Any], bool]] = {}
        self.interrupts: list[tuple[Task, Any]] = []
        #: field path -> the method whose merge last changed it (for conflict messages)
        self.writers: dict[str, str] = {}
        #: some running method holds the current state object as its base: a merge
        #: must build a new one instead of updating it
        self.state_shared = False

    async def execute(self) -> Any:
        """Run the run's tasks to the end; return what kickoff returns."""
        run, flow = self.run, self.flow
        try:
            if flow._has_listeners():
                flow._emit(FlowStarted, inputs=run.inputs, resumed=run.resumed)
            if not run.tasks:  # a resumed run that had finished its last method
                await self.journal.set_status("completed")
                result = run.last[1] if run.last else None
            else:
                result = await self.run_tasks(run.tasks)
            if flow._has_listeners() and not isinstance(result, Interrupted):
                flow._emit(FlowFinished, output=result)
            return result
        finally:
            await self.journal.close()

    def _call(self, task: Task) -> tuple[Any, tuple[Any, ...], dict[str, Any], bool]:
        """What calling ``task`` means: the bound method (with its keyword arguments
        applied), its positional arguments, its keyword arguments, whether it is async."""
        plain = self.plain_calls.get(task.method)
        if plain is not None:
            return plain
        nodes = self.nodes
        node = nodes[task.method]
        func = getattr(self.flow, task.method)
        trigger = task.trigger
        args: tuple[Any, ...] = ()
        # As in CrewAI, a start fired by a router's label is called without it.
        if (
            node.takes_payload
            and trigger is not None
            and not (node.is_start and nodes[trigger].is_router)
        ):
            args = (task.payload,)
        if node.takes_trigger_payload and node.is_start:
            # A start declaring crewai_trigger_payload gets the kickoff's payload: a
            # kickoff start with its call, a conditional start from what the scheduler
            # kept of it.
            payload = task.payload if trigger is None else self.scheduler.trigger_payload
            kwargs = {TRIGGER_PAYLOAD: payload}
            return functools.partial(func, **kwargs), args, kwargs, node.is_async
        call: tuple[Any, tuple[Any, ...], dict[str, Any], bool] = (func, args, {}, node.is_async)
        if not node.takes_payload:
            self.plain_calls[task.method] = call
        return call

    def _ctx(self, task: Task) -> CallContext:
        """The context of a call that runs alone, on the live state."""
        run = self.run
        ctx = CallContext(self.flow, task.id, task.method, run.answers.get(task.id, _NO_ANSWERS))
        if not run.committed_is_current and (
            self.journal.durable
            or (self.policies or self._load_policies())[task.method] is not None
        ):
            # With @persist on some methods (or no durable persistence and a retry
            # policy): the state this method starts from is not stored anywhere, and an
            # interrupt or a retry must be able to go back to it.
            ctx.base = copy_state(run.state)
        return ctx

    def _load_policies(self) -> dict[str, Retry | None]:
        """Every method's retry policy, from the class's table: fetched when first
        needed (a durable run that never fails never asks)."""
        table = self.policies = type(self.flow)._retry_policies()
        return table

    def _emit_started(self, task: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        params = {f"_{i}": arg for i, arg in enumerate(args)}
        params.update(kwargs)
        self.flow._emit(
            MethodStarted,
            method=task.method,
            params=params,
            state=self.flow._adapter.snapshot(self.run.state),
        )

    def _launch(
        self, ready: deque[Task], running: dict[_AnyFuture, tuple[Task, CallContext]], inbox: Inbox
    ) -> None:
        """Start every ready call beside the others, each isolated: its context's base
        is the run's state now, copied into its own view when it first reads it."""
        flow, state, answers = self.flow, self.run.state, self.run.answers
        listening = flow._has_listeners()
        threaded: list[MethodCall] = []
        while ready:
            task = ready.popleft()
            ctx = CallContext(
                flow, task.id, task.method, answers.get(task.id, _NO_ANSWERS), 0, True, state
            )
            func, args, kwargs, is_async = self._call(task)
            if listening:
                self._emit_started(task, args, kwargs)
            fut: _AnyFuture
            if is_async:
                fut = asyncio.ensure_future(_call_async(ctx, func, args))
                fut.add_done_callback(inbox.put)
            else:
                # no asyncio future chained to it: its completion reaches the loop
                # through the inbox, batched with its neighbours'
                fut = MethodCall(ctx, func, args, inbox.put)
                threaded.append(fut)
            running[fut] = (task, ctx)
        self.state_shared = True
        if threaded:
            keep_moving(inbox.loop)
            # last: the woken thread may take this thread's core (and wait for the GIL)
            workers().submit_all(threaded)

    async def run_tasks(self, tasks: list[Task]) -> Any:
        """Run ``tasks`` and everything they trigger; return the last output or an
        :class:`Interrupted`."""
        ready: deque[Task] = deque(tasks)
        running: dict[_AnyFuture, tuple[Task, CallContext]] = {}
        #: calls waiting out a retry's backoff: a timer each, posted to the inbox
        waiting: dict[_AnyFuture, Task] = {}
        #: where finished calls are posted (made when a first call is not run inline)
        inbox: Inbox | None = None

        def wait_then_retry(task: Task, delay: float) -> None:
            nonlocal inbox
            inbox = inbox or Inbox(asyncio.get_running_loop())
            timer = asyncio.ensure_future(asyncio.sleep(delay))
            timer.add_done_callback(inbox.put)
            waiting[timer] = task

        try:
            while ready or running or waiting:
                if not running and not waiting and len(ready) == 1:
                    # Alone: on the live state, no copy, no thread.
                    task = ready.popleft()
                    ctx = self._ctx(task)
                    listening = self.flow._has_listeners()
                    try:
                        func, args, kwargs, is_async = self._call(task)
                        if listening:
                            self._emit_started(task, args, kwargs)
                        if is_async:
                            output = await _call_async(ctx, func, args)
                        else:
                            token = current_call.set(ctx)
                            try:
                                output = func(*args)
                            finally:
                                current_call.reset(token)
                    except BaseException as exc:
                        delay = await self._failed(task, ctx, exc)
                        if delay is not None:
                            wait_then_retry(task, delay)
                        continue
                    new, store = self._finished(task, output, False, listening)
                    if store is not None:
                        await store
                    ready.extend(new)
                    continue
                inbox = inbox or Inbox(asyncio.get_running_loop())
                if ready:
                    self._launch(ready, running, inbox)
                done = await inbox.take()
                if waiting:
                    for timer in [f for f in done if f in waiting]:
                        ready.append(waiting.pop(timer))
                finished = [f for f in done if f in running]
                if len(finished) > 1:
                    # Several finished in one wake-up: merged and checkpointed in start
                    # order.
                    finished.sort(key=lambda f: running[f][0].id)
                for fut in finished:
                    task, ctx = running.pop(fut)
                    if type(fut) is MethodCall:
                        error = fut.error
                    elif fut.cancelled():
                        error = asyncio.CancelledError()
                    else:
                        error = fut.exception()
                    retryable = True
                    if error is None and ctx.view is not None:
                        try:
                            self._merge(ctx)
                        except StateConflictError as exc:
                            error, retryable = exc, False
                    if error is not None:
                        delay = await self._failed(task, ctx, error, retryable=retryable)
                        if delay is not None:
                            wait_then_retry(task, delay)
                        continue
                    busy = bool(ready or running or waiting)
                    new, store = self._finished(task, fut.result(), busy, listening=None)
                    if store is not None:
                        await store
                    ready.extend(new)
        except BaseException:
            await _cancel(running)
            await _cancel(waiting)
            raise
        if self.interrupts:
            return await self._pause()
        return self.run.last[1] if self.run.last else None

    def _merge(self, ctx: CallContext) -> None:
        """Fold an isolated method's view into the run's state (into a new object when a
        method still running holds the current one as its base)."""
        merge = Merge(ctx.method, self.writers)
        state = self.run.state
        merged = merge.state(ctx.base, state, ctx.view, in_place=not self.state_shared)
        merge.commit()
        if merged is not state:
            self.run.state = merged
            self.state_shared = False

    def _finished(
        self, task: Task, output: Any, busy: bool, listening: bool | None
    ) -> tuple[list[Task], Awaitable[Any] | None]:
        """Record a call that returned (its output, the event, the scheduler's next
        calls); return those calls and what must be awaited to store it: a checkpoint,
        the run's status, or (a changed state id) the failure -- None when nothing is
        stored, so a method without persistence costs no coroutine. ``listening``: the
        listener check made when the call started (None: check now)."""
        run = self.run
        try:
            self.flow._method_finished(task.method, output)
        except FlowUsageError as exc:
            ctx = CallContext(self.flow, task.id, task.method, _NO_ANSWERS)
            return [], self._failed(task, ctx, exc, retryable=False)  # raises, awaited
        if listening is None:
            listening = self.flow._has_listeners()
        if listening:
            self.flow._emit(
                MethodFinished,
                method=task.method,
                output=output,
                state=self.flow._adapter.snapshot(run.state),
            )
        new = self.scheduler.complete(task.id, output)
        if run.answers:
            run.answers.pop(task.id, None)
        if run.retries:
            run.retries.pop(task.id, None)
        run.last = (task.method, output)
        final = not new and not busy and not self.interrupts
        if self.journal.wants(task.method):
            return new, run.commit(task.method, "completed" if final else "running")
        run.committed_is_current = False
        if final and self.journal.durable:
            return new, self.journal.set_status("completed")
        return new, None

    async def _failed(
        self, task: Task, ctx: CallContext, exc: BaseException, *, retryable: bool = True
    ) -> float | None:
        """A method call raised: an interrupt pauses it (returns None),
        an exception its retry policy covers drops the attempt's changes, is recorded
        and returns the seconds to wait before the next attempt; anything else fails the
        run (raised). ``retryable`` is False for errors flowkit raised around the
        method (a merge conflict, a changed state id): a policy does not cover those."""
        if isinstance(exc, InterruptSignal):
            if not self.journal.durable:
                raise FlowConfigurationError(
                    f"{self.flow._graph.flow_name}.{task.method} called self.interrupt(), "
                    "which needs a persistence backend that can resume runs (history and "
                    "compare-and-set). Add @persist (the default SQLite backend qualifies) or "
                    "pass Flow(persistence=...)."
                ) from None
            # Its partial changes must not be stored: re-running it on resume starts
            # from the state it started with.
            self.run.rollback(ctx)
            self.interrupts.append((task, exc.payload))
            if self.flow._has_listeners():
                self.flow._emit(FlowInterrupted, method=task.method, payload=exc.payload)
            return None
        policy = (self.policies or self._load_policies())[task.method] if retryable else None
        before = self.run.retries.get(task.id)
        attempt = (before.count if before is not None else 0) + 1
        attempts = policy.attempts if policy is not None else 1
        if policy is not None and policy.retries(exc, attempt):
            return await self._retry_later(task, ctx, exc, attempt, attempts, policy.wait(attempt))
        if self.flow._has_listeners() and isinstance(exc, Exception):
            self.flow._emit(MethodFailed, method=task.method, error=exc, attempt=attempt)
        if self.journal.durable and isinstance(exc, Exception):
            error = error_record(task.method, exc, attempt, attempts, with_traceback=True)
            with contextlib.suppress(FlowkitError):  # the original exception matters more
                await self.journal.set_status("failed", error)
        raise exc

    async def _retry_later(
        self,
        task: Task,
        ctx: CallContext,
        exc: BaseException,
        attempt: int,
        attempts: int,
        delay: float,
    ) -> float:
        """Drop the failed attempt's changes and record it (in a checkpoint, before the
        wait: a crash during the wait resumes with the count kept)."""
        self.run.rollback(ctx)
        error = error_record(task.method, exc, attempt, attempts, with_traceback=False)
        self.run.retries[task.id] = FailedAttempts(task.method, attempt, error)
        if self.journal.durable:
            record = {
                "method": task.method,
                "task_id": task.id,
                "attempt": attempt,
                "attempts": attempts,
                "delay": delay,
                "error": error_record(task.method, exc, attempt, attempts, with_traceback=True),
            }
            await self.run.commit(task.method, "running", retry=record)
        if self.flow._has_listeners():
            self.flow._emit(
                MethodRetrying,
                method=task.method,
                error=exc,
                attempt=attempt,
                attempts=attempts,
                delay=delay,
            )
        return delay

    async def _pause(self) -> Interrupted:
        task, payload = self.interrupts[0]
        await self.run.commit(
            task.method, "interrupted", PendingInterrupt(task.method, task.id, payload)
        )
        return Interrupted(run_id=self.run.run_id, payload=payload, method_name=task.method)


async def _cancel(running: dict[_AnyFuture, Any]) -> None:
    # Async methods are cancelled and awaited; a sync method running in a thread cannot
    # be stopped: it finishes on its own and its result is dropped.
    tasks = [fut for fut in running if isinstance(fut, asyncio.Future)]
    for fut in running:
        fut.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    running.clear()


_AnyFuture = Union["asyncio.Future[Any]", ThreadCall]
