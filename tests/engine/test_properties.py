"""Property tests on random DAG flows (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from flowkit import Flow, and_, listen, or_, start


@st.composite
def dag_specs(draw: st.DrawFn) -> list[tuple[str, list[int]]]:
    """Method i listens to a non-empty subset of earlier methods with and_/or_/single."""
    n = draw(st.integers(min_value=2, max_value=9))
    spec: list[tuple[str, list[int]]] = [("start", [])]
    for i in range(1, n):
        if draw(st.booleans()) and i < 3:
            spec.append(("start", []))
            continue
        parents = draw(st.lists(st.integers(0, i - 1), min_size=1, max_size=3, unique=True))
        kind = draw(st.sampled_from(["and", "or", "single"])) if len(parents) > 1 else "single"
        spec.append((kind, sorted(parents)[:1] if kind == "single" else sorted(parents)))
    return spec


def build(spec: list[tuple[str, list[int]]], asyncs: list[bool]) -> type[Flow[Any]]:
    ns: dict[str, Any] = {}
    for i, (kind, parents) in enumerate(spec):
        name = f"m{i}"

        def make(name: str, is_async: bool) -> Any:
            if is_async:

                async def method(self: Any) -> str:
                    self.log.append(name)
                    return name

            else:

                def method(self: Any) -> str:  # type: ignore[misc]
                    self.log.append(name)
                    return name

            method.__name__ = name
            return method

        func = make(name, asyncs[i % len(asyncs)])
        parts = [f"m{p}" for p in parents]
        if kind == "start":
            ns[name] = start()(func)
        elif kind == "single":
            ns[name] = listen(parts[0])(func)
        elif kind == "and":
            ns[name] = listen(and_(*parts))(func)
        else:
            ns[name] = listen(or_(*parts))(func)

    def __init__(self: Any) -> None:
        Flow.__init__(self)
        self.log = []

    ns["__init__"] = __init__
    return type("RandomDag", (Flow,), ns)


@settings(max_examples=60, deadline=None)
@given(dag_specs(), st.lists(st.booleans(), min_size=1, max_size=4))
def test_every_method_of_a_dag_runs_once_and_never_before_its_and_parts(
    spec: list[tuple[str, list[int]]], asyncs: list[bool]
) -> None:
    """In a DAG each method runs exactly once; and_ after all parts; or_ after one."""
    flow_cls = build(spec, asyncs)
    flow = flow_cls()
    flow.kickoff()
    log: list[str] = flow.log  # type: ignore[attr-defined]
    assert sorted(log) == sorted(f"m{i}" for i in range(len(spec)))
    position = {name: idx for idx, name in enumerate(log)}
    for i, (kind, parents) in enumerate(spec):
        me = position[f"m{i}"]
        if kind in ("and", "single"):
            assert all(position[f"m{p}"] < me for p in parents)
        elif kind == "or":
            assert any(position[f"m{p}"] < me for p in parents)
