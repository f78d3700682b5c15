"""Engine overhead: flowkit kickoff vs LangGraph invoke vs a plain-Python loop.

Cases (no persistence anywhere):

* ``linear10-sync``   10 sync steps in a chain, each ``state.counter += 1``;
  ``Flow().kickoff()`` vs ``graph.invoke`` of the same 10-node StateGraph.
* ``linear10-async``  the same with ``async def`` steps; ``kickoff_async`` vs ``ainvoke``.
* ``fanout50-sync``   one start, 50 listeners of it, one ``and_`` of all 50; LangGraph:
  50 parallel nodes after a start node, joined by a node whose predecessors are all 50
  (the state key has an ``operator.add`` reducer).
* ``fanout50-async``  the same with ``async def`` listeners (information only).
* ``import``          ``import flowkit`` vs ``from pydantic import BaseModel`` alone vs
  ``import langgraph.graph``, each timed inside a fresh interpreter.

Each flowkit kickoff includes creating the flow object (its state); each LangGraph call
starts from a fresh input dict on a graph compiled once. The plain-Python baseline runs
the same step functions over the same state model, so ``(flowkit - plain) / steps`` is
flowkit's per-step cost.

Run: ``python bench/engine.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import asyncio
import operator
import os
import subprocess
import sys
import types
from statistics import median
from typing import Annotated, Any, TypedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import Row, emit, measure, measure_async, peer_version

from flowkit import Flow, FlowState, and_, listen, start

STEPS = 10
FANOUT = 50
PEER = "langgraph"


# -- flowkit flows --------------------------------------------------------------------


class Counter(FlowState):
    counter: int = 0


class Hits(FlowState):
    hits: list[int] = []


def _linear_flow(is_async: bool) -> type[Flow[Counter]]:
    def make(i: int) -> Any:
        if is_async:

            async def step(self: Any) -> int:
                self.state.counter += 1
                return self.state.counter
        else:

            def step(self: Any) -> int:
                self.state.counter += 1
                return self.state.counter

        step.__name__ = step.__qualname__ = f"s{i}"
        return start()(step) if i == 0 else listen(f"s{i - 1}")(step)

    methods = {f"s{i}": make(i) for i in range(STEPS)}
    name = f"Linear{STEPS}{'Async' if is_async else 'Sync'}"
    return types.new_class(name, (Flow[Counter],), {}, lambda ns: ns.update(methods))


def _fanout_flow(is_async: bool) -> type[Flow[Hits]]:
    def root(self: Any) -> None:
        return None

    def make(i: int) -> Any:
        if is_async:

            async def work(self: Any) -> int:
                self.state.hits.append(i)
                return i
        else:

            def work(self: Any) -> int:
                self.state.hits.append(i)
                return i

        work.__name__ = work.__qualname__ = f"w{i}"
        return listen("root")(work)

    workers = {f"w{i}": make(i) for i in range(FANOUT)}

    def join(self: Any) -> int:
        return len(self.state.hits)

    methods: dict[str, Any] = {"root": start()(root), **workers}
    methods["join"] = listen(and_(*workers))(join)
    name = f"Fanout{FANOUT}{'Async' if is_async else 'Sync'}"
    return types.new_class(name, (Flow[Hits],), {}, lambda ns: ns.update(methods))


# -- LangGraph graphs ---------------------------------------------------------------


class LGCounter(TypedDict):
    counter: int


class LGHits(TypedDict):
    hits: Annotated[int, operator.add]


def _lg_linear(is_async: bool) -> Any:
    from langgraph.graph import END, START, StateGraph

    builder = StateGraph(LGCounter)
    for i in range(STEPS):
        if is_async:

            async def node(state: LGCounter) -> dict[str, int]:
                return {"counter": state["counter"] + 1}
        else:

            def node(state: LGCounter) -> dict[str, int]:
                return {"counter": state["counter"] + 1}

        builder.add_node(f"s{i}", node)
        builder.add_edge(START if i == 0 else f"s{i - 1}", f"s{i}")
    builder.add_edge(f"s{STEPS - 1}", END)
    return builder.compile()


def _lg_fanout(is_async: bool) -> Any:
    from langgraph.graph import END, START, StateGraph

    builder = StateGraph(LGHits)
    builder.add_node("root", lambda state: {"hits": 0})
    builder.add_edge(START, "root")
    names = [f"w{i}" for i in range(FANOUT)]
    for name in names:
        if is_async:

            async def node(state: LGHits) -> dict[str, int]:
                return {"hits": 1}
        else:

            def node(state: LGHits) -> dict[str, int]:
                return {"hits": 1}

        builder.add_node(name, node)
        builder.add_edge("root", name)
    builder.add_node("join", lambda state: {"hits": 0})
    builder.add_edge(names, "join")
    builder.add_edge("join", END)
    return builder.compile()


# -- cases ----------------------------------------------------------------------------


def _plain_linear() -> Any:
    def step(state: Counter) -> int:
        state.counter += 1
        return state.counter

    steps = [step] * STEPS

    def run() -> int:
        state = Counter()
        out = 0
        for f in steps:
            out = f(state)
        return out

    return run


def _plain_linear_async() -> Any:
    async def step(state: Counter) -> int:
        state.counter += 1
        return state.counter

    steps = [step] * STEPS

    async def run() -> int:
        state = Counter()
        out = 0
        for f in steps:
            out = await f(state)
        return out

    return run


def _plain_fanout() -> Any:
    def work(state: Hits, i: int) -> int:
        state.hits.append(i)
        return i

    def run() -> int:
        state = Hits()
        for i in range(FANOUT):
            work(state, i)
        return len(state.hits)

    return run


def _rows_for(
    name: str,
    t: dict[str, float],
    steps: int,
    target: float | None,
    note: str = "",
    cpu: dict[str, float] | None = None,
) -> Row:
    fk, plain = t["flowkit"], t["plain"]
    extra = {
        "plain_ns": plain,
        "flowkit_per_step_ns": (fk - plain) / steps,
        "flowkit_vs_plain": fk / plain,
    }
    if "peer" in t:
        extra["peer_per_step_ns"] = (t["peer"] - plain) / steps
    row = Row(name, fk, t.get("peer"), PEER if "peer" in t else "", target, note, extra)
    per = f"flowkit {extra['flowkit_per_step_ns'] / 1e3:.1f} us/step"
    if "peer" in t:
        per += f", {PEER} {extra['peer_per_step_ns'] / 1e3:.1f} us/step"
    used = ""
    if cpu:
        # CPU time per call (every thread), which machine load disturbs less than wall time
        extra["flowkit_cpu_ns"] = cpu["flowkit"]
        used = f"CPU per call flowkit {cpu['flowkit'] / 1e3:.0f} us"
        if "peer" in cpu:
            extra["peer_cpu_ns"] = cpu["peer"]
            used += f", {PEER} {cpu['peer'] / 1e3:.0f} us ({cpu['flowkit'] / cpu['peer']:.3f}x)"
    parts = (note, f"plain python {plain / 1e3:.1f} us", per, used)
    row.note = "; ".join(p for p in parts if p)
    return row


def bench_linear_sync(have_peer: bool, quick: bool) -> Row:
    flow_cls = _linear_flow(is_async=False)
    assert flow_cls().kickoff() == STEPS
    contenders: dict[str, Any] = {"flowkit": lambda: flow_cls().kickoff(), "plain": _plain_linear()}
    if have_peer:
        graph = _lg_linear(is_async=False)
        assert graph.invoke({"counter": 0})["counter"] == STEPS
        contenders["peer"] = lambda: graph.invoke({"counter": 0})
    cpu: dict[str, float] = {}
    t = measure(contenders, batch=20 if quick else 50, rounds=3 if quick else 11, cpu=cpu)
    target = 0.05 if have_peer else None  # issue 10
    return _rows_for(f"linear{STEPS}-sync kickoff", t, STEPS, target, cpu=cpu)


def bench_linear_async(have_peer: bool, quick: bool) -> Row:
    flow_cls = _linear_flow(is_async=True)

    cpu: dict[str, float] = {}

    async def main() -> dict[str, float]:
        assert await flow_cls().kickoff_async() == STEPS
        contenders: dict[str, Any] = {
            "flowkit": lambda: flow_cls().kickoff_async(),
            "plain": _plain_linear_async(),
        }
        if have_peer:
            graph = _lg_linear(is_async=True)
            assert (await graph.ainvoke({"counter": 0}))["counter"] == STEPS
            contenders["peer"] = lambda: graph.ainvoke({"counter": 0})
        return await measure_async(
            contenders, batch=20 if quick else 50, rounds=3 if quick else 11, cpu=cpu
        )

    t = asyncio.run(main())
    return _rows_for(
        f"linear{STEPS}-async kickoff_async", t, STEPS, None, "no target in the issue", cpu
    )


def bench_fanout_sync(have_peer: bool, quick: bool) -> Row:
    flow_cls = _fanout_flow(is_async=False)
    assert flow_cls().kickoff() == FANOUT
    contenders: dict[str, Any] = {"flowkit": lambda: flow_cls().kickoff(), "plain": _plain_fanout()}
    if have_peer:
        graph = _lg_fanout(is_async=False)
        assert graph.invoke({"hits": 0})["hits"] == FANOUT
        contenders["peer"] = lambda: graph.invoke({"hits": 0})
    cpu: dict[str, float] = {}
    t = measure(contenders, batch=5 if quick else 6, rounds=3 if quick else 11, cpu=cpu)
    target = 0.1 if have_peer else None  # issue 10, with parallel methods isolated
    return _rows_for(f"fanout{FANOUT}-sync kickoff", t, FANOUT + 2, target, cpu=cpu)


def bench_fanout_async(have_peer: bool, quick: bool) -> Row:
    flow_cls = _fanout_flow(is_async=True)

    async def plain() -> int:
        state = Hits()

        async def work(i: int) -> int:
            state.hits.append(i)
            return i

        await asyncio.gather(*(work(i) for i in range(FANOUT)))
        return len(state.hits)

    cpu: dict[str, float] = {}

    async def main() -> dict[str, float]:
        assert await flow_cls().kickoff_async() == FANOUT
        contenders: dict[str, Any] = {"flowkit": lambda: flow_cls().kickoff_async(), "plain": plain}
        if have_peer:
            graph = _lg_fanout(is_async=True)
            assert (await graph.ainvoke({"hits": 0}))["hits"] == FANOUT
            contenders["peer"] = lambda: graph.ainvoke({"hits": 0})
        return await measure_async(
            contenders, batch=5 if quick else 6, rounds=3 if quick else 11, cpu=cpu
        )

    t = asyncio.run(main())
    return _rows_for(
        f"fanout{FANOUT}-async kickoff_async",
        t,
        FANOUT + 2,
        None,
        "no target in the issue; plain = asyncio.gather of 50 coroutines",
        cpu,
    )


# -- import time ----------------------------------------------------------------------

_IMPORTS = {
    "flowkit": "import flowkit",
    "pydantic": "from pydantic import BaseModel",
    "langgraph": "import langgraph.graph",
    # what any flowkit user pays anyway: pydantic plus the first model class
    "pydantic+model": "from pydantic import BaseModel\nclass M(BaseModel):\n    x: int = 0",
    "bare": "pass",
}


def _import_ns(statement: str) -> float:
    code = (
        f"import time; t0 = time.perf_counter_ns()\n{statement}\nprint(time.perf_counter_ns() - t0)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return float(out.strip().splitlines()[-1])


def bench_import(have_peer: bool, quick: bool, runs: int = 7) -> list[Row]:
    names = [n for n in _IMPORTS if have_peer or n != "langgraph"]
    for name in names:  # write bytecode caches, warm the page cache
        _import_ns(_IMPORTS[name])
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(3 if quick else runs):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            samples[name].append(_import_ns(_IMPORTS[name]))
    t = {n: median(v) for n, v in samples.items()}
    rows = [
        Row(
            "import flowkit vs pydantic",
            t["flowkit"],
            t["pydantic"],
            "pydantic BaseModel alone",
            1.3,
            f"measured inside fresh interpreters, median of {len(samples['flowkit'])}; "
            f"an empty statement costs {t['bare'] / 1e3:.0f} us",
        ),
        Row(
            "import flowkit vs pydantic+1 model",
            t["flowkit"],
            t["pydantic+model"],
            "pydantic + one model class",
        ),
    ]
    if have_peer:
        rows.append(
            Row(
                "import flowkit vs langgraph",
                t["flowkit"],
                t["langgraph"],
                "import langgraph.graph",
            )
        )
    return rows


def run(quick: bool = False) -> list[Row]:
    have_peer = peer_version("langgraph") is not None
    if not have_peer:
        print(f"peer not installed: {PEER} (flowkit and plain-Python numbers only)")
    rows = [
        bench_linear_sync(have_peer, quick),
        bench_linear_async(have_peer, quick),
        bench_fanout_sync(have_peer, quick),
        bench_fanout_async(have_peer, quick),
    ]
    rows += bench_import(have_peer, quick)
    return rows


def main() -> None:
    quick = "--quick" in sys.argv
    rows = run(quick)
    emit("engine", rows, {"peer": PEER, "peer_version": peer_version("langgraph"), "quick": quick})


if __name__ == "__main__":
    main()
