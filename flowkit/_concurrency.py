"""Every bridge between synchronous and asynchronous code in flowkit, in one module.

- :func:`run_sync`: run a coroutine to completion from sync code (``Flow.kickoff()``),
  on this thread's reusable loop, or on a helper thread when a loop already runs here.
- :class:`ThreadLoop`: that reusable loop of one thread, and the resources bound to it
  (closed on the loop before it closes); :func:`thread_loop`: the calling thread's, when
  it is the loop running here.
- :class:`Portal`: a private event loop on a daemon thread that coroutines are sent to
  from any thread or loop (loop-bound database connections live there).
- :func:`wait_for`: block until a coroutine is done from sync code, whatever the caller
  runs (the derived sync forms of the persistence operations); a coroutine that works
  on any loop runs on the caller's own reusable loop when it has no running one.
- :func:`run_inline`: run a coroutine to its end on the calling thread with no event
  loop at all, for one that answers without awaiting anything while :func:`inline` is
  true (the built-in SQLite backend's blocking reads); it raises :class:`NotInline`,
  having done nothing, when it cannot.
- :func:`in_thread`: await a blocking function run in a worker thread (the derived
  async forms).
- :class:`LoopAgnosticLock`: a mutual exclusion that tasks of different event loops (and
  threads) await without blocking their loop.
- :func:`running_loop`: the running loop of this thread, or None;
  :func:`on_owned_loop`: whether it is one of flowkit's own loops (run_sync's, a
  portal's), which never cancel or close under an operation in flight;
  :func:`completing`: await a coroutine that finishes even if its awaiter is cancelled.

Only public APIs of :mod:`asyncio` and :mod:`threading` are used (a test checks this).
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import os
import queue
import selectors
import signal
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

T = TypeVar("T")
P = ParamSpec("P")

__all__ = [
    "LoopAgnosticLock",
    "NotInline",
    "Portal",
    "PortalStopped",
    "ThreadLoop",
    "completing",
    "in_thread",
    "inline",
    "on_owned_loop",
    "run_inline",
    "run_sync",
    "running_loop",
    "thread_loop",
    "wait_for",
]


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, or None (no private asyncio API)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


# flowkit's own loops: closed only after their last task is done, and never cancelling
# tasks wholesale (as ``asyncio.run`` does at its end), so a resource that answers on the
# caller's loop (aiosqlite's worker) never replies to a closed loop from them.
_owned: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def _new_owned_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    _owned.add(loop)
    return loop


def on_owned_loop() -> bool:
    """True when the running loop is one of flowkit's own (see ``_owned``)."""
    loop = running_loop()
    return loop is not None and loop in _owned


