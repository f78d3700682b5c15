"""How kickoff runs the event graph (SPEC 2)."""

from __future__ import annotations

import asyncio
import enum
import threading
from typing import Any

import pytest

from flowkit import Flow, and_, listen, or_, router, start
from flowkit.exceptions import FlowConfigurationError, MethodCallLimitError


def test_kickoff_returns_output_of_last_finished_method() -> None:
    """kickoff returns what the last method to finish returned."""

    class Chain(Flow):
        @start()
        def a(self) -> int:
            return 1

        @listen(a)
        def b(self, value: int) -> int:
            return value + 10

    assert Chain().kickoff() == 11


def test_listener_without_parameter_is_called_without_payload() -> None:
    """A listener that takes no parameter is called with none."""
    calls: list[str] = []

    class NoArg(Flow):
        @start()
        def a(self) -> str:
            return "out"

        @listen(a)
        def b(self) -> None:
            calls.append("b")

    NoArg().kickoff()
    assert calls == ["b"]


def test_all_unconditional_starts_run_and_conditional_start_waits_for_label() -> None:
    """Unconditional starts all run at kickoff; a conditional start runs on its label."""
    ran: list[str] = []

    class Starts(Flow):
        @start()
        def one(self) -> None:
            ran.append("one")

        @start()
        def two(self) -> None:
            ran.append("two")

        @router(one)
        def decide(self) -> str:
            return "go"

        @start("go")
        def late(self) -> str:
            ran.append("late")
            return "late"

    assert Starts().kickoff() == "late"
    assert sorted(ran) == ["late", "one", "two"]
    assert ran[-1] == "late"


def test_when_no_start_is_unconditional_every_start_runs_at_kickoff() -> None:
    """With only conditional starts, kickoff runs every start."""
    ran: list[str] = []

    class OnlyConditional(Flow):
        @start("retry")
        def first(self) -> None:
            ran.append("first")

        @start("other")
        def second(self) -> None:
            ran.append("second")

    OnlyConditional().kickoff()
    assert sorted(ran) == ["first", "second"]


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("red", ["red"], id="str"),
        pytest.param(Color.BLUE, ["blue"], id="enum-value"),
        pytest.param(7, ["7"], id="str-of-int"),
        pytest.param(None, [], id="none-emits-nothing"),
    ],
)
def test_router_label_from_return_value(value: Any, expected: list[str]) -> None:
    """A router emits str(value), an Enum's .value, or nothing for None."""
    seen: list[str] = []

    class Routes(Flow):
        @start()
        def begin(self) -> None: ...

        @router(begin)
        def route(self) -> Any:
            return value

        @listen("red")
        def on_red(self) -> None:
            seen.append("red")

        @listen("blue")
        def on_blue(self) -> None:
            seen.append("blue")

        @listen("7")
        def seven(self) -> None:
            seen.append("7")

    Routes().kickoff()
    assert seen == expected


def test_several_routers_on_one_trigger_all_route_and_chain() -> None:
    """Two routers on one trigger both emit labels; a router may trigger another router."""
    seen: list[str] = []

    class Multi(Flow):
        @start()
        def begin(self) -> None: ...

        @router(begin)
        def r1(self) -> str:
            return "x"

        @router(begin)
        def r2(self) -> str:
            return "y"

        @router("x")
        def r3(self) -> str:
            return "z"

        @listen("y")
        def on_y(self) -> None:
            seen.append("y")

        @listen("z")
        def on_z(self) -> None:
            seen.append("z")

    Multi().kickoff()
    assert sorted(seen) == ["y", "z"]


def test_and_fires_only_after_every_part_and_then_resets() -> None:
    """and_ fires once all parts fired since its last firing, then resets."""
    joins: list[int] = []

    class Join(Flow[dict]):
        @start()
        def a(self) -> None: ...

        @start()
        def b(self) -> None: ...

        @listen(and_(a, b))
        def join(self) -> None:
            joins.append(1)

    Join().kickoff()
    assert joins == [1]


def test_diamond_join_runs_join_once_after_both_branches() -> None:
    """begin -> (left, right) -> and_(left, right) runs the join once, after both."""
    order: list[str] = []

    class Diamond(Flow):
        @start()
        def begin(self) -> int:
            return 1

        @listen(begin)
        def left(self, v: int) -> int:
            order.append("left")
            return v + 1

        @listen(begin)
        def right(self, v: int) -> int:
            order.append("right")
            return v + 2

        @listen(and_(left, right))
        def join(self) -> str:
            order.append("join")
            return "joined"

    assert Diamond().kickoff() == "joined"
    assert sorted(order[:2]) == ["left", "right"]
    assert order[2:] == ["join"]


