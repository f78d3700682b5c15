"""Run a coroutine to completion from synchronous code, inside a running loop or not."""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["run_sync"]


class _ThreadRunner(threading.local):
    """One reusable event loop per thread: creating a loop per kickoff costs more than
    the kickoff of a small flow. Closed when the thread ends (or at exit)."""

    runner: asyncio.Runner | None = None

    def get(self) -> asyncio.Runner:
        if self.runner is None:
            self.runner = asyncio.Runner()
            if threading.current_thread() is threading.main_thread():
                atexit.register(self.runner.close)
            else:
                _close_on_exit(self.runner)
        return self.runner


def _close_on_exit(runner: asyncio.Runner) -> None:
    # threading.local values die with their thread; close the loop then.
    import weakref

    weakref.finalize(threading.current_thread(), runner.close)


_local = _ThreadRunner()


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
        return _local.get().run(coro)
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="flowkit-kickoff")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