async def completing(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` run as its own task: if the awaiting task is cancelled, the
    cancellation is raised at once but ``coro`` still runs to its end (an operation
    already handed to a worker thread is never abandoned half way)."""
    return await asyncio.shield(asyncio.ensure_future(coro))


# -- run_sync: Flow.kickoff() and friends ----------------------------------------------


class ThreadLoop:
    """One thread's reusable event loop (``run_sync``'s and ``wait_for``'s): a new loop (or
    ``asyncio.Runner``, which installs a SIGINT handler on every call) costs more than a
    small flow's kickoff.

    Resources bound to the loop (a PostgreSQL connection this thread owns) register a
    closer with :meth:`on_end`; the closers run on the loop before it closes. The loop
    ends when its thread does (the closer thread closes it then: see ``_closer``), or at
    exit for the main thread, before the databases shut down and the portals stop. Never
    from a finalizer, and never while its thread runs it: :meth:`call` borrows the loop
    only while it is idle (``turn``), or hands the coroutine to it while it runs.
    """

    def __init__(self) -> None:
        self.ident = threading.get_ident()
        self.pid = os.getpid()
        self.loop = _new_owned_loop()
        # Held by whoever runs the loop: its own thread (run_sync, wait_for), a closer.
        self.turn = threading.Lock()
        self._main = threading.current_thread() is threading.main_thread()
        self._closers: dict[int, Callable[[], Coroutine[Any, Any, None]]] = {}
        self._ended = False

    def current(self) -> bool:
        """True when this loop is the one running in the calling thread."""
        return running_loop() is self.loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop, from its own thread (no loop running there).

        On the main thread, with Python's own SIGINT handler in place, Ctrl-C is
        delivered by :meth:`_on_sigint` meanwhile (see there)."""
        with self.turn:
            if not self._main or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
                return _run_on(self.loop, coro)
            signal.signal(signal.SIGINT, self._on_sigint)
            try:
                return _run_on(self.loop, coro)
            finally:
                signal.signal(signal.SIGINT, signal.default_int_handler)

    def _on_sigint(self, signum: int, frame: types.FrameType | None) -> None:
        """Ctrl-C while the loop runs: KeyboardInterrupt at once, as Python's handler
        does, unless it would be raised inside the loop's own machinery -- a callback of
        a transport, which may be a database driver's protocol (compiled code that calls
        back into asyncio: asyncpg's, parsing the server's reply). Raised there, it leaves
        the protocol half way through a message, and the flow's unwinding then feeds it
        more data (a segmentation fault was seen). Then it is raised by a callback of its
        own, between two callbacks: the flow is cancelled and unwinds as usual."""
        if frame is not None and _in_loop_machinery(frame) and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(_interrupt)
            return
        signal.default_int_handler(signum, frame)

    def on_end(self, key: int, closer: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Await ``closer()`` on the loop before it closes (``key``: see :meth:`forget`)."""
        self._closers[key] = closer

    def forget(self, key: int) -> None:
        self._closers.pop(key, None)

    def ended(self) -> bool:
        return self._ended or self.loop.is_closed()

    def call(self, make: Callable[[], Coroutine[Any, Any, None]], timeout: float) -> None:
        """Run ``make()`` on the loop from any thread and wait for it (up to ``timeout``
        seconds, after which it is left to finish there): on the caller's thread while
        the loop is idle, else on the loop's own thread while it runs. From inside the
        loop it is only scheduled there (it runs once the calling callback returns)."""
        if self.pid != os.getpid() or self.ended():
            return
        if self.current():
            self.loop.create_task(make())
            return
        if running_loop() is not None:  # no second loop can run on this thread
            helper = threading.Thread(target=self.call, args=(make, timeout), name="flowkit-close")
            helper.start()
            helper.join()
            return
        deadline = time.monotonic() + timeout
        future: concurrent.futures.Future[None] | None = None
        while True:
            if self.turn.acquire(blocking=False):
                try:
                    if not self.loop.is_closed():
                        with contextlib.suppress(Exception):
                            self.loop.run_until_complete(
                                make() if future is None else asyncio.wrap_future(future)
                            )
                finally:
                    self.turn.release()
                return
            if future is None:
                try:
                    future = asyncio.run_coroutine_threadsafe(make(), self.loop)
                except RuntimeError:  # closed meanwhile
                    return
            with contextlib.suppress(concurrent.futures.TimeoutError, Exception):
                future.result(timeout=max(0.0, min(0.05, deadline - time.monotonic())))
            if future.done() or time.monotonic() >= deadline:
                return

    def end(self) -> None:
        """Run the closers, then close the loop: by a thread that does not run it (the
        ended thread's closer, or the main thread at exit)."""
        if self._ended or self.pid != os.getpid() or running_loop() is not None:
            return
        with self.turn:
            if self._ended:
                return
            self._ended = True
            if self.loop.is_closed() or self.loop.is_running():
                return
            closers, self._closers = list(self._closers.values()), {}
            for closer in closers:
                with contextlib.suppress(Exception):
                    self.loop.run_until_complete(closer())
            _close(self.loop)


def _interrupt() -> None:
    raise KeyboardInterrupt


_ASYNCIO_DIR = os.path.dirname(inspect.getfile(asyncio)) + os.sep


def _in_loop_machinery(frame: types.FrameType) -> bool:
    """Whether ``frame`` runs asyncio's code (a loop, a transport, a future's callbacks:
    what a driver's compiled protocol calls back into) or a driver's (asyncpg's)."""
    filename = frame.f_code.co_filename
    if filename.startswith(_ASYNCIO_DIR) or filename == selectors.__file__:
        return True
    driver = sys.modules.get("asyncpg")
    driver_file = getattr(driver, "__file__", None)
    return driver_file is not None and filename.startswith(os.path.dirname(driver_file) + os.sep)


class _Sentinel:
    """Kept in the thread's local storage: dropped when the thread ends, it hands the
    thread's loop to the closer thread (no loop is run inside this finalizer)."""

    def __init__(self, owner: ThreadLoop) -> None:
        self.owner = owner

    def __del__(self) -> None:
        owner = self.owner
        if owner.pid == os.getpid() and owner.ident == threading.get_ident():
            _closer.put(owner)


class _Closer:
    """A daemon thread that ends the loops of threads that have ended (see ThreadLoop)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[ThreadLoop | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def put(self, owner: ThreadLoop) -> None:
        # SimpleQueue.put is safe from a finalizer; starting the thread is not, so it is
        # started by whoever makes a ThreadLoop (see _PerThread.get).
        self._queue.put(owner)

    def start(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                self._queue = queue.SimpleQueue()  # (after a fork: the parent's items are not ours)
                self._thread = threading.Thread(
                    target=self._serve, name="flowkit-loop-closer", daemon=True
                )
                self._thread.start()
                self._pid = os.getpid()

    def _serve(self) -> None:
        while True:
            owner = self._queue.get()
            if owner is None:
                return
            with contextlib.suppress(Exception):
                owner.end()

    def stop(self) -> None:
        """At exit: end the loops still queued, then the thread."""
        thread = self._thread
        if self._pid != os.getpid() or thread is None:
            return
        self._queue.put(None)
        thread.join(timeout=_CLOSER_WAIT)


# How long exit waits for the closer thread to end the loops of threads that ended.
_CLOSER_WAIT = 10.0

_closer = _Closer()


class _PerThread(threading.local):
    owner: ThreadLoop | None = None
    sentinel: _Sentinel | None = None

    def get(self) -> ThreadLoop:
        owner = self.owner
        if owner is None or owner.pid != os.getpid() or owner.ended():
            # (after a fork the parent's loop is not ours: its selector is shared)
            owner = self.owner = ThreadLoop()
            if threading.current_thread() is threading.main_thread():
                atexit.register(owner.end)  # runs before the databases shut down
            else:
                _closer.start()
                self.sentinel = _Sentinel(owner)
        return owner


_local = _PerThread()


def thread_loop() -> ThreadLoop | None:
    """The calling thread's :class:`ThreadLoop` when it is the loop running here (a
    sync kickoff, a blocking call run by ``wait_for(any_loop=True)``), else None."""
    owner = _local.owner
    if owner is not None and owner.current() and owner.pid == os.getpid():
        return owner
    return None


def _close(loop: asyncio.AbstractEventLoop) -> None:
    if loop.is_closed() or loop.is_running():
        return
    try:
        # A finalizer may run on a thread that has a loop running: then just close.
        if running_loop() is None:
            pending = asyncio.all_tasks(loop)
            if pending:  # operations still completing (see ``completing``)
                loop.run_until_complete(asyncio.wait(pending))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


async def _then_stop(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    try:
        return await coro
    finally:
        loop.stop()


def _run_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    # run_forever until the coroutine stops the loop itself, rather than
    # run_until_complete: that stops the loop from the task's done callback, one more
    # turn of the loop (a poll of the selector) per call -- a tenth of a small kickoff.
    task = loop.create_task(_then_stop(loop, coro))
    try:
        loop.run_forever()
        return task.result()
    except BaseException:
        # Ctrl-C (or another BaseException) while the loop ran: cancel the flow and let
        # it unwind (releasing its lease) before re-raising.
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):  # the first exception is what matters
                loop.run_forever()  # until the cancelled flow has unwound (and stops it)
        elif not task.cancelled():
            task.exception()  # the one being raised: retrieved, so never logged as lost
        raise


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` and return its result.

    In a thread with no running event loop, on this thread's reusable loop. Called from
    inside a running loop (a notebook, an async web handler), on a fresh thread with its
    own loop, blocking the caller until done -- it works and never deadlocks, because
    nothing in the flow needs the caller's loop.
    """
    if running_loop() is None:
        return _local.get().run(coro)
    return _on_helper_thread(coro, "flowkit-kickoff")


def _on_helper_thread(coro: Coroutine[Any, Any, T], name: str) -> T:
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        loop = _new_owned_loop()
        try:
            result.append(_run_on(loop, coro))
        except BaseException as exc:
            error.append(exc)
        finally:
            _close(loop)

    thread = threading.Thread(target=target, name=name)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


# -- the portal: a loop on a daemon thread -----------------------------------------------


class PortalStopped(RuntimeError):
    """The portal was stopped while a coroutine sent to it was still running (the
    coroutine was cancelled there)."""


_live_portals: weakref.WeakSet[Portal] = weakref.WeakSet()


class Portal:
    """Runs coroutines on one private loop thread; restartable after :meth:`stop`.

    Loop-bound resources (asyncpg connections, aiosqlite worker threads, which are
    daemon threads when created here) live on the portal's loop, so callers on any
    thread or loop can use them: sync callers block on the result, async callers await
    it without blocking their own loop. The thread starts on first use.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stops = 0  # how many times stop() ran: tells a stop from a cancellation

    def in_portal_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def _started_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None and self._pid == os.getpid():
            return loop
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                # After a fork the thread is gone: start a fresh one in this process.
                ready = threading.Event()
                new_loop = _new_owned_loop()
                thread = threading.Thread(
                    target=self._serve, args=(new_loop, ready), name=self._name, daemon=True
                )
                thread.start()
                ready.wait()
                self._loop, self._thread, self._pid = new_loop, thread, os.getpid()
                _live_portals.add(self)
            return self._loop

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._started_loop())

    def call_soon(self, function: Callable[..., object], *args: object) -> None:
        """Call ``function(*args)`` on the portal's loop without waiting for it, if the
        portal runs (a stopped one holds nothing to call it for: it is not restarted)."""
        loop = self._loop
        if loop is None or self._pid != os.getpid():
            return
        with contextlib.suppress(RuntimeError):  # stopped meanwhile
            loop.call_soon_threadsafe(function, *args)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the portal and wait for its result (sync callers)."""
        if self.in_portal_thread():
            coro.close()
            raise RuntimeError(
                f"{self._name}: a blocking call was made from the portal's own loop; "
                "await the async method instead."
            )
        stops = self._stops
        future = self.submit(coro)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            if self._stops != stops:
                raise PortalStopped(f"{self._name} stopped under a running call") from None
            raise

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the portal and await its result without blocking this loop."""
        if self.in_portal_thread():
            return await coro
        stops = self._stops
        future = self.submit(coro)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if self._stops != stops and future.cancelled():
                raise PortalStopped(f"{self._name} stopped under a running call") from None
            raise

    def stop(self) -> None:
        """Stop the loop and join the thread; a later call starts a new one."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
            self._stops += 1
        if loop is None or thread is None or self._pid != os.getpid():
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not threading.current_thread():
            thread.join()


@atexit.register
def _stop_all_portals() -> None:
    for portal in list(_live_portals):
        portal.stop()


# (registered after _stop_all_portals, so it runs before: the loops of ended threads are
# closed while the portals still run)
atexit.register(_closer.stop)


# -- the derived forms of persistence operations ---------------------------------------

_waiting_portal = Portal("flowkit-persistence-sync")


def wait_for(
    coro: Coroutine[Any, Any, T], *, any_loop: bool = False, home: Portal | None = None
) -> T:
    """Block until ``coro`` is done and return its result, from any sync caller.

    The coroutine runs on a private background loop, so this works with or without a
    running loop in the calling thread and never nests loops. Called from that loop
    itself (an async method calling a derived sync one), the coroutine gets a loop of
    its own on a helper thread instead of deadlocking.

    ``any_loop``: nothing the coroutine uses is bound to one loop (aiosqlite's
    connection answers each call on the loop that made it). From a thread with no
    running loop it then runs on that thread's reusable loop, as :func:`run_sync` does
    (no hop to another thread and back); Ctrl-C cancels it there and lets it unwind (a
    transaction in flight is rolled back) before the KeyboardInterrupt is raised.

    ``home``: the portal the coroutine's resources live on (a PostgreSQL or MariaDB
    database's). It is run there directly, one thread hop instead of two (through the
    shared portal, then to its home), unless the caller is on a portal already.
    """
    if any_loop and running_loop() is None:
        return _local.get().run(coro)
    if home is not None and not home.in_portal_thread() and not _waiting_portal.in_portal_thread():
        return home.run(coro)
    if _waiting_portal.in_portal_thread():
        return _on_helper_thread(coro, "flowkit-persistence-nested")
    return _waiting_portal.run(coro)


class NotInline(Exception):
    """Raised by a coroutine run by :func:`run_inline` that cannot answer without
    awaiting something; it did nothing, and the caller runs it the usual way."""


_inline: contextvars.ContextVar[bool] = contextvars.ContextVar("flowkit_inline", default=False)


def inline() -> bool:
    """True inside a coroutine run by :func:`run_inline`: it must answer without
    awaiting anything that suspends, or raise :class:`NotInline` before doing anything."""
    return _inline.get()


def run_inline(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end on this thread, without an event loop: one step of the
    coroutine protocol, for a coroutine that awaits nothing that suspends while
    :func:`inline` is true (a blocking read the backend answers on the caller's thread:
    no loop to run, no thread to wake). Whatever it raises is raised here; it raises
    :class:`NotInline` when it cannot answer that way."""
    token = _inline.set(True)
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        _inline.reset(token)
    coro.close()
    raise RuntimeError(f"{coro!r} awaited something while run inline (a flowkit bug)")


