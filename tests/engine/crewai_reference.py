"""Random flow graphs run under CrewAI and recorded, replayed under flowkit.

The specs are plain data (JSON) so that one builder makes the same class from CrewAI's
decorators (when recording, in a scratch environment that has crewai) and from
flowkit's (in the test). Record again with::

    CREWAI_DISABLE_TELEMETRY=true CREWAI_DISABLE_VERSION_CHECK=true \\
    OTEL_SDK_DISABLED=true /path/to/venv-with-crewai/bin/python \\
        tests/engine/crewai_reference.py tests/engine/data/crewai_reference.json

crewai is never a dependency of flowkit; the test only reads the JSON file.
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from typing import Any

# A condition: a name (method or label), or ["or" | "and", [parts]].
Cond = Any
# A method: {"name", "kind": "start" | "listen" | "router", "cond", "emit", "returns"}
Spec = list[dict[str, Any]]

FAMILIES = ("router_chain_or", "or_of_ands", "router_emit", "mixed")
RECORDINGS = 5


def _pick(rng: random.Random, names: list[str], family: str, depth: int = 0) -> Cond:
    """A condition over ``names`` in the style of ``family``."""
    if len(names) == 1 or (depth > 0 and rng.random() < 0.5):
        return rng.choice(names)
    k = rng.randint(2, min(3, len(names)))
    parts_from = rng.sample(names, k)
    if family == "or_of_ands" and depth == 0:
        groups = [rng.sample(names, min(len(names), rng.randint(1, 2))) for _ in range(k)]
        return ["or", [g[0] if len(g) == 1 else ["and", g] for g in groups]]
    if family == "router_chain_or":
        return ["or", parts_from]
    kind = rng.choice(["or", "and"])
    parts = [_pick(rng, names, family, depth + 1) if rng.random() < 0.3 else p for p in parts_from]
    return [kind, parts]


def _has_or(cond: Cond) -> bool:
    return isinstance(cond, list) and (cond[0] == "or" or any(_has_or(p) for p in cond[1]))


def generate(seed: int, family: str) -> Spec:
    """A random acyclic flow: each method listens to earlier methods and labels."""
    rng = random.Random(seed)
    spec: Spec = [{"name": "m0", "kind": "start", "cond": None, "emit": None, "returns": None}]
    events = ["m0"]  # what later methods may listen to
    labels = 0
    n = rng.randint(3, 8)
    for i in range(1, n):
        name = f"m{i}"
        chain = family == "router_chain_or" and i <= n // 2
        is_router = chain or rng.random() < (0.5 if family in ("router_emit", "mixed") else 0.3)
        if chain and i > 1:
            cond: Cond = events[-1]  # the previous router's label: a chain
        else:
            cond = _pick(rng, events, family)
        if is_router and _has_or(cond):
            # CrewAI runs a router on or_ once per part (flowkit once, as for
            # listeners: a documented difference); compare routers on and_ / one event
            cond = ["and", cond[1]] if isinstance(cond, list) and cond[0] == "or" else events[-1]
            if _has_or(cond):
                cond = events[-1]
        item: dict[str, Any] = {"name": name, "kind": "router" if is_router else "listen"}
        item["cond"] = cond
        item["emit"] = None
        item["returns"] = None
        if is_router:
            own = [f"L{labels + j}" for j in range(rng.randint(1, 2))]
            labels += len(own)
            item["returns"] = rng.choice(own)
            if family == "router_emit" or rng.random() < 0.3:
                item["emit"] = own
            events.append(item["returns"])
        events.append(name)
        spec.append(item)
    # Every event also feeds one witness, so no event feeds a single or_ exclusively:
    # CrewAI then races the methods behind it and cancels the slower ones, a
    # difference documented separately (flowkit runs them all).
    spec.append(
        {
            "name": "witness",
            "kind": "listen",
            "cond": ["or", list(events)],
            "emit": None,
            "returns": None,
        }
    )
    return spec


def build(spec: Spec, api: dict[str, Any], log: list[str]) -> type:
    """The flow class ``spec`` describes, made with ``api``'s decorators
    (``Flow``, ``start``, ``listen``, ``router``, ``or_``, ``and_``). Each call appends
    the method's name to ``log`` (not to the state: CrewAI may lose a state change
    made by one of two methods running side by side)."""

    def cond_of(cond: Cond) -> Any:
        if isinstance(cond, str):
            return cond
        kind, parts = cond
        return api[f"{kind}_"](*(cond_of(p) for p in parts))

    def make(name: str, returns: Any) -> Any:
        def method(self: Any) -> Any:
            log.append(name)  # list.append is atomic: safe from worker threads
            return returns

        method.__name__ = name
        return method

    ns: dict[str, Any] = {}
    for item in spec:
        method = make(item["name"], item["returns"])
        if item["kind"] == "start":
            ns[item["name"]] = api["start"]()(method)
        elif item["kind"] == "listen":
            ns[item["name"]] = api["listen"](cond_of(item["cond"]))(method)
        else:
            kwargs = {"emit": item["emit"]} if item["emit"] else {}
            ns[item["name"]] = api["router"](cond_of(item["cond"]), **kwargs)(method)
    return type("RandomFlow", (api["Flow"],), ns)


def calls_of(spec: Spec, api: dict[str, Any]) -> dict[str, int]:
    """How many times each method of ``spec`` ran in one kickoff under ``api``."""
    log: list[str] = []
    build(spec, api, log)().kickoff()
    return dict(Counter(log))


def cases(count_per_family: int = 15) -> list[tuple[int, str]]:
    return [(seed, fam) for fam in FAMILIES for seed in range(count_per_family)]


def _record(path: str) -> None:  # pragma: no cover - runs with crewai installed
    import contextlib
    import io

    import crewai  # type: ignore[import-not-found]
    from crewai.flow.flow import Flow, and_, listen, or_, router, start  # type: ignore[import-not-found]

    api = {"Flow": Flow, "start": start, "listen": listen, "router": router}
    api.update({"or_": or_, "and_": and_})
    out = []
    for seed, family in cases():
        spec = generate(seed, family)
        outcomes: list[dict[str, int]] = []
        for _ in range(RECORDINGS):  # CrewAI's counts can vary from run to run
            with contextlib.redirect_stdout(io.StringIO()):
                calls = calls_of(spec, api)
            if calls not in outcomes:
                outcomes.append(calls)
        out.append({"seed": seed, "family": family, "spec": spec, "outcomes": outcomes})
    data = {"crewai": crewai.__version__, "cases": out}
    with open(path, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.write("\n")


if __name__ == "__main__":  # pragma: no cover
    _record(sys.argv[1])
