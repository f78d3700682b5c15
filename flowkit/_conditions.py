"""``or_`` / ``and_``: small frozen trees that say when a listener fires."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from .exceptions import FlowDefinitionError

__all__ = ["And", "ConditionLike", "Or", "and_", "or_"]


@dataclass(frozen=True, slots=True)
class Or:
    """Fires when any of its parts fires."""

    parts: tuple[ConditionLike, ...]


@dataclass(frozen=True, slots=True)
class And:
    """Fires once every part has fired since its last firing, then resets."""

    parts: tuple[ConditionLike, ...]


# A method object, a method name / router label, or a nested or_/and_.
ConditionLike: TypeAlias = "str | Callable[..., Any] | Or | And"


def _check_parts(kind: str, parts: tuple[Any, ...]) -> tuple[ConditionLike, ...]:
    if not parts:
        raise FlowDefinitionError(f"{kind}() needs at least one condition, e.g. {kind}('a', 'b').")
    for part in parts:
        if not (isinstance(part, (str, Or, And)) or callable(part)):
            raise FlowDefinitionError(
                f"{kind}() got {part!r}; pass method objects, method names or router labels, "
                "or nested or_()/and_()."
            )
    return parts


def or_(*conditions: ConditionLike) -> Or:
    """Fire a listener when any of ``conditions`` fires.

    Example::

        @listen(or_(fetch_a, fetch_b))
        def first_result(self, result): ...
    """
    return Or(_check_parts("or_", conditions))


def and_(*conditions: ConditionLike) -> And:
    """Fire a listener once all of ``conditions`` have fired.

    Example::

        @listen(and_(fetch_a, fetch_b))
        def join(self): ...
    """
    return And(_check_parts("and_", conditions))
