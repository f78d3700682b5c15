"""OpenTelemetry spans for flow runs (``pip install 'flowkit[otel]'``).

:func:`instrument` subscribes to flowkit's typed events (:mod:`flowkit.events`) for
every flow in the process and turns them into spans:

* one span per run execution (a kickoff or a resume), named ``flowkit.run <Flow>``;
* one child span per method call, named ``flowkit.method <method>``.

Attributes: ``flowkit.flow``, ``flowkit.run_id``, ``flowkit.method``, ``flowkit.seq``
(the checkpoint the method started from; on the run span, the last checkpoint when the
execution ended), ``flowkit.call`` (1 for a method's first call in this execution, 2
for the second, ...), ``flowkit.resumed`` and ``flowkit.status`` (``completed``,
``interrupted`` or ``failed``). A method that raises records the exception and sets
the span's and the run span's status to ERROR; an attempt that is retried (see
:class:`flowkit.Retry`) ends its own span in ERROR, with ``flowkit.attempt`` and
``flowkit.retry_delay``, and the next attempt gets a new span.

Example::

    from opentelemetry.sdk.trace import TracerProvider
    from flowkit.otel import instrument

    uninstrument = instrument(TracerProvider())   # default: the global tracer provider
    MyFlow().kickoff()
    uninstrument()

The spans are built from events, in the thread of the flow's event loop; they are not
made the current span while the method's own code runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .events import (
    FlowEvent,
    FlowFinished,
    FlowInterrupted,
    FlowStarted,
    MethodFailed,
    MethodFinished,
    MethodRetrying,
    MethodStarted,
    subscribe,
)

try:
    from opentelemetry import trace
    from opentelemetry.trace import Span, Status, StatusCode, TracerProvider
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "flowkit.otel needs OpenTelemetry: pip install 'flowkit[otel]' (it installs "
        "opentelemetry-sdk)."
    ) from exc

__all__ = ["instrument"]

TRACER_NAME = "flowkit"


@dataclass
class _Run:
    span: Span
    #: method name -> its open spans, oldest first (a method may overlap itself)
    methods: dict[str, list[Span]] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False

    def open_count(self) -> int:
        return sum(len(spans) for spans in self.methods.values())


class _Tracer:
    def __init__(self, provider: TracerProvider | None) -> None:
        from . import __version__

        self.tracer = trace.get_tracer(TRACER_NAME, __version__, tracer_provider=provider)
        self.runs: dict[str, _Run] = {}
        self.lock = threading.Lock()

    def __call__(self, event: FlowEvent) -> None:
        with self.lock:
            if isinstance(event, FlowStarted):
                self._started(event)
            elif isinstance(event, MethodStarted):
                self._method_started(event)
            elif isinstance(event, MethodFinished):
                self._method_ended(event, None)
            elif isinstance(event, MethodFailed):
                self._method_ended(event, event.error)
            elif isinstance(event, MethodRetrying):
                self._retrying(event)
            elif isinstance(event, FlowInterrupted):
                self._interrupted(event)
            elif isinstance(event, FlowFinished):
                self._finish(event.run_id, "completed", event.seq)

    def _started(self, event: FlowStarted) -> None:
        old = self.runs.pop(event.run_id, None)
        if old is not None:  # an execution that ended without an event (Ctrl-C)
            self._close(old, "abandoned", None)
        span = self.tracer.start_span(
            f"flowkit.run {event.flow_name}",
            attributes={
                "flowkit.flow": event.flow_name,
                "flowkit.run_id": event.run_id,
                "flowkit.resumed": event.resumed,
            },
        )
        self.runs[event.run_id] = _Run(span)

    def _method_started(self, event: MethodStarted) -> None:
        run = self.runs.get(event.run_id)
        if run is None:
            return
        run.calls[event.method] = call = run.calls.get(event.method, 0) + 1
        attributes: dict[str, Any] = {
            "flowkit.flow": event.flow_name,
            "flowkit.run_id": event.run_id,
            "flowkit.method": event.method,
            "flowkit.call": call,
        }
        if event.seq is not None:
            attributes["flowkit.seq"] = event.seq
        span = self.tracer.start_span(
            f"flowkit.method {event.method}",
            context=trace.set_span_in_context(run.span),
            attributes=attributes,
        )
        run.methods.setdefault(event.method, []).append(span)

    def _method_ended(
        self, event: MethodFinished | MethodFailed, error: BaseException | None
    ) -> None:
        run = self.runs.get(event.run_id)
        if run is None:
            return
        spans = run.methods.get(event.method)
        span = spans.pop(0) if spans else None
        if span is not None:
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            span.end()
        if error is not None:
            run.span.record_exception(error)
            run.span.set_status(
                Status(StatusCode.ERROR, f"{event.method} raised {type(error).__name__}")
            )
            self._finish(event.run_id, "failed", event.seq)
        elif run.interrupted and not run.open_count():
            self._finish(event.run_id, "interrupted", event.seq)

    def _retrying(self, event: MethodRetrying) -> None:
        # The failed attempt's span ends in error; the run goes on (the next attempt
        # gets a span of its own).
        run = self.runs.get(event.run_id)
        spans = run.methods.get(event.method) if run is not None else None
        if spans:
            span = spans.pop(0)
            span.record_exception(event.error)
            span.set_attribute("flowkit.attempt", event.attempt)
            span.set_attribute("flowkit.retry_delay", event.delay)
            span.set_status(
                Status(StatusCode.ERROR, f"{type(event.error).__name__}: {event.error}")
            )
            span.end()

    def _interrupted(self, event: FlowInterrupted) -> None:
        run = self.runs.get(event.run_id)
        if run is None:
            return
        spans = run.methods.get(event.method)
        if spans:
            span = spans.pop(0)
            span.set_attribute("flowkit.interrupted", True)
            span.end()
        run.interrupted = True
        if not run.open_count():
            self._finish(event.run_id, "interrupted", event.seq)

    def _finish(self, run_id: str, status: str, seq: int | None) -> None:
        run = self.runs.pop(run_id, None)
        if run is not None:
            self._close(run, status, seq)

    @staticmethod
    def _close(run: _Run, status: str, seq: int | None) -> None:
        for spans in run.methods.values():
            for span in spans:  # still open: cancelled when a sibling failed
                span.set_attribute("flowkit.cancelled", True)
                span.end()
        run.span.set_attribute("flowkit.status", status)
        if seq is not None:
            run.span.set_attribute("flowkit.seq", seq)
        run.span.end()


def instrument(tracer_provider: TracerProvider | None = None) -> Callable[[], None]:
    """Emit OpenTelemetry spans for every flow run in this process.

    Args:
        tracer_provider: Where spans go; default: OpenTelemetry's global provider.

    Returns:
        A function that stops it. Call it when no run is executing: the spans of a
        run in flight would stay open.
    """
    return subscribe(_Tracer(tracer_provider))
