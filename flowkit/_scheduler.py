""" "Method X finished with output R: what runs next?" -- pure, no I/O, no event loop.

The scheduler owns the execution position of one kickoff: which method calls are
pending, partial ``and_`` progress, which ``or_`` listeners already fired in this
cycle, and call counts.

Re-arming ``or_`` listeners follows CrewAI Flows. A *wave* is one method's completion
plus the chain of routers it sets off (a router's labels belong to the wave of the
event that triggered the router). A fired ``or_`` listener ignores its parts until
a router label reaches it from a later wave than the one it fired in, or from a chain
of routers it is part of itself (a router looping on its own label), or one of its
parts is called again from a later wave (the flow looped around it). So two labels of
one router chain fire an ``or_`` once, and every loop round fires it once. When a listener
fires, all its partial progress is cleared (an ``or_`` of ``and_``s forgets the other
``and_``'s parts). :meth:`Scheduler.snapshot` turns it into JSON-ready data that
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


@dataclass(slots=True)
class _Compiled:
    """What the scheduler needs of a graph, worked out once per graph."""

    graph: FlowGraph
    #: listener -> its compiled condition (a plain method name stays a str)
    conds: dict[str, _Node | str]
    #: the or_ listeners
    ors: frozenset[str]
    #: a conditional start declares crewai_trigger_payload (the kickoff's is kept)
    keeps_trigger_payload: bool


_COMPILED: dict[int, _Compiled] = {}


def _compiled(graph: FlowGraph) -> _Compiled:
    entry = _COMPILED.get(id(graph))
    if entry is None or entry.graph is not graph:
        conds = {
            n.name: _compile(n.condition) for n in graph.nodes.values() if n.condition is not None
        }
        ors = frozenset(
            name for name, c in conds.items() if isinstance(c, _Node) and c.kind == "or"
        )
        keeps = any(
            node.is_start and node.takes_trigger_payload and name not in graph.initial
            for name, node in graph.nodes.items()
        )
        entry = _COMPILED[id(graph)] = _Compiled(graph, conds, ors, keeps)
    return entry


@dataclass(slots=True)
class Task:
    """One pending method call."""

    id: int
    method: str
    #: the method whose completion fired this call (None for a kickoff start)
    trigger: str | None
    #: that method's return value, handed to listeners that take a parameter
    payload: Any = None
    #: the wave this call belongs to (what its labels re-arm; see the module doc)
    wave: int = 0
    #: routers of this wave that led to this call (for routers looping on a label)
    chain: tuple[str, ...] = ()


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
        compiled = _compiled(graph)
        self._conds = compiled.conds
        self._ors = compiled.ors
        self._keeps_trigger_payload = compiled.keeps_trigger_payload
        self.max_method_calls = max_method_calls
        self.pending: dict[int, Task] = {}
        self.calls: Counter[str] = Counter()
        self._and_progress: dict[str, dict[str, set[int]]] = {}
        #: or_ listener -> the wave it fired in
        self._or_fired: dict[str, int] = {}
        self._next_id = 1
        self._next_wave = 1
        #: the kickoff's trigger payload, kept for conditional starts that declare it
        self.trigger_payload: Any = None

    # -- driving -------------------------------------------------------------------

    def begin(self, trigger_payload: Any = None) -> list[Task]:
        """The calls a kickoff starts with; each carries the kickoff's trigger payload
        (CrewAI's ``crewai_trigger_payload`` input), stored with the position."""
        if self._keeps_trigger_payload:
            # a conditional start declaring it gets it too, when its label arrives
            self.trigger_payload = trigger_payload
        tasks = []
        for name in self.graph.initial:
            tasks.append(self._schedule(name, None, trigger_payload, self._new_wave(), ()))
        return tasks

    def _new_wave(self) -> int:
        wave = self._next_wave
        self._next_wave += 1
        return wave

    def complete(self, task_id: int, output: Any) -> list[Task]:
        """Record that pending call ``task_id`` returned ``output``; return new calls."""
        task = self.pending.pop(task_id)
        fired: set[str] = set()
        if not self.graph.nodes[task.method].is_router:
            wave = self._next_wave
            self._next_wave = wave + 1
            return self._dispatch(task.method, task, output, fired, wave, (), False)
        wave, chain = task.wave, (*task.chain, task.method)
        new = self._dispatch(task.method, task, output, fired, wave, chain, False)
        label = router_label(output)
        if label is not None:
            new += self._dispatch(label, task, output, fired, wave, chain, True)
        return new

    def _dispatch(
        self,
        event: str,
        source: Task,
        output: Any,
        fired: set[str],
        wave: int,
        chain: tuple[str, ...],
        label: bool,
    ) -> list[Task]:
        """The calls ``event`` (a method's completion, or with ``label`` a router's
        label) fires; ``fired`` collects the listeners fired by this completion."""
        tasks = []
        for listener in self.graph.index.get(event, ()):
            if listener == event == source.method:
                continue  # a method's own completion never triggers it (its name = a label)
            cond = self._conds[listener]
            is_or = listener in self._ors
            if is_or and listener in self._or_fired:
                fired_wave = self._or_fired[listener]
                if not (label and (fired_wave != wave or listener in chain)):
                    continue  # fired in this cycle: its other parts are ignored
                del self._or_fired[listener]
            if not (cond == event if isinstance(cond, str) else self._feed(listener, cond, event)):
                continue
            # Fired: whatever else it had seen is forgotten (CrewAI clears the events
            # a listener has seen when its condition is met).
            if self._and_progress:
                self._and_progress.pop(listener, None)
            if is_or:
                self._or_fired[listener] = wave
            if listener in fired:
                continue
            fired.add(listener)
            tasks.append(self._schedule(listener, source.method, output, wave, chain))
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

    def _schedule(
        self, method: str, trigger: str | None, payload: Any, wave: int, chain: tuple[str, ...]
    ) -> Task:
        calls = self.calls.get(method, 0) + 1  # dict.get: Counter's [] of a new key is slow
        if calls > 1:
            # Called again: the flow looped back, so the or_ listeners over this method
            # re-arm -- unless they fired in this very wave (a sibling already did).
            for listener in self.graph.index.get(method, ()):
                if self._or_fired.get(listener, wave) != wave:
                    del self._or_fired[listener]
        self.calls[method] = calls
        if calls > self.max_method_calls:
            raise MethodCallLimitError(
                f"{self.graph.flow_name}.{method} was called more than "
                f"max_method_calls={self.max_method_calls} times in one kickoff; a router "
                "loop probably never exits. Fix the loop's exit condition or pass a larger "
                "Flow(max_method_calls=...)."
            )
        task = Task(self._next_id, method, trigger, payload, wave, chain)
        self._next_id += 1
        self.pending[task.id] = task
        return task

    # -- persistence -----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready execution position (payloads are left as Python values)."""
        kept = {} if self.trigger_payload is None else {"trigger_payload": self.trigger_payload}
        return {
            "pending": [
                {
                    "id": t.id,
                    "method": t.method,
                    "trigger": t.trigger,
                    "payload": t.payload,
                    "wave": t.wave,
                    "chain": list(t.chain),
                }
                for t in self.pending.values()
            ],
            "calls": dict(self.calls),
            "and": {
                listener: {path: sorted(done) for path, done in paths.items() if done}
                for listener, paths in self._and_progress.items()
            },
            "or_fired": dict(sorted(self._or_fired.items())),
            "next_id": self._next_id,
            "next_wave": self._next_wave,
            **kept,
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
                task = Task(
                    int(item["id"]),
                    item["method"],
                    item["trigger"],
                    item["payload"],
                    int(item.get("wave", 0)),
                    tuple(str(name) for name in item.get("chain", ())),
                )
                self.pending[task.id] = task
            self.calls = Counter({str(k): int(v) for k, v in data["calls"].items()})
            self._and_progress = {
                listener: {path: set(done) for path, done in paths.items()}
                for listener, paths in data["and"].items()
            }
            or_fired = data["or_fired"]
            if isinstance(or_fired, list):  # written before waves: fired in no known wave
                or_fired = dict.fromkeys(or_fired, 0)
            self._or_fired = {str(k): int(v) for k, v in or_fired.items()}
            self._next_id = int(data["next_id"])
            self._next_wave = int(data.get("next_wave", 1))
            self.trigger_payload = data.get("trigger_payload")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CorruptCheckpointError(
                f"the execution position stored in run {run_id!r} checkpoint {seq} cannot be "
                f"read ({exc!r}); the flow definition may have changed. Start a new run or "
                "fork from an earlier checkpoint.",
                run_id=run_id,
                seq=seq,
            ) from exc
        return self
