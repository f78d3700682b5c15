"""Retry policies: ``Retry`` (public), which policy a method runs under, and the error
record a failed attempt or a failed run stores.

Pure: no asyncio, no I/O. The runner decides *when* to retry with :meth:`Retry.retries`
and :meth:`Retry.wait`; the waiting itself (an asyncio timer) lives in the runner.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from .exceptions import FlowConfigurationError, FlowDefinitionError, InvalidArgumentError

if TYPE_CHECKING:
    from ._flow import Flow

__all__ = [
    "MESSAGE_LIMIT",
    "TRACEBACK_LIMIT",
    "Retry",
    "cap_traceback",
    "check_retry",
    "error_record",
    "policies",
    "policy_for",
]

log = logging.getLogger("flowkit")

#: the longest exception message stored (characters; longer ones are cut)
MESSAGE_LIMIT = 2000
#: the longest traceback text stored (characters): the first and last parts are kept
TRACEBACK_LIMIT = 8000
_HEAD = 2000

RetryOn: TypeAlias = (
    "type[Exception] | tuple[type[Exception], ...] | list[type[Exception]] "
    "| Callable[[Exception], bool]"
)


@dataclass(frozen=True)
class Retry:
    """How often, and after which exceptions, a flow method is run again.

    ``attempts`` counts every run of the method, the first included (``attempts=1``: no
    retry). After a failed attempt ``n`` the next one starts ``delay * backoff ** (n - 1)``
    seconds later, at most ``max_delay`` (None: no limit), plus a random ``0..jitter``
    seconds (still at most ``max_delay``). ``on`` says which exceptions are retried: an
    exception class, a tuple of classes, or a function ``(exception) -> bool``; anything
    else fails the run at once. The wait is an asyncio timer: the event loop and parallel
    branches go on.

    Each attempt starts from the run's state without the failed attempt's changes. With
    durable persistence every failed attempt is recorded in a checkpoint before the wait,
    so a crash neither resets the count nor retries forever.

    Example::

        class Fetch(Flow[dict], retry=Retry(attempts=2)):  # the flow's default
            @start(retry=Retry(attempts=5, delay=0.5, on=(TimeoutError, ConnectionError)))
            def download(self):
                ...

            @listen(download, retry=Retry(attempts=1))  # never retried
            def parse(self):
                ...
    """

    attempts: int = 3
    _: KW_ONLY
    #: seconds before the second attempt
    delay: float = 1.0
    #: factor applied to the wait after each further failure (1: a constant wait)
    backoff: float = 2.0
    #: the longest wait, in seconds (None: no limit)
    max_delay: float | None = None
    #: up to this many seconds added at random to each wait (0: none)
    jitter: float = 0.0
    #: the exceptions retried (classes) or a predicate deciding it
    on: RetryOn = Exception

    def __post_init__(self) -> None:
        attempts = self.attempts
        if not isinstance(attempts, int) or isinstance(attempts, bool):
            raise FlowConfigurationError(
                f"Retry(attempts={attempts!r}): use an int >= 1 (every run of the method, "
                "the first included)."
            )
        if attempts < 1:
            raise InvalidArgumentError(
                f"Retry(attempts={attempts!r}): use an int >= 1 (every run of the method, "
                "the first included; 1 means no retry)."
            )
        for name in ("delay", "backoff", "max_delay", "jitter"):
            value = getattr(self, name)
            if value is None and name == "max_delay":
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise FlowConfigurationError(f"Retry({name}={value!r}): use a number.")
            if value != value or value in (float("inf"), float("-inf")):
                raise InvalidArgumentError(f"Retry({name}={value!r}): use a finite number.")
        if self.delay < 0 or self.jitter < 0:
            raise InvalidArgumentError(
                f"Retry(delay={self.delay!r}, jitter={self.jitter!r}): seconds cannot be negative."
            )
        if self.backoff < 1:
            raise InvalidArgumentError(
                f"Retry(backoff={self.backoff!r}): use a factor >= 1 (1 keeps the same delay "
                "between attempts, 2 doubles it)."
            )
        if self.max_delay is not None and self.max_delay < self.delay:
            raise InvalidArgumentError(
                f"Retry(delay={self.delay!r}, max_delay={self.max_delay!r}): max_delay is the "
                "longest wait and cannot be shorter than the first one."
            )
        object.__setattr__(self, "on", _check_on(self.on))

    def retries(self, error: BaseException, attempt: int) -> bool:
        """Whether attempt ``attempt`` (1 = the first), which raised ``error``, is
        followed by another one."""
        if attempt >= self.attempts or not isinstance(error, Exception):
            return False
        on = self.on
        if isinstance(on, tuple):
            return isinstance(error, on)
        try:
            return bool(on(error))  # type: ignore[operator]
        except Exception:
            log.exception("flowkit: the retry predicate %r raised on %r; not retrying", on, error)
            return False

    def wait(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1 = the first)."""
        cap = float("inf") if self.max_delay is None else self.max_delay
        try:
            wait = min(float(self.delay) * float(self.backoff) ** (attempt - 1), cap)
        except OverflowError:
            wait = cap
        if self.jitter:
            import random

            wait = min(wait + random.uniform(0, self.jitter), cap)
        return float(wait)


