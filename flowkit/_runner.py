"""The async executor: drives the scheduler, runs methods, writes checkpoints.

Kept thin on purpose: every decision about *what* runs lives in the scheduler. A sync
method runs inline when it is the only thing that could run; it goes to a worker thread
only when something could overlap with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Union

from ._graph import TRIGGER_PAYLOAD
from ._interrupt import CallContext, Interrupted, InterruptSignal, current_call
from ._merge import Merge
from ._position import FailedAttempts, PendingInterrupt
from ._retry import error_record, policy_for
from ._workers import ThreadCall, keep_moving, workers
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
    from ._run import Run
    from ._scheduler import Task

__all__ = ["Runner"]


def _call_sync(ctx: CallContext, func: Any, args: tuple[Any, ...]) -> Any:
    token = current_call.set(ctx)
    try:
        return func(*args)
    finally:
        current_call.reset(token)


async def _call_async(ctx: CallContext, func: Any, args: tuple[Any, ...]) -> Any:
    token = current_call.set(ctx)
    try:
        return await func(*args)
    finally:
        current_call.reset(token)


class Runner:
    """Executes one :class:`~flowkit._run.Run` (a kickoff or a resume) to its end.

    The run's state is ``run.state``. A method that runs alone mutates it in place; a
    method that overlaps with others works on its own view (see :mod:`flowkit._isolation`)
    whose changes are merged in when it finishes, before its checkpoint is written. So a
    checkpoint never holds the effects of a method that has not finished.
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self.flow = run.flow
        self.scheduler = run.scheduler
        self.journal = run.journal
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

    def _args(self, task: Task) -> tuple[Any, ...]:
        graph = self.scheduler.graph
        node = graph.nodes[task.method]
        if not node.takes_payload or task.trigger is None:
            return ()
        if node.is_start and graph.nodes[task.trigger].is_router:
            # As in CrewAI, a start fired by a router's label is called without it.
            return ()
        return (task.payload,)

    def _kwargs(self, task: Task) -> dict[str, Any]:
        # A start declaring crewai_trigger_payload gets the kickoff's payload: a kickoff
        # start with its call, a conditional start from what the scheduler kept of it.
        node = self.scheduler.graph.nodes[task.method]
        if not node.takes_trigger_payload or not node.is_start:
            return {}
        if task.trigger is None:
            return {TRIGGER_PAYLOAD: task.payload}
        return {TRIGGER_PAYLOAD: self.scheduler.trigger_payload}

    def _method(self, task: Task) -> Any:
        func = getattr(self.flow, task.method)
        kwargs = self._kwargs(task)
        return functools.partial(func, **kwargs) if kwargs else func

    def _ctx(self, task: Task, *, isolated: bool) -> CallContext:
        ctx = CallContext(self.flow, task.id, task.method, self.run.answers.get(task.id, []))
        if isolated:
            ctx.isolated = True
            ctx.base = self.run.state
            self.state_shared = True
        elif not self.run.committed_is_current and (
            self.journal.durable or policy_for(type(self.flow), task.method) is not None
        ):
            # With @persist on some methods (or no durable persistence and a retry
            # policy): the state this method starts from is not stored anywhere, and an
            # interrupt or a retry must be able to go back to it.
            from ._isolation import copy_state

            ctx.base = copy_state(self.run.state)
        return ctx

    def _emit_started(self, task: Task) -> None:
        if self.flow._has_listeners():
            params = {f"_{i}": arg for i, arg in enumerate(self._args(task))}
            params.update(self._kwargs(task))
            self.flow._emit(
                MethodStarted,
                method=task.method,
                params=params,
                state=self.flow._adapter.snapshot(self.run.state),
            )

    async def _run_inline(self, task: Task, ctx: CallContext) -> Any:
        func = self._method(task)
        self._emit_started(task)
        if self.scheduler.graph.nodes[task.method].is_async:
            return await _call_async(ctx, func, self._args(task))
        return _call_sync(ctx, func, self._args(task))

    def _launch(self, task: Task, ctx: CallContext, inbox: _Inbox) -> _AnyFuture:
        func = self._method(task)
        self._emit_started(task)
        fut: _AnyFuture
        if self.scheduler.graph.nodes[task.method].is_async:
            fut = asyncio.ensure_future(_call_async(ctx, func, self._args(task)))
        else:
            # no asyncio future chained to it: its completion reaches the loop through
            # the inbox, batched with its neighbours'
            call = ThreadCall(_call_sync, (ctx, func, self._args(task)), inbox.put)
            workers().submit(call)
            return call
        fut.add_done_callback(inbox.put)
        return fut

    async def run_tasks(self, tasks: list[Task]) -> Any:
        """Run ``tasks`` and everything they trigger; return the last output or an
        :class:`Interrupted`."""
        ready: deque[Task] = deque(tasks)
        running: dict[_AnyFuture, tuple[Task, CallContext]] = {}
        #: calls waiting out a retry's backoff: a timer each, posted to the inbox
        waiting: dict[_AnyFuture, Task] = {}
        inbox = _Inbox(asyncio.get_running_loop())

        def wait_then_retry(task: Task, delay: float) -> None:
            timer = asyncio.ensure_future(asyncio.sleep(delay))
            timer.add_done_callback(inbox.put)
            waiting[timer] = task

        try:
            while ready or running or waiting:
                if not running and not waiting and len(ready) == 1:
                    # Alone: on the live state, no copy, no thread.
                    task = ready.popleft()
                    ctx = self._ctx(task, isolated=False)
                    try:
                        output = await self._run_inline(task, ctx)
                    except BaseException as exc:
                        delay = await self._failed(task, ctx, exc)
                        if delay is not None:
                            wait_then_retry(task, delay)
                        continue
                    ready.extend(await self._finished(task, output, bool(ready or running)))
                    continue
                threads = False
                while ready:
                    task = ready.popleft()
                    ctx = self._ctx(task, isolated=True)
                    fut = self._launch(task, ctx, inbox)
                    running[fut] = (task, ctx)
                    threads = threads or isinstance(fut, ThreadCall)
                if threads:
                    keep_moving(inbox.loop)
                done = await inbox.take()
                for timer in [f for f in done if f in waiting]:
                    ready.append(waiting.pop(timer))
                finished = [f for f in done if f in running]
                # Several finished in one wake-up: merged and checkpointed in start order.
                for fut in sorted(finished, key=lambda f: running[f][0].id):
                    task, ctx = running.pop(fut)
                    error = fut.exception() if not fut.cancelled() else asyncio.CancelledError()
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
                    ready.extend(await self._finished(task, fut.result(), busy))
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

    async def _finished(self, task: Task, output: Any, busy: bool) -> list[Task]:
        run = self.run
        try:
            self.flow._method_finished(task.method, output)
        except FlowUsageError as exc:
            ctx = CallContext(self.flow, task.id, task.method, [])
            await self._failed(task, ctx, exc, retryable=False)
        if self.flow._has_listeners():
            self.flow._emit(
                MethodFinished,
                method=task.method,
                output=output,
                state=self.flow._adapter.snapshot(run.state),
            )
        new = self.scheduler.complete(task.id, output)
        run.answers.pop(task.id, None)
        run.retries.pop(task.id, None)
        run.last = (task.method, output)
        final = not new and not busy and not self.interrupts
        if self.journal.wants(task.method):
            await run.commit(task.method, "completed" if final else "running")
        else:
            run.committed_is_current = False
            if final and self.journal.durable:
                await self.journal.set_status("completed")
        return new

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
        policy = policy_for(type(self.flow), task.method) if retryable else None
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
    # Async methods are cancelled and awaited; a sync method already running in a
    # thread cannot be stopped -- it finishes on its own and its result is dropped.
    tasks = [fut for fut in running if isinstance(fut, asyncio.Future)]
    for fut in running:
        fut.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    running.clear()


_AnyFuture = Union["asyncio.Future[Any]", ThreadCall]


class _Inbox:
    """Where finished method futures are posted, from the loop or a worker thread.

    One done-callback per future (``asyncio.wait`` would re-register on every pending
    future at each completion: quadratic in a wide fan-out), and at most one pending
    wake-up of the loop however many threads finish at once.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: deque[_AnyFuture] = deque()
        self.lock = threading.Lock()
        self.wake_pending = False
        self.waiter: asyncio.Future[None] | None = None

    def put(self, fut: _AnyFuture) -> None:
        with self.lock:
            self.items.append(fut)
            if self.wake_pending:
                return
            self.wake_pending = True
        if isinstance(fut, asyncio.Future):
            self._wake()  # done-callbacks of asyncio futures run on the loop already
        else:
            self.loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        with self.lock:
            self.wake_pending = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def take(self) -> list[_AnyFuture]:
        """Every future finished so far; waits for at least one."""
        while True:
            with self.lock:
                if self.items:
                    done = list(self.items)
                    self.items.clear()
                    return done
            self.waiter = self.loop.create_future()
            await self.waiter
