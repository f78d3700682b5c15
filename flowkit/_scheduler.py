""" "Method X finished with output R: what runs next?" -- pure, no I/O, no event loop.

The scheduler owns the execution position of one kickoff: which method calls are
pending, partial ``and_`` progress, which ``or_`` listeners already fired in this
cycle, and call counts. :meth:`Scheduler.snapshot` turns it into JSON-ready data that
is stored with every checkpoint; :meth:`Scheduler.restore` rebuilds it, which is how an
interrupted or crashed run continues where it stopped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ._graph import Cond, FlowGraph
from .exceptions import CorruptCheckpointError, MethodCallLimitError

__all__ = ["Scheduler", "Task", "router_label"]


@dataclass(slots=True)
class _Node:
    """A compiled or_/and_ node: which direct parts react to which event, so firing
    costs what the event touches, not the size of the condition (an and_ of 50)."""

    kind: str
    size: int
    path: str
    leaves: dict[str, list[int]]
    nested: list[tuple[int, _Node]]


def _compile(cond: Cond, path: str = "") -> _Node | str:
    if isinstance(cond, str):
        return cond
    kind, parts = cond
    node = _Node(kind, len(parts), path, {}, [])
    for i, part in enumerate(parts):
        if isinstance(part, str):
            node.leaves.setdefault(part, []).append(i)
        else:
            child = _compile(part, f"{path}.{i}")
            assert isinstance(child, _Node)
            node.nested.append((i, child))
    return node


_COMPILED: dict[int, tuple[FlowGraph, dict[str, _Node | str]]] = {}


def _compiled(graph: FlowGraph) -> dict[str, _Node | str]:
    entry = _COMPILED.get(id(graph))
    if entry is None or entry[0] is not graph:
        conds = {
            n.name: _compile(n.condition) for n in graph.nodes.values() if n.condition is not None
        }
        entry = _COMPILED[id(graph)] = (graph, conds)
    return entry[1]


@dataclass(slots=True)
class Task:
    """One pending method call."""

    id: int
    method: str
    #: the method whose completion fired this call (None for a kickoff start)
    trigger: str | None
    #: that method's return value, handed to listeners that take a parameter
    payload: Any = None


def router_label(value: Any) -> str | None:
    """The label a router's return value emits: ``None`` -> nothing, Enum -> ``.value``."""
    if value is None:
        return None
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


class Scheduler:
    """Decides which methods run, from completions fed to it in order."""

    def __init__(self, graph: FlowGraph, *, max_method_calls: int = 100) -> None:
        self.graph = graph
        self._conds = _compiled(graph)
        self.max_method_calls = max_method_calls
        self.pending: dict[int, Task] = {}
        self.calls: Counter[str] = Counter()
        self._and_progress: dict[str, dict[str, set[int]]] = {}
        self._or_fired: set[str] = set()
        self._next_id = 1

    # -- driving -------------------------------------------------------------------

    def begin(self) -> list[Task]:
        """The calls a kickoff starts with."""
        return [self._schedule(name, None, None) for name in self.graph.initial]

    def complete(self, task_id: int, output: Any) -> list[Task]:
        """Record that pending call ``task_id`` returned ``output``; return new calls."""
        task = self.pending.pop(task_id)
        node = self.graph.nodes[task.method]
        new: list[Task] = []
        fired: set[str] = set()
        new += self._dispatch(task.method, task.method, output, fired)
        if node.is_router:
            label = router_label(output)
            if label is not None:
                # A router label starts a new cycle: or_ listeners may fire again.
                self._or_fired.clear()
                new += self._dispatch(label, task.method, output, fired)
        return new

    def _dispatch(self, event: str, source: str, output: Any, fired: set[str]) -> list[Task]:
        tasks = []
        for listener in self.graph.index.get(event, ()):
            if listener == event == source:
                continue  # a method's own completion never triggers it (its name = a label)
            cond = self._conds[listener]
            if not (cond == event if isinstance(cond, str) else self._feed(listener, cond, event)):
                continue
            if not isinstance(cond, str) and cond.kind == "or":
                if listener in self._or_fired:
                    continue
                self._or_fired.add(listener)
            if listener in fired:
                continue
            fired.add(listener)
            tasks.append(self._schedule(listener, source, output))
        return tasks

    def _feed(self, listener: str, node: _Node, event: str) -> bool:
        hits: Sequence[int] = node.leaves.get(event, ())
        if node.nested:
            # every nested part is fed, so and_ progress below updates even when an
            # or_ above has already fired
            nested = [i for i, child in node.nested if self._feed(listener, child, event)]
            hits = [*hits, *nested]
        if node.kind == "or":
            return bool(hits)
        if not hits:
            return False
        progress = self._and_progress.setdefault(listener, {}).setdefault(node.path, set())
        progress.update(hits)
        if len(progress) == node.size:
            progress.clear()
            return True
        return False

    def _schedule(self, method: str, trigger: str | None, payload: Any) -> Task:
        self.calls[method] += 1
        if self.calls[method] > self.max_method_calls:
            raise MethodCallLimitError(
                f"{self.graph.flow_name}.{method} was called more than "
                f"max_method_calls={self.max_method_calls} times in one kickoff; a router "
                "loop probably never exits. Fix the loop's exit condition or pass a larger "
                "Flow(max_method_calls=...)."
            )
        task = Task(self._next_id, method, trigger, payload)
        self._next_id += 1
        self.pending[task.id] = task
        return task

    # -- persistence -----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready execution position (payloads are left as Python values)."""
        return {
            "pending": [
                {"id": t.id, "method": t.method, "trigger": t.trigger, "payload": t.payload}
                for t in self.pending.values()
            ],
            "calls": dict(self.calls),
            "and": {
                listener: {path: sorted(done) for path, done in paths.items() if done}
                for listener, paths in self._and_progress.items()
            },
            "or_fired": sorted(self._or_fired),
            "next_id": self._next_id,
        }

    @classmethod
    def restore(
        cls,
        graph: FlowGraph,
        data: dict[str, Any],
        *,
        max_method_calls: int = 100,
        run_id: str = "?",
        seq: int | None = None,
    ) -> Scheduler:
        """Rebuild a scheduler from :meth:`snapshot` output."""
        self = cls(graph, max_method_calls=max_method_calls)
        try:
            for item in data["pending"]:
                if item["method"] not in graph.nodes:
                    raise KeyError(item["method"])
                task = Task(int(item["id"]), item["method"], item["trigger"], item["payload"])
                self.pending[task.id] = task
            self.calls = Counter({str(k): int(v) for k, v in data["calls"].items()})
            self._and_progress = {
                listener: {path: set(done) for path, done in paths.items()}
                for listener, paths in data["and"].items()
            }
            self._or_fired = set(data["or_fired"])
            self._next_id = int(data["next_id"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CorruptCheckpointError(
                f"the execution position stored in run {run_id!r} checkpoint {seq} cannot be "
                f"read ({exc!r}); the flow definition may have changed. Start a new run or "
                "fork from an earlier checkpoint.",
                run_id=run_id,
                seq=seq,
            ) from exc
        return self
