"""``@start`` / ``@listen`` / ``@router``: attach a spec to the function, no behaviour."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ._conditions import And, ConditionLike, Or
from .exceptions import FlowDefinitionError

if TYPE_CHECKING:
    from ._retry import Retry

__all__ = ["SPEC_ATTR", "MethodSpec", "listen", "router", "start"]

F = TypeVar("F", bound=Callable[..., Any])
SPEC_ATTR = "__flowkit_spec__"
Kind = Literal["start", "listen", "router"]


@dataclass(frozen=True, slots=True)
class MethodSpec:
    """What a decorator says about one method: its kind and its trigger condition."""

    kind: Kind
    condition: ConditionLike | None
    is_router: bool = False
    #: the labels a router declares it returns (``@router(..., emit=[...])``)
    emit: tuple[str, ...] = ()
    #: the method's own retry policy (``retry=Retry(...)``); None: the flow's default
    retry: Retry | None = None


def _qualname(func: Any) -> str:
    return str(getattr(func, "__qualname__", func))


def _attach(func: Any, spec: MethodSpec, decorator: str) -> Any:
    if not callable(func):
        raise FlowDefinitionError(f"@{decorator} must decorate a method, got {func!r}.")
    existing: MethodSpec | None = getattr(func, SPEC_ATTR, None)
    if existing is not None:
        spec = _combine(func, existing, spec, decorator)
    setattr(func, SPEC_ATTR, spec)
    return func


def _combine(func: Any, existing: MethodSpec, spec: MethodSpec, decorator: str) -> MethodSpec:
    """Stacked decorators: a bare ``@router()`` makes a ``@start``/``@listen`` route."""
    kinds = {_name(existing), decorator}
    routers = [s for s in (existing, spec) if s.is_router and s.kind == "listen"]
    other = [s for s in (existing, spec) if not (s.is_router and s.kind == "listen")]
    if len(kinds) != 2 or len(routers) != 1 or len(other) != 1:
        raise FlowDefinitionError(
            f"{_qualname(func)!r} has both @{_name(existing)} and @{decorator}; a method "
            "takes one of @start/@listen/@router (only a bare @router() combines with "
            "@start(...) or @listen(...): a start or a listener that routes)."
        )
    router_spec, base = routers[0], other[0]
    if router_spec.condition is not None:
        raise FlowDefinitionError(
            f"{_qualname(func)!r}: combine @{_name(base)}(...) with a bare @router(); "
            f"the @{_name(base)} condition says when it runs, so @router takes none."
        )
    if router_spec.retry is not None and base.retry is not None:
        raise FlowDefinitionError(
            f"{_qualname(func)!r}: retry= is given to both @{_name(base)} and @router; "
            "give it once."
        )
    retry = base.retry if base.retry is not None else router_spec.retry
    return MethodSpec(base.kind, base.condition, is_router=True, emit=router_spec.emit, retry=retry)


def _name(spec: MethodSpec) -> str:
    if spec.kind == "start":
        return "start"
    return "router" if spec.is_router else "listen"


def _check_condition(condition: Any, decorator: str) -> None:
    if not (isinstance(condition, (str, Or, And)) or callable(condition)):
        raise FlowDefinitionError(
            f"@{decorator}({condition!r}): the condition must be a method, a method name or "
            "router label, or or_()/and_()."
        )


def _is_bare_decoration(func: Any) -> bool:
    """True when ``@start`` decorates ``func`` without parentheses.

    ``@start`` and ``@start(some_function)`` both call ``start`` with one function. In a
    class body they differ: a function being decorated is not bound to its name yet,
    while a function named as a condition was defined earlier (it is in the class
    namespace under its own name) or elsewhere (its qualified name is not this class's).
    Outside a class body there is nothing to tell them apart by: read it as bare.
    """
    if not (callable(func) and hasattr(func, "__code__")) or hasattr(func, SPEC_ATTR):
        return False
    frame = inspect.currentframe()
    caller = frame.f_back.f_back if frame is not None and frame.f_back is not None else None
    try:
        namespace = caller.f_locals if caller is not None else {}
        owner = namespace.get("__qualname__")
        if not isinstance(owner, str) or "__module__" not in namespace:
            return True  # not a class body
        name = getattr(func, "__name__", "")
        if namespace.get(name) is func:
            return False  # an existing method of this class, named as the condition
        return bool(getattr(func, "__qualname__", "") == f"{owner}.{name}")
    finally:
        del frame, caller


def _checked_retry(retry: Any, func: Any, decorator: str) -> Retry | None:
    if retry is None:
        return None
    from ._retry import check_retry

    return check_retry(retry, f"@{decorator} on {_qualname(func)!r}")


def start(
    condition: ConditionLike | None = None, *, retry: Retry | None = None
) -> Callable[[F], F]:
    """Mark an entry point. ``@start()`` runs at kickoff; ``@start(cond)`` runs when
    ``cond`` fires (a router label, a method, or ``or_``/``and_``). ``retry=`` runs the
    method again after an exception (see :class:`flowkit.Retry`).

    Example::

        class Hello(Flow):
            @start()
            def greet(self):
                return "hello"
    """
    if _is_bare_decoration(condition):
        # Bare ``@start`` without parentheses: the function itself was passed.
        return _attach(condition, MethodSpec("start", None), "start")  # type: ignore[no-any-return]
    if condition is not None:
        _check_condition(condition, "start")

    def decorate(func: F) -> F:
        spec = MethodSpec("start", condition, retry=_checked_retry(retry, func, "start"))
        return _attach(func, spec, "start")  # type: ignore[no-any-return]

    return decorate


def listen(condition: ConditionLike, *, retry: Retry | None = None) -> Callable[[F], F]:
    """Run the method when ``condition`` fires; it receives the trigger's output if it
    takes a parameter. ``retry=`` runs it again after an exception (see
    :class:`flowkit.Retry`).

    Example::

        @listen(greet)
        def shout(self, greeting):
            return greeting.upper()
    """
    _check_condition(condition, "listen")

    def decorate(func: F) -> F:
        spec = MethodSpec("listen", condition, retry=_checked_retry(retry, func, "listen"))
        return _attach(func, spec, "listen")  # type: ignore[no-any-return]

    return decorate


def router(
    condition: ConditionLike | None = None,
    *,
    emit: Sequence[str] | str | None = None,
    retry: Retry | None = None,
) -> Callable[[F], F]:
    """Like ``@listen``, and the return value becomes a label that triggers
    ``@listen("label")`` (``str(value)``; an Enum's ``.value``; ``None`` emits nothing).

    ``emit=["good", "bad"]`` declares the labels the router returns, for the drawn
    graph and the stored definition (as in CrewAI it does not restrict what it may
    return). A bare ``@router()`` stacked with ``@start(...)`` or ``@listen(...)`` makes
    that method route. ``retry=`` runs it again after an exception (see
    :class:`flowkit.Retry`).

    Example::

        @router(score, emit=["good", "bad"])
        def decide(self):
            return "good" if self.state.score > 5 else "bad"
    """
    if condition is not None:
        _check_condition(condition, "router")
    labels = _emit_labels(emit)

    def decorate(func: F) -> F:
        spec = MethodSpec(
            "listen",
            condition,
            is_router=True,
            emit=labels,
            retry=_checked_retry(retry, func, "router"),
        )
        return _attach(func, spec, "router")  # type: ignore[no-any-return]

    return decorate


def _emit_labels(emit: Sequence[str] | str | None) -> tuple[str, ...]:
    if emit is None:
        return ()
    values = [emit] if isinstance(emit, str) else list(emit)
    for value in values:
        if not isinstance(value, str):
            raise FlowDefinitionError(
                f"@router(emit={emit!r}): emit lists the labels the router returns, as "
                "strings (e.g. emit=['approved', 'rejected'])."
            )
    return tuple(dict.fromkeys(values))
