"""Run a coroutine to completion from synchronous code, inside a running loop or not."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import sys
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["may_block", "run_sync"]


class _ThreadLoop(threading.local):
    """One reusable event loop per thread: a new loop (or ``asyncio.Runner``, which
    installs a SIGINT handler on every call) costs more than a small flow's kickoff.
    Closed when the thread ends, or at exit for the main thread."""

    loop: asyncio.AbstractEventLoop | None = None
    #: the loop run_sync is running on this thread right now (this thread's reusable
    #: loop, or a helper thread's own), if any
    running: asyncio.AbstractEventLoop | None = None

    def get(self) -> asyncio.AbstractEventLoop:
        loop = self.loop
        if loop is None or loop.is_closed():
            loop = self.loop = asyncio.new_event_loop()
            thread = threading.current_thread()
            if thread is threading.main_thread():
                atexit.register(_close, loop)
            else:
                weakref.finalize(thread, _close, loop)
        return loop


def _close(loop: asyncio.AbstractEventLoop) -> None:
    if loop.is_closed() or loop.is_running():
        return
    try:
        # A finalizer may run on a thread that has a loop running: then just close.
        if asyncio._get_running_loop() is None:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


_local = _ThreadLoop()


def _task_registry() -> tuple[Any, ...]:
    """asyncio's registries of live tasks (every loop of the process), where this Python
    keeps them in sets we can take the length of; empty if it does not."""
    names = ("_all_tasks",) if sys.version_info < (3, 12) else ("_scheduled_tasks", "_eager_tasks")
    found = tuple(getattr(asyncio.tasks, name, None) for name in names)
    return found if all(hasattr(registry, "__len__") for registry in found) else ()


_registries = _task_registry()


def may_block() -> bool:
    """True when the running loop is one of run_sync's and the current task is the only
    unfinished task on it: a synchronous ``kickoff()`` with nothing beside it. Blocking
    this thread while waiting for I/O then delays nobody, and saves the event loop's
    wake-up path (a self-pipe write, a selector round and a task step per wait). Never
    true on a caller's own loop (``kickoff_async``)."""
    loop = asyncio._get_running_loop()
    if loop is None or loop is not _local.running:
        return False
    if _registries and sum(len(registry) for registry in _registries) == 1:
        return True  # the only task in the whole process: the running one
    return len(asyncio.all_tasks(loop)) <= 1


def _run_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    task = loop.create_task(coro)
    outer, _local.running = _local.running, loop
    try:
        return loop.run_until_complete(task)
    except BaseException:
        # Ctrl-C (or another BaseException) while the loop ran: cancel the flow and let
        # it unwind (releasing its lease) before re-raising.
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):  # the first exception is what matters
                loop.run_until_complete(task)
        raise
    finally:
        _local.running = outer


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` and return its result.

    In a thread with no running event loop, on this thread's reusable loop. Called from
    inside a running loop (a notebook, an async web handler), on a fresh thread with its
    own loop, blocking the caller until done -- it works and never deadlocks, because
    nothing in the flow needs the caller's loop.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        in_loop = False
    else:
        in_loop = True
    if not in_loop:
        # outside the except block: the flow's exceptions must not get this
        # RuntimeError as their __context__
        return _run_on(_local.get(), coro)
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        loop = asyncio.new_event_loop()
        try:
            result.append(_run_on(loop, coro))
        except BaseException as exc:
            error.append(exc)
        finally:
            _close(loop)

    thread = threading.Thread(target=target, name="flowkit-kickoff")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
