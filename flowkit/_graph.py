"""Build and validate a flow's event graph when the class is created (pure)."""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from ._conditions import And, ConditionLike, Or
from ._decorators import SPEC_ATTR, MethodSpec
from .exceptions import FlowDefinitionError

__all__ = [
    "TRIGGER_PAYLOAD",
    "Cond",
    "FlowGraph",
    "MethodNode",
    "build_graph",
    "describe_condition",
]

# Normalised condition: a trigger name, or ("or" | "and", parts).
Cond: TypeAlias = "str | tuple[str, tuple[Cond, ...]]"


@dataclass(frozen=True, slots=True)
class MethodNode:
    """One flow method as the scheduler and runner see it."""

    name: str
    is_start: bool
    is_router: bool
    condition: Cond | None
    is_async: bool
    takes_payload: bool
    #: labels a router declares (``@router(..., emit=[...])``); informative only
    emit: tuple[str, ...] = ()
    #: the start method declares ``crewai_trigger_payload`` (CrewAI's trigger input)
    takes_trigger_payload: bool = False


@dataclass(frozen=True)
class FlowGraph:
    """The validated event graph of one flow class."""

    flow_name: str
    nodes: Mapping[str, MethodNode]
    #: methods that run at kickoff
    initial: tuple[str, ...]
    #: trigger name -> listeners whose condition mentions it, in definition order
    index: Mapping[str, tuple[str, ...]]
    #: JSON description of the definition (stored with runs to explain a changed definition)
    definition: Mapping[str, Any] = field(repr=False)
    fingerprint: str = ""

    @property
    def all_async(self) -> bool:
        return all(node.is_async for node in self.nodes.values())


def describe_condition(cond: Cond | None) -> Any:
    """A JSON-ready form of a normalised condition."""
    if cond is None or isinstance(cond, str):
        return cond
    kind, parts = cond
    return {kind: [describe_condition(part) for part in parts]}


def _collect_methods(cls: type) -> dict[str, tuple[Callable[..., Any], MethodSpec]]:
    """Decorated methods of ``cls`` and its bases; a subclass attribute overrides."""
    found: dict[str, tuple[Callable[..., Any], MethodSpec]] = {}
    for klass in reversed(cls.__mro__):
        for name, attr in list(vars(klass).items()):
            func = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
            spec = getattr(func, SPEC_ATTR, None)
            if isinstance(spec, MethodSpec):
                found[name] = (func, spec)
            elif name in found:
                # Overridden without a decorator: the subclass removed it from the graph
                # unless it re-decorates; keep the parent's wiring on the new function,
                # which is what users overriding a step expect.
                if callable(func):
                    found[name] = (func, found[name][1])
                else:
                    del found[name]
    return found


def _functions_by_identity(cls: type) -> dict[int, str]:
    ids: dict[int, str] = {}
    for klass in cls.__mro__:
        for name, attr in list(vars(klass).items()):
            func = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
            if callable(func):
                ids.setdefault(id(func), name)
    return ids


def _normalise(
    cond: ConditionLike, owner: str, cls: type, known: Mapping[int, str], decorated: set[str]
) -> Cond:
    if isinstance(cond, str):
        return cond
    if isinstance(cond, (Or, And)):
        kind = "or" if isinstance(cond, Or) else "and"
        parts = tuple(_normalise(p, owner, cls, known, decorated) for p in cond.parts)
        return (kind, parts)
    name = known.get(id(cond))
    if name is None or name not in decorated:
        qual = getattr(cond, "__qualname__", repr(cond))
        raise FlowDefinitionError(
            f"{cls.__qualname__}.{owner} listens to {qual}, which is not a @start/@listen/"
            f"@router method of {cls.__qualname__}. Listen to a method of this flow "
            "(or to its name as a string)."
        )
    return name


def _mentions(cond: Cond) -> set[str]:
    if isinstance(cond, str):
        return {cond}
    out: set[str] = set()
    for part in cond[1]:
        out |= _mentions(part)
    return out


#: The keyword CrewAI passes a kickoff's trigger payload to start methods under.
TRIGGER_PAYLOAD = "crewai_trigger_payload"


def _parameters(func: Callable[..., Any]) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature
        return []


def _parameter_names(func: Callable[..., Any]) -> set[str]:
    return {p.name for p in _parameters(func)}