def test_nested_conditions() -> None:
    """and_(a, or_(b, c)) fires when a and either b or c fired; or_(x, and_(y, z)) too."""
    fired: list[str] = []

    class Nested(Flow):
        @start()
        def a(self) -> None: ...

        @start()
        def c(self) -> None: ...

        @listen(and_(a, or_("b", c)))
        def first(self) -> None:
            fired.append("first")

        @listen(or_("never", and_(a, c)))
        def second(self) -> None:
            fired.append("second")

        @listen(and_(a, "never"))
        def third(self) -> None:
            fired.append("third")

    Nested().kickoff()
    assert sorted(fired) == ["first", "second"]


def test_or_fires_once_for_several_parts() -> None:
    """An or_ listener fires on the first part only, not again for the others."""
    count: list[int] = []

    class Once(Flow):
        @start()
        def a(self) -> None: ...

        @start()
        def b(self) -> None: ...

        @listen(or_(a, b))
        def either(self) -> None:
            count.append(1)

    Once().kickoff()
    assert count == [1]


def test_router_loop_rearms_or_and_stops_when_router_exits() -> None:
    """A router loop re-fires an or_ listener each cycle until the router exits."""

    class Loop(Flow[dict]):
        @start()
        def begin(self) -> None:
            self.state["attempts"] = 0

        @listen(or_(begin, "retry"))
        def attempt(self) -> int:
            self.state["attempts"] += 1
            return self.state["attempts"]

        @router(attempt)
        def check(self, attempts: int) -> str:
            return "done" if attempts >= 3 else "retry"

        @listen("done")
        def finish(self) -> str:
            return f"after {self.state['attempts']}"

    assert Loop().kickoff() == "after 3"


def test_endless_loop_hits_max_method_calls() -> None:
    """A loop that never exits stops with MethodCallLimitError naming the method."""

    class Forever(Flow):
        @start()
        def begin(self) -> None: ...

        @router(or_(begin, "again"))
        def spin(self) -> str:
            return "again"

    with pytest.raises(MethodCallLimitError, match=r"Forever.spin .*max_method_calls=5"):
        Forever(max_method_calls=5).kickoff()
    with pytest.raises(RuntimeError):
        Forever(max_method_calls=5).kickoff()


def test_exception_propagates_unchanged_and_nothing_downstream_runs() -> None:
    """A method's exception reaches the caller as is; its listeners never run."""
    ran: list[str] = []

    class Boom(Flow):
        @start()
        def begin(self) -> None:
            raise KeyError("exact")

        @listen(begin)
        def after(self) -> None:
            ran.append("after")

    with pytest.raises(KeyError) as info:
        Boom().kickoff()
    assert info.value.args == ("exact",)
    assert ran == []


def test_async_listeners_of_one_trigger_overlap() -> None:
    """Two async listeners of one trigger run at the same time (each waits for the other)."""

    class Overlap(Flow):
        def __init__(self) -> None:
            super().__init__()
            self.events: dict[str, asyncio.Event] = {}

        @start()
        async def begin(self) -> None:
            self.events = {"a": asyncio.Event(), "b": asyncio.Event()}

        @listen(begin)
        async def a(self) -> str:
            self.events["a"].set()
            await asyncio.wait_for(self.events["b"].wait(), 5)
            return "a"

        @listen(begin)
        async def b(self) -> str:
            self.events["b"].set()
            await asyncio.wait_for(self.events["a"].wait(), 5)
            return "b"

        @listen(and_(a, b))
        def done(self) -> str:
            return "both"

    assert Overlap().kickoff() == "both"


def test_sync_listeners_of_one_trigger_overlap_in_threads() -> None:
    """Two sync listeners of one trigger run in worker threads at the same time."""
    barrier = threading.Barrier(2, timeout=5)

    class Threads(Flow):
        @start()
        def begin(self) -> None: ...

        @listen(begin)
        def a(self) -> int:
            barrier.wait()
            return threading.get_ident()

        @listen(begin)
        def b(self) -> int:
            barrier.wait()
            return threading.get_ident()

    Threads().kickoff()  # a BrokenBarrierError would propagate if they ran one by one


def test_lone_sync_method_runs_inline_on_the_calling_thread() -> None:
    """A sync method with nothing to overlap runs on the kickoff thread, no thread hop."""

    class Inline(Flow):
        @start()
        def begin(self) -> int:
            return threading.get_ident()

        @listen(begin)
        def after(self, ident: int) -> tuple[int, int]:
            return ident, threading.get_ident()

    first, second = Inline().kickoff()
    assert first == second == threading.get_ident()


def test_sync_and_async_methods_mix() -> None:
    """Sync and async methods chain freely and pass payloads."""

    class Mixed(Flow):
        @start()
        async def a(self) -> int:
            await asyncio.sleep(0)
            return 2

        @listen(a)
        def b(self, v: int) -> int:
            return v * 3

        @listen(b)
        async def c(self, v: int) -> int:
            return v + 1

    assert Mixed().kickoff() == 7


