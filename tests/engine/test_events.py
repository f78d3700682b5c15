"""Typed events (SPEC 2): silent by default, subscribable per flow and globally."""

from __future__ import annotations

import pytest

from flowkit import Flow, listen, start
from flowkit.events import (
    FlowEvent,
    FlowFinished,
    FlowStarted,
    MethodFailed,
    MethodFinished,
    MethodStarted,
    subscribe,
)


class Two(Flow):  # type: ignore[type-arg]
    @start()
    def a(self) -> int:
        return 1

    @listen(a)
    def b(self, v: int) -> int:
        return v + 1


def test_flow_is_silent_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    """A kickoff prints nothing unless asked."""
    Two().kickoff()
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_subscribed_handler_sees_typed_events_in_order() -> None:
    """A flow's subscriber receives started/method/finished events with data."""
    events: list[FlowEvent] = []
    flow = Two()
    flow.subscribe(events.append)
    flow.kickoff(inputs={"x": 1})
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "FlowStarted",
        "MethodStarted",
        "MethodFinished",
        "MethodStarted",
        "MethodFinished",
        "FlowFinished",
    ]
    assert isinstance(events[0], FlowStarted) and events[0].inputs == {"x": 1}
    finished = [e for e in events if isinstance(e, MethodFinished)]
    assert [(e.method, e.output) for e in finished] == [("a", 1), ("b", 2)]
    assert isinstance(events[-1], FlowFinished) and events[-1].output == 2
    assert all(e.run_id == flow.state["id"] for e in events)


def test_type_filter_and_unsubscribe() -> None:
    """Filtering by type works and the returned function unsubscribes."""
    seen: list[FlowEvent] = []
    flow = Two()
    stop = flow.subscribe(seen.append, MethodStarted)
    flow.kickoff()
    assert [e.method for e in seen if isinstance(e, MethodStarted)] == ["a", "b"]
    assert all(isinstance(e, MethodStarted) for e in seen)
    stop()
    flow.kickoff()
    assert len(seen) == 2


def test_global_subscription_and_failure_event() -> None:
    """flowkit.events.subscribe sees every flow; a raising method emits MethodFailed."""

    class Fails(Flow):  # type: ignore[type-arg]
        @start()
        def a(self) -> None:
            raise ValueError("no")

    seen: list[FlowEvent] = []
    stop = subscribe(seen.append, MethodFailed)
    try:
        with pytest.raises(ValueError):
            Fails().kickoff()
    finally:
        stop()
    assert len(seen) == 1
    failed = seen[0]
    assert isinstance(failed, MethodFailed) and failed.method == "a"
    assert isinstance(failed.error, ValueError)