def _takes_payload(func: Callable[..., Any], cls: type, name: str) -> bool:
    params = _parameters(func)
    positional = [
        p
        for p in params[1:]
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        and p.name != TRIGGER_PAYLOAD
    ]
    required = [p for p in positional if p.default is p.empty and p.kind != p.VAR_POSITIONAL]
    if len(required) > 1:
        raise FlowDefinitionError(
            f"{cls.__qualname__}.{name} takes {len(required)} required arguments; a flow "
            "method takes at most one (the output of the method that triggered it)."
        )
    return bool(positional)


def build_graph(cls: type, flow_name: str) -> FlowGraph:
    """Collect the decorated methods of ``cls`` and validate the wiring.

    Raises:
        FlowDefinitionError: no start, a method listening to itself, or a listener on a
            method object that is not part of the flow.
    """
    methods = _collect_methods(cls)
    known = _functions_by_identity(cls)
    decorated = set(methods)
    nodes: dict[str, MethodNode] = {}
    self_listen: list[str] = []
    for name, (func, spec) in methods.items():
        cond = None
        if spec.kind != "start" and spec.condition is None:
            raise FlowDefinitionError(
                f"{cls.__qualname__}.{name}: @router() needs a condition (what it listens "
                "to), unless it is stacked with @start()."
            )
        if spec.condition is not None:
            cond = _normalise(spec.condition, name, cls, known, decorated)
            if name in _mentions(cond):
                self_listen.append(name)
        nodes[name] = MethodNode(
            name=name,
            is_start=spec.kind == "start",
            is_router=spec.is_router,
            condition=cond,
            is_async=inspect.iscoroutinefunction(func),
            takes_payload=_takes_payload(func, cls, name),
            emit=spec.emit,
            takes_trigger_payload=TRIGGER_PAYLOAD in _parameter_names(func),
        )
    if self_listen and not any(n.is_router for n in nodes.values()):
        # A method's own completion never triggers it; its own name in its condition
        # can only be a router label -- and this flow has no router.
        raise FlowDefinitionError(
            f"{cls.__qualname__}.{self_listen[0]} listens to itself; a method is never "
            "triggered by its own completion, and with no @router in the flow its own "
            "name can never fire. Listen to another method, or loop through a @router "
            "label."
        )
    starts = [n for n in nodes.values() if n.is_start]
    if not starts:
        raise FlowDefinitionError(
            f"{cls.__qualname__} has no @start() method; add one so kickoff knows where to "
            "begin (or pass abstract=True for a base class meant to be subclassed)."
        )
    unconditional = tuple(n.name for n in starts if n.condition is None)
    initial = unconditional or tuple(n.name for n in starts)
    index: dict[str, list[str]] = {}
    for node in nodes.values():
        if node.condition is None:
            continue
        for trigger in sorted(_mentions(node.condition)):
            index.setdefault(trigger, []).append(node.name)
    definition = {
        "flow": flow_name,
        "methods": {
            n.name: {
                "start": n.is_start,
                "router": n.is_router,
                "condition": describe_condition(n.condition),
                # only when declared: definitions stored before emit= keep their
                # fingerprint
                **({"emit": list(n.emit)} if n.emit else {}),
            }
            for n in sorted(nodes.values(), key=lambda n: n.name)
        },
    }
    digest = hashlib.sha256(
        json.dumps(definition, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:16]
    return FlowGraph(
        flow_name=flow_name,
        nodes=nodes,
        initial=initial,
        index={k: tuple(v) for k, v in index.items()},
        definition=definition,
        fingerprint=digest,
    )


def diff_definitions(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two stored definitions."""
    old_m: Mapping[str, Any] = old.get("methods", {})
    new_m: Mapping[str, Any] = new.get("methods", {})
    changes = [f"method {n!r} was removed" for n in sorted(set(old_m) - set(new_m))]
    changes += [f"method {n!r} was added" for n in sorted(set(new_m) - set(old_m))]
    for name in sorted(set(old_m) & set(new_m)):
        if old_m[name] != new_m[name]:
            changes.append(f"method {name!r} changed from {old_m[name]} to {new_m[name]}")
    if old.get("flow") != new.get("flow"):
        changes.append(f"flow name changed from {old.get('flow')!r} to {new.get('flow')!r}")
    return changes