def test_kickoff_async_and_akickoff() -> None:
    """kickoff_async and akickoff are awaitable forms of kickoff."""

    class Simple(Flow):
        @start()
        def a(self) -> str:
            return "ok"

    async def main() -> tuple[Any, Any]:
        return await Simple().kickoff_async(), await Simple().akickoff()

    assert asyncio.run(main()) == ("ok", "ok")


def test_sync_kickoff_inside_running_loop_works() -> None:
    """kickoff() called from inside a running event loop returns (it never hangs)."""

    class Simple(Flow):
        @start()
        async def a(self) -> str:
            await asyncio.sleep(0)
            return "ok"

    async def main() -> Any:
        return Simple().kickoff()

    assert asyncio.run(main()) == "ok"


def test_unknown_constructor_keyword_is_rejected() -> None:
    """Flow(**unknown) raises, naming the argument (CrewAI ignores it silently)."""

    class Simple(Flow):
        @start()
        def a(self) -> None: ...

    with pytest.raises(FlowConfigurationError, match="typo_kwarg"):
        Simple(typo_kwarg=1)


def test_subclass_inherits_overrides_and_adds_methods() -> None:
    """A subclass keeps its parent's decorated methods, may override and add."""

    class Parent(Flow):
        @start()
        def begin(self) -> str:
            return "parent"

        @listen(begin)
        def middle(self, v: str) -> str:
            return v + "-middle"

    class Child(Parent):
        @listen(Parent.begin)
        def middle(self, v: str) -> str:
            return v + "-child-middle"

        @listen("middle")
        def end(self, v: str) -> str:
            return v + "-end"

    class Unchanged(Parent):
        pass

    assert Child().kickoff() == "parent-child-middle-end"
    assert Unchanged().kickoff() == "parent-middle"
    assert Parent().kickoff() == "parent-middle"


def test_override_without_decorator_keeps_wiring() -> None:
    """Overriding a step without re-decorating it keeps the parent's wiring."""

    class Parent(Flow):
        @start()
        def begin(self) -> str:
            return "parent"

    class Child(Parent):
        def begin(self) -> str:
            return "child"

    assert Child().kickoff() == "child"


def test_many_flows_in_parallel_threads_do_not_share_state() -> None:
    """Flows kicked off from many threads at once each keep their own state."""

    class Counter(Flow[dict]):
        @start()
        def begin(self) -> None:
            self.state["n"] = 0

        @router(or_(begin, "more"))
        def bump(self) -> str:
            self.state["n"] += 1
            return "more" if self.state["n"] < 20 else "stop"

        @listen("stop")
        def end(self) -> tuple[str, int]:
            return self.state["id"], self.state["n"]

    results: list[Any] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(10):
            flow = Counter()
            out = flow.kickoff()
            with lock:
                results.append((out, flow.state["id"]))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 80
    assert all(out == (run_id, 20) for out, run_id in results)
    assert len({run_id for _, run_id in results}) == 80


def test_flow_instance_refuses_concurrent_kickoffs() -> None:
    """One flow object runs one kickoff at a time; a second concurrent one is refused."""

    class Slow(Flow):
        @start()
        async def a(self) -> None:
            await asyncio.sleep(0.05)

    async def main() -> None:
        flow = Slow()
        first = asyncio.ensure_future(flow.kickoff_async())
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="already running"):
            await flow.kickoff_async()
        await first

    asyncio.run(main())


def test_many_blocking_sync_listeners_all_run_at_once() -> None:
    """Twelve sync listeners of one trigger that each block until all twelve have
    started: the worker pool wakes a thread for each (serially they would deadlock)."""
    barrier = threading.Barrier(12, timeout=20)

    def make(i: int) -> Any:
        def wait(self: Any) -> int:
            barrier.wait()
            return i

        wait.__name__ = wait.__qualname__ = f"w{i}"
        return listen("root")(wait)

    methods: dict[str, Any] = {f"w{i}": make(i) for i in range(12)}
    methods["root"] = start()(lambda self: None)
    methods["root"].__name__ = "root"
    Wide = type("Wide", (Flow,), methods)
    Wide().kickoff()  # a BrokenBarrierError would propagate if any waited for another
    assert barrier.n_waiting == 0 and not barrier.broken


def test_a_falsy_backend_is_used_not_replaced_by_the_default() -> None:
    """@persist(backend) with a backend whose truth value is False (it defines __len__
    = 0) stores the run in that backend, not in the default SQLite file."""
    from flowkit import persist
    from flowkit.persistence import InMemoryFlowPersistence

    class Empty(InMemoryFlowPersistence):
        def __len__(self) -> int:
            return 0

    store = Empty()
    assert not store

    @persist(store)
    class Saved(Flow):
        @start()
        def only(self) -> int:
            return 1

    flow = Saved()
    assert flow.persistence is store
    flow.kickoff()
    assert store.load_state(flow.state["id"]) is not None
