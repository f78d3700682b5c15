"""Behaviour that CrewAI Flows users rely on (checked against crewai 1.15.30).

Each test names the CrewAI behaviour it matches; the deliberate differences are in
docs/coming-from-crewai.md and are tested there or in the other engine tests.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flowkit import Flow, and_, listen, or_, router, start
from flowkit.exceptions import FlowDefinitionError

# -- or_ / and_ firing ---------------------------------------------------------------


class ChainedRoutersIntoOr(Flow[dict]):
    @start()
    def kick(self) -> None:
        self.state["log"] = []

    @router(kick)
    def first(self) -> str:
        return "SignalA"

    @router("SignalA")
    def second(self) -> str:
        return "SignalB"

    @listen(or_("SignalA", "SignalB"))
    def either(self) -> None:
        self.state["log"].append("either")


def test_or_fed_by_two_labels_of_one_router_chain_fires_once() -> None:
    """CrewAI: labels of one router chain are one wave; an or_ over them runs once."""
    flow = ChainedRoutersIntoOr()
    flow.kickoff()
    assert flow.state["log"] == ["either"]


class OrOfAnds(Flow[dict]):
    @start()
    def begin(self) -> None:
        self.state["joined"] = 0

    @listen(begin)
    def a(self) -> None: ...

    @listen(begin)
    def c(self) -> None: ...

    @listen(and_(a, c))
    def x(self) -> None: ...

    @listen(or_(and_("a", "x"), and_("c", "y")))
    def joined(self) -> None:
        self.state["joined"] += 1

    @router(joined)
    def after(self) -> str:
        return "y"


def test_a_fired_or_forgets_the_partial_progress_of_its_other_parts() -> None:
    """CrewAI: when or_(and_(a, x), and_(c, y)) fires, c's progress is dropped, so a
    later "y" alone does not fire it again."""
    flow = OrOfAnds()
    flow.kickoff()
    assert flow.state["joined"] == 1


class LoopThroughOr(Flow[dict]):
    @start()
    def begin(self) -> None:
        self.state["runs"] = 0

    @listen(or_(begin, "again"))
    def work(self) -> None:
        self.state["runs"] += 1

    @router(work)
    def check(self) -> str:
        return "again" if self.state["runs"] < 3 else "done"


def test_or_re_arms_when_a_loop_comes_back_to_it() -> None:
    """CrewAI: a router label from a later wave re-arms a fired or_ (a real loop)."""
    flow = LoopThroughOr()
    flow.kickoff()
    assert flow.state["runs"] == 3


class RouterLoopOnItsOwnLabel(Flow[dict]):
    @start()
    def begin(self) -> None:
        self.state["tries"] = 0

    @router(or_(begin, "retry"))
    def attempt(self) -> str:
        self.state["tries"] += 1
        return "retry" if self.state["tries"] < 4 else "done"


def test_a_router_on_an_or_loops_on_its_own_label() -> None:
    """CrewAI: a router on or_(start, "retry") runs again on each "retry"."""
    flow = RouterLoopOnItsOwnLabel()
    flow.kickoff()
    assert flow.state["tries"] == 4


class LoopBesideOr(Flow[dict]):
    @start()
    def begin(self) -> None:
        self.state["firsts"] = 0
        self.state["rounds"] = 0

    @router(or_(begin, "go"))
    def dispatch(self) -> str:
        return "work"

    @listen("work")
    def left(self) -> None: ...

    @listen(left)
    def right(self) -> None:
        self.state["rounds"] += 1

    @listen(or_(left, right))
    def first_done(self) -> None:
        self.state["firsts"] += 1

    @router(right)
    def again(self) -> str | None:
        return "go" if self.state["rounds"] < 3 else None


def test_or_fires_once_per_round_of_a_loop_that_bypasses_it() -> None:
    """A part of a fired or_ called again (the loop came around) re-arms it, once per
    round. CrewAI re-arms every or_ whenever any method runs again and fires this one
    6 times in 3 rounds; flowkit keeps "first part, once per round" (documented)."""
    flow = LoopBesideOr()
    flow.kickoff()
    assert (flow.state["rounds"], flow.state["firsts"]) == (3, 3)


# -- definition errors -----------------------------------------------------------------


def test_an_invalid_condition_is_also_a_value_error() -> None:
    """CrewAI raises ValueError for start(123); flowkit's error is both kinds."""
    with pytest.raises(ValueError, match="123"):
        start(123)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="123"):
        start(123)  # type: ignore[arg-type]


