"""``@start`` / ``@listen`` / ``@router``: attach a spec to the function, no behaviour."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from ._conditions import And, ConditionLike, Or
from .exceptions import FlowDefinitionError

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


def _attach(func: Any, spec: MethodSpec, decorator: str) -> Any:
    if not callable(func):
        raise FlowDefinitionError(f"@{decorator} must decorate a method, got {func!r}.")
    existing: MethodSpec | None = getattr(func, SPEC_ATTR, None)
    if existing is not None:
        kinds = {_name(existing), decorator}
        if kinds != {"start", "router"}:
            raise FlowDefinitionError(
                f"{getattr(func, '__qualname__', func)!r} has both @{_name(existing)} and "
                f"@{decorator}; a method takes one of @start/@listen/@router "
                "(only @start and a bare @router() combine: a start that routes)."
            )
        start_spec, router_spec = (existing, spec) if existing.kind == "start" else (spec, existing)
        if router_spec.condition is not None:
            raise FlowDefinitionError(
                f"{getattr(func, '__qualname__', func)!r}: combine @start(...) with a bare "
                "@router(); the start's condition says when it runs."
            )
        spec = MethodSpec("start", start_spec.condition, is_router=True)
    setattr(func, SPEC_ATTR, spec)
    return func


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


def start(condition: ConditionLike | None = None) -> Callable[[F], F]:
    """Mark an entry point. ``@start()`` runs at kickoff; ``@start(cond)`` runs when
    ``cond`` fires (a router label, a method, or ``or_``/``and_``).

    Example::

        class Hello(Flow):
            @start()
            def greet(self):
                return "hello"
    """
    if callable(condition) and hasattr(condition, "__code__") and not hasattr(condition, SPEC_ATTR):
        # Bare ``@start`` without parentheses: the function itself was passed.
        return _attach(condition, MethodSpec("start", None), "start")  # type: ignore[no-any-return]
    if condition is not None:
        _check_condition(condition, "start")

    def decorate(func: F) -> F:
        return _attach(func, MethodSpec("start", condition), "start")  # type: ignore[no-any-return]

    return decorate


def listen(condition: ConditionLike) -> Callable[[F], F]:
    """Run the method when ``condition`` fires; it receives the trigger's output if it
    takes a parameter.

    Example::

        @listen(greet)
        def shout(self, greeting):
            return greeting.upper()
    """
    _check_condition(condition, "listen")

    def decorate(func: F) -> F:
        return _attach(func, MethodSpec("listen", condition), "listen")  # type: ignore[no-any-return]

    return decorate


def router(condition: ConditionLike | None = None) -> Callable[[F], F]:
    """Like ``@listen``, and the return value becomes a label that triggers
    ``@listen("label")`` (``str(value)``; an Enum's ``.value``; ``None`` emits nothing).

    Example::

        @router(score)
        def decide(self):
            return "good" if self.state.score > 5 else "bad"
    """
    if condition is not None:
        _check_condition(condition, "router")

    def decorate(func: F) -> F:
        return _attach(func, MethodSpec("listen", condition, is_router=True), "router")  # type: ignore[no-any-return]

    return decorate
