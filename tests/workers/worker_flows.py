"""The flow the Celery tests run: a parallel branch and an interrupt.

    begin -> (left | right) -> ask [interrupt] -> finish

Each method sleeps ``$FLOWKIT_TEST_STEP_SECONDS`` (so workers get killed inside
methods), then appends ``method:token`` to ``state.commits`` and writes
``RUN_ID METHOD TOKEN PID`` to ``$FLOWKIT_TEST_LOG``. A token that shows up in the stored
history was committed; a logged token that never does belongs to an execution cut off
by a kill. So "no committed method executed twice" reads: every (run, method) has
exactly one token in the run's history.
"""

from __future__ import annotations

import os
import time
import uuid

from flowkit import Flow, FlowState, and_, listen, start


class Work(FlowState):
    commits: list[str] = []
    answer: str = ""


def _mark(flow: Flow[Work], method: str) -> None:
    time.sleep(float(os.environ.get("FLOWKIT_TEST_STEP_SECONDS", "0")))
    token = uuid.uuid4().hex[:12]
    flow.state.commits.append(f"{method}:{token}")
    path = os.environ.get("FLOWKIT_TEST_LOG")
    if path:
        line = f"{flow.state.id} {method} {token} {os.getpid()}\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())  # one small O_APPEND write: lines never interleave
        finally:
            os.close(fd)


METHODS = ("begin", "left", "right", "ask", "finish")


def make_flow(name: str) -> type[Flow[Work]]:
    class Branchy(Flow[Work], name=name):
        @start()
        def begin(self) -> None:
            _mark(self, "begin")

        @listen(begin)
        def left(self) -> None:
            _mark(self, "left")

        @listen(begin)
        def right(self) -> None:
            _mark(self, "right")

        @listen(and_(left, right))
        def ask(self) -> None:
            self.state.answer = self.interrupt({"question": "ship it?"})
            _mark(self, "ask")

        @listen(ask)
        def finish(self) -> list[str]:
            _mark(self, "finish")
            return self.state.commits

    return Branchy