def test_start_on_a_plain_method_is_a_definition_error_naming_it() -> None:
    """@start(helper) with an undecorated method is an error, not a bare @start."""
    with pytest.raises(FlowDefinitionError, match=r"PlainStart\.helper"):

        class PlainStart(Flow):
            def helper(self) -> str:
                return "h"

            @start(helper)
            def begin(self) -> str:
                return "s"


def _module_helper(self: Any) -> None: ...


def test_start_on_a_module_function_is_a_definition_error_naming_it() -> None:
    """@start(function) with a function defined outside the flow names the function."""
    with pytest.raises(FlowDefinitionError, match="_module_helper"):

        class HelperStart(Flow):
            @start(_module_helper)
            def begin(self) -> str:
                return "s"


def test_listen_on_a_plain_method_is_a_definition_error_naming_it() -> None:
    """@listen(helper) with an undecorated method is an error (CrewAI never runs it)."""
    with pytest.raises(FlowDefinitionError, match=r"PlainListen\.helper"):

        class PlainListen(Flow):
            @start()
            def begin(self) -> None: ...

            def helper(self) -> None: ...

            @listen(helper)
            def after(self) -> None: ...


def test_bare_start_still_works() -> None:
    """@start without parentheses marks an unconditional start."""

    class Bare(Flow):
        @start  # type: ignore[arg-type]
        def begin(self) -> str:
            return "bare"

    assert Bare().kickoff() == "bare"


# -- routers ---------------------------------------------------------------------------


class StackedRouters(Flow):
    @start()
    def begin(self) -> None: ...

    @listen(begin)
    @router()
    def route_below(self) -> str:
        return "one"

    @router()
    @listen("one")
    def route_above(self) -> str:
        return "two"

    @listen("two")
    def end(self) -> str:
        return "reached"


def test_listen_stacked_on_a_bare_router_routes() -> None:
    """CrewAI: @listen(cond) with @router() (either order) is a listener that routes."""
    assert StackedRouters().kickoff() == "reached"


def test_router_with_two_conditions_is_rejected() -> None:
    """@router(a) stacked with @listen(b): one method has one condition."""
    with pytest.raises(FlowDefinitionError, match="bare @router"):

        class TwoConditions(Flow):
            @start()
            def a(self) -> None: ...

            @router(a)
            @listen(a)
            def b(self) -> None: ...


class Emitting(Flow):
    @start()
    def begin(self) -> None: ...

    @router(begin, emit=["yes", "no"])
    def decide(self) -> str:
        return "maybe"

    @listen("maybe")
    def unsure(self) -> str:
        return "unsure"


def test_router_emit_is_declarative_and_recorded() -> None:
    """CrewAI: emit= declares the labels (stored in the definition); a label outside
    it still routes."""
    assert Emitting._graph.definition["methods"]["decide"]["emit"] == ["yes", "no"]
    assert Emitting().kickoff() == "unsure"


def test_router_emit_must_be_strings() -> None:
    """emit=[1] names the bad value."""
    with pytest.raises(FlowDefinitionError, match=r"emit=\[1\]"):
        router("x", emit=[1])  # type: ignore[list-item]


class RouterAndItsLabel(Flow[dict]):
    @start()
    def begin(self) -> None:
        self.state["runs"] = 0

    @router(begin)
    def decide(self) -> str:
        return "chosen"

    @listen(or_(decide, "chosen"))
    def after(self) -> None:
        self.state["runs"] += 1


def test_or_over_a_router_and_its_label_fires_once() -> None:
    """A router's name and its label are one completion: once (CrewAI runs it twice,
    dispatching the name in a nested pass first; documented difference)."""
    flow = RouterAndItsLabel()
    flow.kickoff()
    assert flow.state["runs"] == 1


class Race(Flow[dict]):
    @start()
    def begin(self) -> None:
        self.state["log"] = []

    @listen(begin)
    async def fast(self) -> None:
        self.state["log"].append("fast")

    @listen(begin)
    async def slow(self) -> None:
        await asyncio.sleep(0.05)
        self.state["log"].append("slow")

    @listen(or_(fast, slow))
    def first(self) -> None:
        self.state["log"].append("first")


def test_methods_feeding_one_or_all_run_to_completion() -> None:
    """CrewAI cancels the slower of two methods that only feed one or_ (a race);
    flowkit runs both, and the or_ listener once (documented difference)."""
    flow = Race()
    flow.kickoff()
    assert sorted(flow.state["log"]) == ["fast", "first", "slow"]
