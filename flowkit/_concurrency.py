"""Every bridge between synchronous and asynchronous code in flowkit, in one module.

- :func:`run_sync`: run a coroutine to completion from sync code (``Flow.kickoff()``),
  on this thread's reusable loop, or on a helper thread when a loop already runs here.
  On the main thread Ctrl-C cancels a run that stores something, lets it unwind, then
  raises KeyboardInterrupt (a second Ctrl-C raises at once), as ``asyncio.run`` does.
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
import os
import queue
import signal
import threading
import time
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
    _made_by[loop] = os.getpid()
    return loop


# The process that made each of flowkit's loops. After ``os.fork()`` the child holds
# copies of the parent's loops, whose selector (epoll) is shared with the parent: closing
# one in the child would unregister the parent's sockets and wake-up pipe from it, and
# the parent's thread would never wake again.
_made_by: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = weakref.WeakKeyDictionary()
_from_parent: list[object] = []


def keep_from_parent(thing: object) -> None:
    """Keep ``thing``, a loop or a resource bound to one that this process inherited
    from its parent, alive and untouched for the life of the process: never used,
    never closed, never collected (see ``_made_by``)."""
    _from_parent.append(thing)


def made_here(loop: asyncio.AbstractEventLoop) -> bool:
    return _made_by.get(loop, os.getpid()) == os.getpid()


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


# Loops left with a task that would not unwind: closed at exit without running it again.
_abandoned: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def _close(loop: asyncio.AbstractEventLoop) -> None:
    if loop.is_closed() or loop.is_running() or not made_here(loop):
        return
    try:
        # A finalizer may run on a thread that has a loop running: then just close.
        if running_loop() is None:
            pending = asyncio.all_tasks(loop)
            if pending and loop not in _abandoned:  # still completing (see ``completing``)
                loop.run_until_complete(asyncio.wait(pending, timeout=UNWIND_LIMIT))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


class ThreadLoop:
    """One thread's reusable event loop (``run_sync``'s and ``wait_for``'s): a new loop (or
    an ``asyncio.Runner``, which makes one) costs more than a small flow's kickoff.

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
        self._closers: dict[int, Callable[[], Coroutine[Any, Any, None]]] = {}
        self._ended = False

    def current(self) -> bool:
        """True when this loop is the one running in the calling thread."""
        return running_loop() is self.loop

    def run(self, coro: Coroutine[Any, Any, T], graceful: bool = False) -> T:
        """Run ``coro`` on the loop, from its own thread (no loop running there); see
        :func:`run_sync` for ``graceful``."""
        with self.turn:
            return _run_on(self.loop, coro, graceful)

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
            if self.loop in _abandoned:
                # Left with a task that would not unwind (a second Ctrl-C): what is bound
                # to the loop may be half way through something; the process's end, or
                # the server, closes it.
                closers = []
            for closer in closers:
                with contextlib.suppress(Exception):
                    self.loop.run_until_complete(closer())
            _close(self.loop)


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
            if owner is not None and owner.pid != os.getpid():
                keep_from_parent(owner)  # the parent's (see ``_made_by``)
            owner = self.owner = ThreadLoop()
            if threading.current_thread() is threading.main_thread():
                atexit.register(owner.end)  # runs before the databases shut down
            else:
                _closer.start()
                self.sentinel = _Sentinel(owner)
        return owner

    def forget(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stop using ``loop`` on this thread (a task that would not unwind is left on
        it); it is still closed (its closers run first) when the thread ends, or at exit."""
        owner = self.owner
        if owner is not None and owner.loop is loop:
            self.owner = None  # (its sentinel still hands it to the closer thread)
        _abandoned.add(loop)


_local = _PerThread()


def thread_loop() -> ThreadLoop | None:
    """The calling thread's :class:`ThreadLoop` when it is the loop running here (a
    sync kickoff, a blocking call run by ``wait_for(any_loop=True)``), else None."""
    owner = _local.owner
    if owner is not None and owner.current() and owner.pid == os.getpid():
        return owner
    return None


async def _then_stop(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    try:
        return await coro
    finally:
        loop.stop()


# How long Ctrl-C waits for a cancelled flow to unwind (give its lease back, roll back
# a transaction) before the KeyboardInterrupt is raised anyway.
UNWIND_LIMIT = 10.0


class _CtrlC:
    """Ctrl-C while flowkit's loop runs on the main thread, as ``asyncio.run`` takes it:
    the first press cancels the running task (it unwinds at its next ``await``, giving
    its lease back) and :func:`run_sync` then raises KeyboardInterrupt; a second press
    raises KeyboardInterrupt at once. Without this, Python raises KeyboardInterrupt
    wherever the main thread is -- possibly inside a loop callback handing a result to
    a task, which then waits forever (a lost wake-up). Installed only over Python's
    default handler, and only while the task runs."""

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.pressed = False

    @classmethod
    def watch(cls, task: asyncio.Task[Any]) -> _CtrlC | None:
        if threading.get_ident() != _MAIN_THREAD:
            return None
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return None  # the program's own handler decides
        watcher = cls(task)
        signal.signal(signal.SIGINT, watcher.on_signal)
        return watcher

    def on_signal(self, signum: int, frame: object) -> None:
        if self.pressed or self.task.done():
            raise KeyboardInterrupt
        self.pressed = True
        self.task.cancel()
        # The loop may be asleep in its selector: wake it to run the cancellation.
        self.task.get_loop().call_soon_threadsafe(_nothing)

    def close(self) -> None:
        if signal.getsignal(signal.SIGINT) == self.on_signal:
            signal.signal(signal.SIGINT, signal.default_int_handler)


_MAIN_THREAD = threading.main_thread().ident


def _nothing() -> None:
    pass


def _run_on(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], graceful: bool = False
) -> T:
    # run_forever until the coroutine stops the loop itself, rather than
    # run_until_complete: that stops the loop from the task's done callback, one more
    # turn of the loop (a poll of the selector) per call -- a tenth of a small kickoff.
    task = loop.create_task(_then_stop(loop, coro))
    ctrl_c = _CtrlC.watch(task) if graceful else None
    try:
        try:
            loop.run_forever()
        except BaseException:
            # KeyboardInterrupt (no handler of ours) or another BaseException while the
            # loop ran: let the flow unwind first -- unless this is a second Ctrl-C,
            # which stops at once.
            _unwind(loop, task, wait=ctrl_c is None or not ctrl_c.pressed)
            raise
    finally:
        if ctrl_c is not None:
            ctrl_c.close()
    if ctrl_c is not None and ctrl_c.pressed:
        if not task.cancelled():
            task.exception()  # retrieved: the KeyboardInterrupt is what is raised
        raise KeyboardInterrupt
    return task.result()


def _unwind(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any], *, wait: bool) -> None:
    """Cancel ``task`` and run the loop until it has unwound, for at most
    ``UNWIND_LIMIT`` seconds (not at all unless ``wait``); a task still running then is
    left behind with its loop, which this thread stops using (the next call makes a
    fresh one)."""
    if task.done():
        if not task.cancelled():
            task.exception()  # the one being raised: retrieved, so never logged as lost
        return
    task.cancel()
    if not wait:
        _local.forget(loop)
        return
    deadline = loop.call_later(UNWIND_LIMIT, loop.stop)
    with contextlib.suppress(BaseException):  # the first exception is what matters
        loop.run_forever()  # until the cancelled flow has unwound (and stops it)
    deadline.cancel()
    if not task.done():
        _local.forget(loop)


def run_sync(coro: Coroutine[Any, Any, T], *, graceful: bool = False) -> T:
    """Run ``coro`` and return its result.

    ``graceful`` (a run that stores something, a storage operation): on the main thread
    Ctrl-C cancels it and lets it unwind before KeyboardInterrupt is raised (see
    ``_CtrlC``); without it, KeyboardInterrupt is raised where the thread is, and the
    task is then cancelled and given ``UNWIND_LIMIT`` seconds (a kickoff that stores
    nothing has nothing to give back, and saves the handler's cost, a fifth of a small
    kickoff).

    In a thread with no running event loop, on this thread's reusable loop. Called from
    inside a running loop (a notebook, an async web handler), on a fresh thread with its
    own loop, blocking the caller until done -- it works and never deadlocks, because
    nothing in the flow needs the caller's loop.
    """
    if running_loop() is None:
        return _local.get().run(coro, graceful)
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
                if self._loop is not None:
                    keep_from_parent(self._loop)  # the parent's (see ``_made_by``)
                if _exiting:
                    # (a coroutine closed by the garbage collector at exit, unwinding)
                    raise PortalStopped(f"{self._name} is not started while Python exits")
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
        if loop is not None and self._pid != os.getpid():
            keep_from_parent(loop)  # the parent's (see ``_made_by``)
            return
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not threading.current_thread():
            thread.join()


_exiting = False


@atexit.register
def _stop_all_portals() -> None:
    # The last of flowkit's exit handlers: no portal thread starts after it.
    global _exiting
    _exiting = True
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
        return _local.get().run(coro, graceful=True)
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
