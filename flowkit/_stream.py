"""``stream_events`` / ``astream``: a kickoff seen as a stream of its events.

The stream subscribes to the flow's own events for the duration of one kickoff and
yields them as they are emitted, then a :class:`FlowResult` with what kickoff returned.
An exception from the flow is raised by the iterator after the events before it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Mapping
from typing import TYPE_CHECKING, Any

from .events import FlowEvent, FlowResult
from .exceptions import FlowUsageError

if TYPE_CHECKING:
    from ._flow import Flow

__all__ = ["stream_async", "stream_sync"]


async def stream_async(
    flow: Flow[Any], inputs: Mapping[str, Any] | None, restore_from_state_id: str | None
) -> AsyncGenerator[FlowEvent, None]:
    queue: asyncio.Queue[FlowEvent] = asyncio.Queue()
    # handlers run on the loop that runs the flow: this one
    unsubscribe = flow.subscribe(queue.put_nowait)
    run = asyncio.ensure_future(
        flow.kickoff_async(inputs, restore_from_state_id=restore_from_state_id)
    )
    try:
        while not run.done():
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, run}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
            else:
                getter.cancel()
        while not queue.empty():
            yield queue.get_nowait()
        result = run.result()  # the flow's exception, if it raised
        yield FlowResult(flow_name=flow._graph.flow_name, run_id=flow.flow_id, result=result)
    finally:
        unsubscribe()
        if not run.done():  # the caller stopped iterating: stop the run
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)


def stream_sync(
    flow: Flow[Any], inputs: Mapping[str, Any] | None, restore_from_state_id: str | None
) -> Generator[FlowEvent, None, None]:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise FlowUsageError(
            f"{type(flow).__qualname__}.stream_events() was called inside a running event "
            "loop; use `async for event in flow.astream(...)` there."
        )
    return _drive(stream_async(flow, inputs, restore_from_state_id))


async def _next(events: AsyncIterator[FlowEvent]) -> FlowEvent | None:
    try:
        return await events.__anext__()
    except StopAsyncIteration:
        return None


async def _close(events: AsyncGenerator[FlowEvent, None]) -> None:
    await events.aclose()


def _drive(events: AsyncGenerator[FlowEvent, None]) -> Generator[FlowEvent, None, None]:
    # Each step runs this thread's flowkit loop until the next event: the flow advances
    # while the caller asks for events, on one loop, with no extra thread.
    from ._concurrency import run_sync

    try:
        while (event := run_sync(_next(events))) is not None:
            yield event
    finally:
        run_sync(_close(events))
