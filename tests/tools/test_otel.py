"""flowkit.otel: one span per run and per method, checked with the SDK's in-memory
exporter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from tool_flows import ApprovalFlow, OrderFlow, Research

from flowkit import Interrupted
from flowkit.otel import instrument
from flowkit.persistence import SQLiteFlowPersistence


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    stop = instrument(provider)
    yield memory
    stop()
    provider.shutdown()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteFlowPersistence]:
    backend = SQLiteFlowPersistence(tmp_path / "o.db")
    yield backend
    backend.close()


def _runs(spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith("flowkit.run ")]


def _methods(spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith("flowkit.method ")]


def test_one_span_per_run_and_per_method_call(
    exporter: InMemorySpanExporter, store: SQLiteFlowPersistence
) -> None:
    """A completed run: a run span, and a child span for every method call with the
    run id, method, call number and seq as attributes."""
    flow = Research(persistence=store)
    flow.kickoff(inputs={"topic": "owls"})
    spans = exporter.get_finished_spans()
    (run,) = _runs(spans)
    assert run.attributes is not None and run.context is not None
    assert run.attributes["flowkit.run_id"] == flow.state.id
    assert run.attributes["flowkit.status"] == "completed"
    last = store.get_run(flow.state.id).last_seq  # type: ignore[union-attr]
    assert run.attributes["flowkit.seq"] == last
    methods = _methods(spans)
    names = [s.attributes["flowkit.method"] for s in methods if s.attributes]
    assert sorted(names) == sorted(
        ["plan", "warm_up"] + ["search", "judge"] * 3 + ["refine", "retry"] * 2 + ["write"]
    )
    for span in methods:
        assert span.parent is not None and span.parent.span_id == run.context.span_id
        assert span.attributes is not None
        assert span.attributes["flowkit.run_id"] == flow.state.id
        assert isinstance(span.attributes["flowkit.seq"], int)
    searches = [s for s in methods if s.name == "flowkit.method search"]
    assert sorted(s.attributes["flowkit.call"] for s in searches if s.attributes) == [1, 2, 3]


def test_a_failing_method_records_the_error(
    exporter: InMemorySpanExporter, store: SQLiteFlowPersistence
) -> None:
    """The method span and the run span get status ERROR and the exception event."""
    with pytest.raises(ValueError):
        OrderFlow(persistence=store).kickoff()
    spans = exporter.get_finished_spans()
    (run,) = _runs(spans)
    (check,) = [s for s in _methods(spans) if s.name == "flowkit.method check"]
    assert check.status.status_code is StatusCode.ERROR
    assert [e.name for e in check.events] == ["exception"]
    assert check.events[0].attributes is not None
    assert check.events[0].attributes["exception.type"] == "ValueError"
    assert run.status.status_code is StatusCode.ERROR
    assert run.attributes is not None and run.attributes["flowkit.status"] == "failed"


def test_an_interrupted_run_ends_its_span_as_interrupted(
    exporter: InMemorySpanExporter, store: SQLiteFlowPersistence
) -> None:
    """Pausing for a human ends the run span (status attribute 'interrupted'); the
    resume is a second run span with resumed=True."""
    flow = ApprovalFlow(persistence=store)
    assert isinstance(flow.kickoff(), Interrupted)
    ApprovalFlow(persistence=store).resume(flow.state.id, "yes")
    runs = _runs(exporter.get_finished_spans())
    assert [(r.attributes or {}).get("flowkit.status") for r in runs] == [
        "interrupted",
        "completed",
    ]
    assert [(r.attributes or {}).get("flowkit.resumed") for r in runs] == [False, True]
    review = [s for s in _methods(exporter.get_finished_spans()) if "review" in s.name]
    assert (review[0].attributes or {}).get("flowkit.interrupted") is True


def test_uninstrument_stops_the_spans(store: SQLiteFlowPersistence) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    instrument(provider)()
    Research(persistence=store).kickoff()
    assert memory.get_finished_spans() == ()