async def in_thread(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Await ``function(*args, **kwargs)`` run in a worker thread (a blocking call from
    async code)."""
    return await asyncio.to_thread(functools.partial(function, *args, **kwargs))


# -- a lock for tasks of any loop ------------------------------------------------------


class LoopAgnosticLock:
    """Mutual exclusion between tasks on any event loops and threads.

    ``async with lock:`` takes it at once when it is free; otherwise the task waits on a
    future of its own loop, which the releasing holder resolves (thread-safely). Holders
    are served in arrival order. Never blocks a loop.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()  # guards _held and _waiters, held only briefly
        self._held = False
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        with self._mutex:
            if not self._held:
                self._held = True
                return
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            with self._mutex:
                if waiter in self._waiters:  # not handed over yet: just leave the queue
                    self._waiters.remove(waiter)
                    raise
            # Handed over while being cancelled: pass the lock on before leaving.
            self.release()
            raise

    def release(self) -> None:
        with self._mutex:
            while self._waiters:
                waiter = self._waiters.popleft()
                if _hand_over(waiter):
                    return  # still held, by the waiter now
            self._held = False

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()


def _hand_over(waiter: asyncio.Future[None]) -> bool:
    """Wake ``waiter`` as the lock's new holder; False if its loop is gone."""
    loop = waiter.get_loop()
    if loop.is_closed():
        return False
    try:
        loop.call_soon_threadsafe(_grant, waiter)
    except RuntimeError:  # closed meanwhile
        return False
    return True


def _grant(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():  # a cancelled waiter passes the lock on itself
        waiter.set_result(None)
