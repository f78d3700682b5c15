"""The threads that run sync methods which overlap with others.

A plain ``ThreadPoolExecutor`` wakes one idle thread per submitted call: a fan-out of 50
short sync methods costs 50 thread wake-ups and 50 threads fighting for the GIL, which
is most of its run time. This pool wakes threads only as needed: a submitted call wakes
a thread only when no thread is free to take it soon, and a thread that finishes a call
takes the next queued one. So short calls run back to back on the threads already awake.

Calls that block (an HTTP request) must still all run at once. Whoever waits for the
calls (the runner, on its event loop) calls :meth:`WorkerPool.unstick` every
:data:`UNSTICK_EVERY` seconds while calls are queued: if no queued call was taken since
the last look and no woken thread is still on its way, every awake thread is blocked,
and one thread per queued call is woken. A fan-out of blocking calls thus starts within
about a millisecond. A thread woken but not yet running says the machine is busy, not
that calls block: waking more threads then would only make them fight for the GIL (and
for this pool's lock), so the look waits for it.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ._flow import current_call

if TYPE_CHECKING:
    from ._flow import CallContext

__all__ = [
    "MAX_WORKER_THREADS",
    "UNSTICK_EVERY",
    "Inbox",
    "MethodCall",
    "ThreadCall",
    "WorkerPool",
    "keep_moving",
    "workers",
]

#: Sync methods that run side by side (e.g. 20 listeners each calling an LLM API) each
#: get a thread; asyncio's default pool has only cores + 4 workers.
MAX_WORKER_THREADS = 64
#: how often (seconds) a waiting runner checks that queued calls are being taken
UNSTICK_EVERY = 0.001


class WorkerPool:
    """Runs ``call()`` jobs on up to ``size`` daemon threads, waking them as needed."""

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self.jobs: deque[Callable[[], Any]] = deque()
        self.cond = threading.Condition(threading.Lock())
        self.threads = 0
        self.idle = 0
        #: threads notified (or started) that have not taken a job yet
        self.waking = 0
        #: threads running a job
        self.busy = 0
        #: jobs taken so far, and the count at the last unstick() look
        self.taken = 0
        self.taken_seen = 0

    def submit(self, job: Callable[[], Any]) -> None:
        """Queue ``job`` (it must not raise: it reports its own outcome)."""
        self.submit_all((job,))

    def submit_all(self, jobs: Iterable[Callable[[], Any]]) -> None:
        """Queue ``jobs`` at once (one lock, at most one thread woken: the others are
        woken by :meth:`unstick` if the calls block)."""
        with self.cond:
            self.jobs.extend(jobs)
            if self.waking == 0 and self.busy == 0:
                self._wake(1)

    def unstick(self) -> bool:
        """Wake threads for queued jobs if none was taken since the last call; return
        whether jobs are still queued (call again later)."""
        with self.cond:
            if not self.jobs:
                return False
            if self.taken == self.taken_seen and self.waking == 0:
                self._wake(len(self.jobs))
            self.taken_seen = self.taken
            return True

    def _wake(self, count: int) -> None:
        # called with the lock held
        while count > 0:
            if self.idle > self.waking:
                self.cond.notify()
            elif self.threads < self.size:
                self.threads += 1
                name = f"{self.name}-{self.threads}"
                threading.Thread(target=self._loop, name=name, daemon=True).start()
            else:
                return
            self.waking += 1
            count -= 1

    def _loop(self) -> None:
        cond = self.cond
        with cond:
            self.waking -= 1  # a new thread counts as woken until here
            while True:
                while not self.jobs:
                    self.idle += 1
                    cond.wait()
                    self.idle -= 1
                    if self.waking:
                        self.waking -= 1
                job = self.jobs.popleft()
                self.taken += 1
                self.busy += 1
                cond.release()
                try:
                    job()
                finally:
                    cond.acquire()
                    self.busy -= 1


class ThreadCall:
    """One sync call run by the pool: a minimal future (the runner reads ``exception()``
    and ``result()`` once it is done; a thread cannot be cancelled). Subclasses may
    override ``__call__`` (run the call, set ``value`` or ``error``, then ``done(self)``)."""

    __slots__ = ("args", "done", "error", "func", "value")

    def __init__(
        self, func: Callable[..., Any], args: tuple[Any, ...], done: Callable[[ThreadCall], Any]
    ) -> None:
        self.func = func
        self.args = args
        self.done = done
        self.value: Any = None
        self.error: BaseException | None = None

    def __call__(self) -> None:
        try:
            self.value = self.func(*self.args)
        except BaseException as exc:  # interrupts are BaseExceptions: reported, not lost
            self.error = exc
        self.done(self)

    def cancelled(self) -> bool:
        return False

    def cancel(self) -> bool:
        return False

    def exception(self) -> BaseException | None:
        return self.error

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class MethodCall(ThreadCall):
    """A flow method run by the pool, inside its call context (for ``self.state`` and
    ``self.interrupt()``)."""

    __slots__ = ("ctx",)

    def __init__(self, ctx: CallContext, func: Any, args: tuple[Any, ...], done: Any) -> None:
        self.ctx = ctx
        self.func = func
        self.args = args
        self.done = done
        self.value = None
        self.error = None

    def __call__(self) -> None:
        token = current_call.set(self.ctx)
        try:
            self.value = self.func(*self.args)
        except BaseException as exc:  # interrupts are BaseExceptions: reported, not lost
            self.error = exc
        finally:
            current_call.reset(token)
        self.done(self)


_POOL: WorkerPool | None = None
_POOL_LOCK = threading.Lock()


def workers() -> WorkerPool:
    """The process's pool for sync methods (created on first use)."""
    global _POOL
    if _POOL is None:
        with _POOL_LOCK:
            if _POOL is None:
                _POOL = WorkerPool(MAX_WORKER_THREADS, "flowkit-method")
    return _POOL


def keep_moving(loop: asyncio.AbstractEventLoop) -> None:
    """Check on ``loop`` every :data:`UNSTICK_EVERY` seconds, while calls are queued,
    that the pool keeps taking them (see the module docstring)."""
    pool = workers()

    def look() -> None:
        if pool.unstick():
            loop.call_later(UNSTICK_EVERY, look)

    loop.call_later(UNSTICK_EVERY, look)


class Inbox:
    """Where finished method futures are posted, from the loop or a worker thread.

    One done-callback per future (``asyncio.wait`` would re-register on every pending
    future at each completion: quadratic in a wide fan-out), and at most one pending
    wake-up of the loop however many threads finish at once.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: deque[Any] = deque()
        self.lock = threading.Lock()
        self.wake_pending = False
        self.waiter: asyncio.Future[None] | None = None

    def put(self, fut: Any) -> None:
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

    async def take(self) -> list[Any]:
        """Every future finished so far; waits for at least one."""
        while True:
            with self.lock:
                if self.items:
                    done = list(self.items)
                    self.items.clear()
                    return done
            self.waiter = self.loop.create_future()
            await self.waiter