def _check_on(on: Any) -> Any:
    if isinstance(on, list):
        on = tuple(on)
    if inspect.isclass(on):
        on = (on,)
    if isinstance(on, tuple):
        bad = [item for item in on if not (inspect.isclass(item) and issubclass(item, Exception))]
        if bad or not on:
            raise FlowConfigurationError(
                f"Retry(on={on!r}): give Exception subclasses (e.g. on=(TimeoutError, "
                "ConnectionError)) or a function (exception) -> bool; "
                f"{', '.join(repr(b) for b in bad) or 'an empty tuple'} is not one."
            )
        return on
    if callable(on):
        return on
    raise FlowConfigurationError(
        f"Retry(on={on!r}): give an Exception subclass, a tuple of them, or a function "
        "(exception) -> bool."
    )


def check_retry(retry: Any, where: str) -> Retry | None:
    """``retry=`` given to a decorator or a flow class: a :class:`Retry` or None."""
    if retry is None or isinstance(retry, Retry):
        return retry
    raise FlowDefinitionError(
        f"{where}: retry={retry!r} is not a flowkit.Retry; pass e.g. "
        "retry=Retry(attempts=3, on=(TimeoutError,))."
    )


def policy_for(cls: type[Flow[Any]], method: str) -> Retry | None:
    """The retry policy ``method`` runs under: its own ``retry=``, else the flow's
    (``class MyFlow(Flow, retry=...)``); None when neither allows a second attempt."""
    return cls._retry_policies().get(method)


def policies(cls: type[Flow[Any]]) -> dict[str, Retry | None]:
    """Every method's :func:`policy_for`, worked out from the class's decorators; the
    class keeps the table (``Flow._retry_policies``) and the runner looks methods up in
    it per call."""
    from ._decorators import SPEC_ATTR

    default: Retry | None = getattr(cls, "_retry_default", None)
    table: dict[str, Retry | None] = {}
    for name in cls._graph.nodes:
        spec = getattr(getattr(cls, name, None), SPEC_ATTR, None)
        own = getattr(spec, "retry", None)
        policy = own if own is not None else default
        table[name] = policy if policy is not None and policy.attempts > 1 else None
    return table


# --- what a failure stores ----------------------------------------------------------------

_PACKAGE = str(Path(__file__).resolve().parent)


def _message(error: BaseException) -> str:
    try:
        text = str(error)
    except Exception:  # a broken __str__ must not hide the error itself
        text = f"<{type(error).__name__}: str() failed>"
    return text[:MESSAGE_LIMIT]


def cap_traceback(text: str, limit: int = TRACEBACK_LIMIT) -> str:
    """``text`` if it fits in ``limit`` characters; else its first 2,000 and its last
    characters, with a line saying how many were cut in between, ``limit`` characters
    at most in all (the line included)."""
    if len(text) <= limit:
        return text
    # The marker's length depends on the number it shows; the whole text's length is
    # an upper bound for that number, so the tail is sized for the longest marker.
    longest_marker = len(_cut_marker(len(text)))
    tail_size = limit - _HEAD - longest_marker
    cut = len(text) - _HEAD - tail_size
    return f"{text[:_HEAD]}{_cut_marker(cut)}{text[-tail_size:]}"


def _cut_marker(cut: int) -> str:
    return f"\n... [{cut} characters cut] ...\n"


def _traceback_text(error: BaseException) -> str:
    import traceback

    # Leading frames of flowkit's own runner (how the method was called) say nothing
    # about the error: the text starts at the user's method.
    tb = error.__traceback__
    while tb is not None and str(Path(tb.tb_frame.f_code.co_filename).parent) == _PACKAGE:
        tb = tb.tb_next
    lines = traceback.format_exception(type(error), error, tb)
    return cap_traceback("".join(lines))


def error_record(
    method: str, error: BaseException, attempt: int, attempts: int, *, with_traceback: bool
) -> dict[str, Any]:
    """What is stored about a failed attempt of ``method``: ``{"method", "type",
    "message", "attempt", "attempts"}`` and, ``with_traceback``, ``"traceback"``."""
    record: dict[str, Any] = {
        "method": method,
        "type": type(error).__name__,
        "message": _message(error),
        "attempt": attempt,
        "attempts": attempts,
    }
    if with_traceback:
        record["traceback"] = _traceback_text(error)
    return record
