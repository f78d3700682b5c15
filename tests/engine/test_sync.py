"""run_sync's loops and when a wait may block the thread instead of the loop."""

from __future__ import annotations

import asyncio
import threading

from flowkit._sync import may_block, run_sync


def test_a_lone_coroutine_on_run_syncs_loop_may_block() -> None:
    """The only task on run_sync's loop may block its thread while it waits."""

    async def check() -> bool:
        return may_block()

    assert run_sync(check()) is True


def test_a_callers_own_loop_never_blocks() -> None:
    """On a loop flowkit does not own (kickoff_async in someone's app) waits stay awaits."""

    async def check() -> bool:
        return may_block()

    assert asyncio.run(check()) is False


def test_another_task_on_the_loop_forbids_blocking() -> None:
    """While another task is alive on the loop (a parallel branch, a background task),
    waits are awaited so that task keeps running; once it is done, blocking is fine."""

    async def check() -> tuple[bool, bool]:
        background = asyncio.create_task(asyncio.sleep(0.01))
        during = may_block()
        await background
        return during, may_block()

    assert run_sync(check()) == (False, True)


def test_inside_a_running_loop_run_sync_uses_its_own_thread_and_loop() -> None:
    """Called from async code, run_sync runs the coroutine on a helper thread's loop,
    which it owns: there the lone coroutine may block (its caller's loop never does)."""

    async def check() -> tuple[bool, str]:
        return may_block(), threading.current_thread().name

    async def caller() -> tuple[bool, str]:
        return run_sync(check())

    blocked, thread = asyncio.run(caller())
    assert blocked is True and thread == "flowkit-kickoff"
