"""run_sync's loops: reused per thread, or a helper thread's inside a running loop."""

from __future__ import annotations

import asyncio
import threading

from flowkit._concurrency import on_owned_loop, run_sync


def test_run_sync_reuses_one_loop_per_thread() -> None:
    """A sync kickoff runs on this thread's own loop, the same one each time."""

    async def loop_id() -> int:
        return id(asyncio.get_running_loop())

    assert run_sync(loop_id()) == run_sync(loop_id())


def test_run_syncs_loop_is_flowkits_own_and_a_callers_is_not() -> None:
    """Operations may answer straight to run_sync's loops (flowkit closes them only when
    their tasks are done); a caller's loop (kickoff_async in an application) is not."""

    async def check() -> bool:
        return on_owned_loop()

    assert run_sync(check()) is True
    assert asyncio.run(check()) is False


def test_inside_a_running_loop_run_sync_uses_its_own_thread_and_loop() -> None:
    """Called from async code, run_sync runs the coroutine on a helper thread's loop,
    which it owns."""

    async def check() -> tuple[bool, str]:
        return on_owned_loop(), threading.current_thread().name

    async def caller() -> tuple[bool, str]:
        return run_sync(check())

    owned, thread = asyncio.run(caller())
    assert owned is True and thread == "flowkit-kickoff"
