"""CrewAI's events, streams and ask() as flowkit provides them, through the public API.

Each test states the CrewAI 1.15.30 behaviour it matches (observed in a scratch venv),
or the documented difference it pins.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from typing import Any

import pytest

from flowkit import Flow, InputResponse, Interrupted, listen, persist, start
from flowkit.events import (
    FlowEvent,
    FlowFinished,
    FlowResult,
    FlowStarted,
    MethodFinished,
    MethodStarted,
)
from flowkit.exceptions import FlowUsageError
from flowkit.persistence import InMemoryFlowPersistence

# -- events ------------------------------------------------------------------------------


class Two(Flow[dict]):
    @start()
    def first(self) -> int:
        self.state["seen"] = 1
        return 1

    @listen(first)
    def second(self, value: int) -> int:
        return value + 1


def test_flow_started_inputs_is_none_without_inputs() -> None:
    """CrewAI's FlowStartedEvent.inputs is None when kickoff got no inputs."""
    events: list[FlowEvent] = []
    flow = Two()
    flow.subscribe(events.append, FlowStarted)
    flow.kickoff()
    flow.kickoff(inputs={"x": 1})
    assert [e.inputs for e in events if isinstance(e, FlowStarted)] == [None, {"x": 1}]


def test_method_events_carry_params_and_a_state_copy() -> None:
    """CrewAI: method started has params ({"_0": value}) and the state; method finished
    has the state after the method."""
    events: list[FlowEvent] = []
    flow = Two()
    flow.subscribe(events.append, MethodStarted, MethodFinished)
    flow.kickoff()
    started = [e for e in events if isinstance(e, MethodStarted)]
    finished = [e for e in events if isinstance(e, MethodFinished)]
    assert [e.params for e in started] == [{}, {"_0": 1}]
    assert "seen" not in started[0].state and started[1].state["seen"] == 1
    assert finished[0].state["seen"] == 1
    flow.state["seen"] = 99
    assert finished[0].state["seen"] == 1  # a copy, not the live state


def test_a_raising_handler_is_logged_and_the_run_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """CrewAI logs a handler error and continues the flow; so does flowkit."""

    def broken(event: FlowEvent) -> None:
        raise RuntimeError("handler broke")

    flow = Two()
    flow.subscribe(broken, MethodStarted)
    with caplog.at_level(logging.ERROR, logger="flowkit"):
        assert flow.kickoff() == 2
    assert "handler broke" in caplog.text


# -- streaming ---------------------------------------------------------------------------


def test_stream_events_yields_the_run_then_the_result() -> None:
    """stream_events() yields typed events as the run goes, ending with FlowResult."""
    kinds = []
    last: FlowEvent | None = None
    for event in Two().stream_events(inputs={"x": 1}):
        kinds.append(type(event).__name__)
        last = event
    assert kinds == [
        "FlowStarted",
        "MethodStarted",
        "MethodFinished",
        "MethodStarted",
        "MethodFinished",
        "FlowFinished",
        "FlowResult",
    ]
    assert isinstance(last, FlowResult) and last.result == 2


def test_astream_yields_the_same_events_in_async_code() -> None:
    """astream() is the async iterator form."""

    async def collect() -> list[FlowEvent]:
        return [event async for event in Two().astream()]

    events = asyncio.run(collect())
    assert isinstance(events[-2], FlowFinished) and events[-2].output == 2
    assert isinstance(events[-1], FlowResult) and events[-1].result == 2


def test_a_stream_raises_the_flow_error_after_the_events_before_it() -> None:
    """A failing method: its events arrive, then iteration raises its exception."""

    class Fails(Flow):
        @start()
        def boom(self) -> None:
            raise ValueError("bad input")

    seen = []
    with pytest.raises(ValueError, match="bad input"):
        for event in Fails().stream_events():
            seen.append(type(event).__name__)
    assert seen[:2] == ["FlowStarted", "MethodStarted"]


