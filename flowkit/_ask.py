"""``self.ask(message)``: a method asks a person for input (CrewAI's ``Flow.ask``).

With an input provider (``Flow.input_provider`` / ``Flow(input_provider=...)``) it
behaves as in CrewAI: the provider is called and blocks until it answers, ``None``
after ``timeout`` seconds or when the provider fails. Without one, a flow with durable
persistence pauses instead: the run is stored as waiting, kickoff returns an
:class:`flowkit.Interrupted` whose payload carries the question, and
``resume(run_id, answer)`` runs the method again from the state it started with, this
time with ``ask`` returning the answer. Without a provider or persistence, the console
is asked.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ._flow import CallContext, current_call
from .exceptions import FlowUsageError

if TYPE_CHECKING:
    from ._flow import Flow

__all__ = ["ConsoleProvider", "InputProvider", "InputResponse", "ask"]

log = logging.getLogger("flowkit")


@dataclass(frozen=True)
class InputResponse:
    """An answer with metadata from the provider (who answered, where, ...)."""

    text: str | None
    metadata: dict[str, Any] | None = None


@runtime_checkable
class InputProvider(Protocol):
    """Where :meth:`Flow.ask` gets its answers (CrewAI's protocol, unchanged).

    Example::

        class Canned:
            def request_input(self, message, flow, metadata=None):
                return "blue"

        class Survey(Flow):
            input_provider = Canned()

            @start()
            def colour(self):
                return self.ask("Favourite colour?")
    """

    def request_input(
        self, message: str, flow: Flow[Any], metadata: dict[str, Any] | None = None
    ) -> str | InputResponse | None:
        """Return the person's answer to ``message`` (``None``: no answer)."""
        ...


class ConsoleProvider:
    """Asks on the terminal with :func:`input` (the default without persistence)."""

    def request_input(
        self, message: str, flow: Flow[Any], metadata: dict[str, Any] | None = None
    ) -> str | None:
        try:
            return input(message)
        except EOFError:  # no terminal (stdin closed): no answer
            return None


def _call_provider(
    provider: InputProvider,
    flow: Flow[Any],
    message: str,
    timeout: float | None,
    metadata: dict[str, Any] | None,
) -> str | InputResponse | None:
    if timeout is None:
        return provider.request_input(message, flow, metadata=metadata)
    # The provider may outlive the timeout (input() cannot be interrupted): its thread
    # is left to finish on its own, and the answer it gives late is dropped.
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="flowkit-ask")
    context = contextvars.copy_context()
    future = pool.submit(context.run, provider.request_input, message, flow, metadata)
    try:
        return future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        return None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def ask(
    flow: Flow[Any], message: str, timeout: float | None, metadata: dict[str, Any] | None
) -> str | None:
    """See :meth:`Flow.ask`."""
    ctx: CallContext | None = current_call.get()
    if ctx is None or ctx.flow is not flow:
        raise FlowUsageError(
            "self.ask() was called outside a running flow method; call it from inside a "
            "@start/@listen/@router method during kickoff or resume."
        )
    provider = flow.input_provider
    if provider is None:
        run = flow._run
        if run is not None and run.journal.durable:
            answer = flow.interrupt({"ask": message, "metadata": metadata})
            return None if answer is None else str(answer)
        provider = ConsoleProvider()
    try:
        raw = _call_provider(provider, flow, message, timeout, metadata)
    except Exception:
        # As in CrewAI: a failing provider is "no answer"; the reason is in the log.
        log.exception("flowkit: input provider %r failed in ask(%r)", provider, message)
        return None
    if isinstance(raw, InputResponse):
        return raw.text
    return raw if isinstance(raw, str) else None
