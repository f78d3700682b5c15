"""Flows for the recovery tests, built per test under a unique flow name (the PostgreSQL
test database is shared, and recovery looks at every unfinished run of a flow name).

Each step appends ``RUN_ID STEP`` to ``$FLOWKIT_TEST_LOG`` when it finishes its work, so
a test can count how often each step of each run ran. ``$FLOWKIT_TEST_BLOCK_AT`` names a
step that, instead, records ``RUN_ID`` in ``$FLOWKIT_TEST_LOG.ready`` and waits forever
(the test then kills the process, or leaves it alive on purpose).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from flowkit import Flow, FlowState, listen, start


class Steps(FlowState):
    done: list[str] = []


def _append(path: str, line: str) -> None:
    with open(path, "a") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


async def step(flow: Flow[Any], name: str) -> None:
    run_id = flow.state.id  # type: ignore[attr-defined]
    log = os.environ["FLOWKIT_TEST_LOG"]
    if os.environ.get("FLOWKIT_TEST_BLOCK_AT") == name:
        _append(log + ".ready", run_id)
        await asyncio.sleep(3600)
    flow.state.done.append(name)  # type: ignore[attr-defined]
    _append(log, f"{run_id} {name}")


def make_flows(name: str) -> tuple[type[Flow[Steps]], type[Flow[Steps]]]:
    """``(Three, Asking)``: s1 -> s2 -> s3; Asking's s2 asks for an answer first."""

    class Three(Flow[Steps], name=name):
        @start()
        async def s1(self) -> None:
            await step(self, "s1")

        @listen(s1)
        async def s2(self) -> None:
            await step(self, "s2")

        @listen(s2)
        async def s3(self) -> list[str]:
            await step(self, "s3")
            return self.state.done

    class Asking(Flow[Steps], name=name + "-asking"):
        @start()
        async def s1(self) -> None:
            await step(self, "s1")

        @listen(s1)
        async def s2(self) -> None:
            self.interrupt("ok?")
            await step(self, "s2")

    return Three, Asking


# Module-level classes for ``flowkit recover recover_flows:Three`` (name from the env).
Three, Asking = make_flows(os.environ.get("FLOWKIT_TEST_FLOW_NAME", "recoverable"))
