"""The flow the Celery tests run: a parallel branch and an interrupt.

    begin -> (left | right) -> ask [interrupt] -> finish

Each method writes ``RUN_ID METHOD STARTED_AT PID`` to ``$FLOWKIT_TEST_LOG`` when it
starts, then sleeps ``$FLOWKIT_TEST_STEP_SECONDS`` (so workers get killed inside
methods). The sequential methods also append their name to ``state.commits``. The
parallel branches write nothing to the state: the engine documents that a checkpoint
written when one branch finishes holds what a still-running sibling already wrote
(docs/durable-runs.md), and this flow tests Celery's redelivery, not that.

"No committed method executed twice" then reads: each (run, method) has one committing
checkpoint, and no execution of it started after that checkpoint was written.
"""

from __future__ import annotations

import os
import time

from flowkit import Flow, FlowState, and_, listen, start


class Work(FlowState):
    commits: list[str] = []
    answer: str = ""


def _mark(flow: Flow[Work], method: str, *, write_state: bool = True) -> None:
    path = os.environ.get("FLOWKIT_TEST_LOG")
    if path:
        line = f"{flow.state.id} {method} {time.time():.6f} {os.getpid()}\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())  # one small O_APPEND write: lines never interleave
        finally:
            os.close(fd)
    time.sleep(float(os.environ.get("FLOWKIT_TEST_STEP_SECONDS", "0")))
    if write_state:
        flow.state.commits.append(method)


METHODS = ("begin", "left", "right", "ask", "finish")
SEQUENTIAL = ("begin", "ask", "finish")


def make_flow(name: str) -> type[Flow[Work]]:
    class Branchy(Flow[Work], name=name):
        @start()
        def begin(self) -> None:
            _mark(self, "begin")

        @listen(begin)
        def left(self) -> None:
            _mark(self, "left", write_state=False)

        @listen(begin)
        def right(self) -> None:
            _mark(self, "right", write_state=False)

        @listen(and_(left, right))
        def ask(self) -> None:
            self.state.answer = self.interrupt({"question": "ship it?"})
            _mark(self, "ask")

        @listen(ask)
        def finish(self) -> list[str]:
            _mark(self, "finish")
            return self.state.commits

    return Branchy
