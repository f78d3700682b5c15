"""The async executor: drives the scheduler, runs methods, writes checkpoints.

Kept thin on purpose: every decision about *what* runs lives in the scheduler. A sync
method runs inline when it is the only thing that could run; it goes to a worker thread
only when something could overlap with it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

from ._graph import TRIGGER_PAYLOAD
from ._interrupt import CallContext, Interrupted, InterruptSignal, current_call
from .events import FlowInterrupted, MethodFailed, MethodFinished, MethodStarted
from .exceptions import FlowConfigurationError, FlowkitError, FlowUsageError

if TYPE_CHECKING:
    from ._flow import Flow
    from ._journal import Journal
    from ._scheduler import Scheduler, Task

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


@dataclass
class Runner:
    """Executes one kickoff (or resume) of a flow."""

    flow: Flow[Any]
    scheduler: Scheduler
    journal: Journal
    answers: dict[int, list[Any]] = field(default_factory=dict)
    last: tuple[str, Any] | None = None
    interrupts: list[tuple[Task, Any]] = field(default_factory=list)

    def _args(self, task: Task) -> tuple[Any, ...]:
        node = self.scheduler.graph.nodes[task.method]
        return (task.payload,) if node.takes_payload and task.trigger is not None else ()

    def _kwargs(self, task: Task) -> dict[str, Any]:
        # a kickoff start gets the kickoff's crewai_trigger_payload if it declares it
        node = self.scheduler.graph.nodes[task.method]
        if node.takes_trigger_payload and task.trigger is None:
            return {TRIGGER_PAYLOAD: task.payload}
        return {}

    def _method(self, task: Task) -> Any:
        func = getattr(self.flow, task.method)
        kwargs = self._kwargs(task)
        return functools.partial(func, **kwargs) if kwargs else func

    def _ctx(self, task: Task) -> CallContext:
        return CallContext(self.flow, task.id, task.method, self.answers.get(task.id, []))

    def _emit_started(self, task: Task) -> None:
        if self.flow._has_listeners():
            params = {f"_{i}": arg for i, arg in enumerate(self._args(task))}
            params.update(self._kwargs(task))
            self.flow._emit(
                MethodStarted,
                method=task.method,
                params=params,
                state=self.flow._adapter.snapshot(self.flow._state),
            )

    async def _run_inline(self, task: Task) -> Any:
        func = self._method(task)
        self._emit_started(task)
        if self.scheduler.graph.nodes[task.method].is_async:
            return await _call_async(self._ctx(task), func, self._args(task))
        return _call_sync(self._ctx(task), func, self._args(task))

    def _launch(self, task: Task, inbox: _Inbox) -> _AnyFuture:
        func = self._method(task)
        self._emit_started(task)
        ctx = self._ctx(task)
        fut: _AnyFuture
        if self.scheduler.graph.nodes[task.method].is_async:
            fut = asyncio.ensure_future(_call_async(ctx, func, self._args(task)))
        else:
            # a plain pool future: no asyncio future chained to it, and its completion
            # reaches the loop through the inbox, batched with its neighbours'
            fut = _workers().submit(_call_sync, ctx, func, self._args(task))
        fut.add_done_callback(inbox.put)
        return fut

    async def run(self, tasks: list[Task]) -> Any:
        """Run ``tasks`` and everything they trigger; return the last output or an
        :class:`Interrupted`."""
        ready: deque[Task] = deque(tasks)
        running: dict[_AnyFuture, Task] = {}
        inbox = _Inbox(asyncio.get_running_loop())
        try:
            while ready or running:
                if not running and len(ready) == 1:
                    task = ready.popleft()
                    try:
                        output = await self._run_inline(task)
                    except BaseException as exc:
                        await self._failed(task, exc, running)
                        continue
                    ready.extend(await self._finished(task, output, bool(ready or running)))
                    continue
                while ready:
                    task = ready.popleft()
                    running[self._launch(task, inbox)] = task
                done = await inbox.take()
                for fut in sorted(done, key=lambda f: running[f].id):
                    task = running.pop(fut)
                    error = fut.exception() if not fut.cancelled() else asyncio.CancelledError()
                    if error is not None:
                        await self._failed(task, error, running)
                        continue
                    busy = bool(ready or running)
                    ready.extend(await self._finished(task, fut.result(), busy))
        except BaseException:
            await _cancel(running)
            raise
        if self.interrupts:
            return await self._pause()
        return self.last[1] if self.last else None

    async def _finished(self, task: Task, output: Any, busy: bool) -> list[Task]:
        try:
            self.flow._method_finished(task.method, output)
        except FlowUsageError as exc:
            await self._failed(task, exc, {})
        if self.flow._has_listeners():
            self.flow._emit(
                MethodFinished,
                method=task.method,
                output=output,
                state=self.flow._adapter.snapshot(self.flow._state),
            )
        new = self.scheduler.complete(task.id, output)
        self.answers.pop(task.id, None)
        self.last = (task.method, output)
        final = not new and not busy and not self.interrupts
        if self.journal.wants(task.method):
            await self.journal.checkpoint(
                task.method,
                self.flow._state,
                self.scheduler,
                {"last": self.last, "answers": self.answers},
                "completed" if final else "running",
            )
        elif final and self.journal.durable:
            await self.journal.set_status("completed")
        return new

    async def _failed(
        self, task: Task, exc: BaseException, running: dict[_AnyFuture, Task]
    ) -> None:
        if isinstance(exc, InterruptSignal):
            if not self.journal.durable:
                raise FlowConfigurationError(
                    f"{self.flow._graph.flow_name}.{task.method} called self.interrupt(), "
                    "which needs a persistence backend that can resume runs (history and "
                    "compare-and-set). Add @persist (the default SQLite backend qualifies) or "
                    "pass Flow(persistence=...)."
                ) from None
            if not running:
                # Nothing else ran alongside it: drop its partial changes, so that
                # re-running it on resume starts from the state it started with.
                await self.flow._rollback()
            self.interrupts.append((task, exc.payload))
            if self.flow._has_listeners():
                self.flow._emit(FlowInterrupted, method=task.method, payload=exc.payload)
            return
        if self.flow._has_listeners() and isinstance(exc, Exception):
            self.flow._emit(MethodFailed, method=task.method, error=exc)
        if self.journal.durable and isinstance(exc, Exception):
            with contextlib.suppress(FlowkitError):  # the original exception matters more
                await self.journal.set_status(
                    "failed",
                    {
                        "error": {
                            "method": task.method,
                            "type": type(exc).__name__,
                            "message": str(exc)[:2000],
                        }
                    },
                )
        raise exc

    async def _pause(self) -> Interrupted:
        task, payload = self.interrupts[0]
        interrupt = {"method": task.method, "task_id": task.id, "payload": payload}
        from ._codec import encode

        stored = dict(interrupt, payload=encode(payload, path="interrupt payload", cipher=None))
        await self.journal.checkpoint(
            task.method,
            self.flow._state,
            self.scheduler,
            {"last": self.last, "answers": self.answers, "interrupt": stored},
            "interrupted",
        )
        return Interrupted(run_id=self.flow._run_id(), payload=payload, method_name=task.method)


_WORKERS: concurrent.futures.ThreadPoolExecutor | None = None
_WORKERS_LOCK = threading.Lock()
#: Sync methods that run side by side (e.g. 20 listeners each calling an LLM API) each
#: get a thread; asyncio's default pool has only cores + 4 workers.
MAX_WORKER_THREADS = 64


def _workers() -> concurrent.futures.ThreadPoolExecutor:
    global _WORKERS
    if _WORKERS is None:
        with _WORKERS_LOCK:
            if _WORKERS is None:
                _WORKERS = concurrent.futures.ThreadPoolExecutor(
                    MAX_WORKER_THREADS, thread_name_prefix="flowkit-method"
                )
    return _WORKERS


async def _cancel(running: dict[_AnyFuture, Task]) -> None:
    # Async methods are cancelled and awaited; a sync method already running in a
    # thread cannot be stopped -- it finishes on its own and its result is dropped.
    tasks = [fut for fut in running if isinstance(fut, asyncio.Future)]
    for fut in running:
        fut.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    running.clear()


_AnyFuture = Union["asyncio.Future[Any]", "concurrent.futures.Future[Any]"]


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