def test_stream_ends_with_interrupted_result() -> None:
    """An interrupt ends the stream: FlowInterrupted, then FlowResult(Interrupted)."""

    @persist(InMemoryFlowPersistence())
    class Review(Flow):
        @start()
        def ask_human(self) -> Any:
            return self.interrupt("ok?")

    events = list(Review().stream_events())
    assert type(events[-2]).__name__ == "FlowInterrupted"
    assert isinstance(events[-1], FlowResult) and isinstance(events[-1].result, Interrupted)


def test_stream_events_inside_an_event_loop_points_to_astream() -> None:
    """The sync iterator inside async code is a clear error naming astream()."""

    async def misuse() -> None:
        Two().stream_events()

    with pytest.raises(FlowUsageError, match="astream"):
        asyncio.run(misuse())


# -- ask ---------------------------------------------------------------------------------


class Canned:
    def __init__(self, answer: str | InputResponse | None) -> None:
        self.answer = answer
        self.asked: list[tuple[str, Any]] = []

    def request_input(
        self, message: str, flow: Flow[Any], metadata: dict[str, Any] | None = None
    ) -> str | InputResponse | None:
        self.asked.append((message, metadata))
        return self.answer


class Survey(Flow[dict]):
    @start()
    def colour(self) -> str | None:
        self.state["asked"] = self.state.get("asked", 0) + 1
        return self.ask("Favourite colour?", metadata={"channel": "#team"})


def test_ask_uses_the_input_provider() -> None:
    """CrewAI: ask() calls input_provider.request_input(message, flow, metadata)."""
    provider = Canned("blue")
    assert Survey(input_provider=provider).kickoff() == "blue"
    assert provider.asked == [("Favourite colour?", {"channel": "#team"})]


def test_ask_returns_the_text_of_an_input_response() -> None:
    """CrewAI: a provider may answer with InputResponse(text, metadata)."""
    provider = Canned(InputResponse("green", {"by": "ana"}))
    assert Survey(input_provider=provider).kickoff() == "green"


def test_ask_returns_none_when_the_provider_times_out() -> None:
    """CrewAI: ask(..., timeout=s) returns None when no answer came in time."""
    release = threading.Event()

    class Slow:
        def request_input(
            self, message: str, flow: Flow[Any], metadata: dict[str, Any] | None = None
        ) -> str:
            release.wait(30)
            return "late"

    class Timed(Flow):
        input_provider = Slow()

        @start()
        def wait(self) -> str | None:
            return self.ask("quick?", timeout=0.2)

    try:
        assert Timed().kickoff() is None
    finally:
        release.set()


def test_ask_without_provider_or_persistence_reads_the_console(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CrewAI's default provider is the console."""
    monkeypatch.setattr("sys.stdin", io.StringIO("red\n"))
    assert Survey().kickoff() == "red"


def test_durable_ask_pauses_and_resume_answers_it() -> None:
    """With persistence and no provider, ask() stores the run as waiting, kickoff returns
    Interrupted carrying the question, and resume(run_id, answer) makes ask return it;
    the method re-runs from its starting state (its change before ask counts once)."""
    backend = InMemoryFlowPersistence()
    paused = Survey(persistence=backend).kickoff()
    assert isinstance(paused, Interrupted)
    assert paused.payload == {"ask": "Favourite colour?", "metadata": {"channel": "#team"}}
    run = backend.get_run(paused.run_id)
    assert run is not None and run.status == "interrupted"
    resumed = Survey(persistence=backend)
    assert resumed.resume(paused.run_id, "teal") == "teal"
    assert resumed.state["asked"] == 1


def test_ask_outside_a_running_method_is_an_error() -> None:
    """ask() needs a running method, like interrupt()."""
    with pytest.raises(FlowUsageError, match="ask"):
        Survey().ask("now?")


def test_stopping_a_stream_early_cancels_the_run() -> None:
    """Leaving the loop early stops the run: methods after that point never start."""
    ran: list[str] = []

    class Slow(Flow[dict]):
        @start()
        async def first(self) -> None:
            ran.append("first")
            await asyncio.sleep(0.05)

        @listen(first)
        def second(self) -> None:
            ran.append("second")

    stream = Slow().stream_events()
    for event in stream:
        if isinstance(event, MethodStarted):
            break
    stream.close()  # what a for loop's owner does when it drops the iterator
    assert ran == ["first"]
