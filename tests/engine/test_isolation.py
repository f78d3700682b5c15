"""Methods that run at the same time work on their own view of the state, merged field by
field when each finishes (SPEC 5, "Parallel methods are isolated")."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from pydantic import BaseModel

from flowkit import Flow, FlowState, Interrupted, and_, listen, persist, start
from flowkit.exceptions import StateConflictError, StateError
from flowkit.persistence import InMemoryFlowPersistence


class Pair(FlowState):
    left: int = 0
    right: int = 0
    total: int = 0
    items: list[str] = []


def two_branches(
    state_type: Any,
    first: Any,
    second: Any,
    *,
    backend: Any = None,
    then: Any = None,
) -> type[Flow[Any]]:
    """start -> (one | two, overlapping) -> nothing. ``one`` writes, then waits until
    ``two`` has written and finished, so both run on views of the same starting state
    and ``two`` finishes first."""

    class Branches(Flow[state_type]):  # type: ignore[valid-type]
        @start()
        def begin(self) -> None:
            self.two_done = asyncio.Event()

        @listen(begin)
        async def one(self) -> None:
            first(self.state)
            await self.two_done.wait()
            await asyncio.sleep(0.01)
            if then is not None:
                then(self.state)

        @listen(begin)
        async def two(self) -> None:
            await asyncio.sleep(0)
            second(self.state)
            self.two_done.set()

    if backend is not None:
        return persist(backend)(Branches)  # type: ignore[no-any-return]
    return Branches


def test_fields_changed_by_one_side_each_take_that_sides_value() -> None:
    """Two overlapping methods that set different fields: both changes are kept."""

    def set_left(s: Pair) -> None:
        s.left = 1

    def set_right(s: Pair) -> None:
        s.right = 2

    flow = two_branches(Pair, set_left, set_right)()
    flow.kickoff()
    assert (flow.state.left, flow.state.right) == (1, 2)


def test_appends_to_one_list_by_parallel_methods_are_all_kept_in_completion_order() -> None:
    """Items appended to the same list by overlapping methods are all kept, in the order
    the methods finished."""

    def add_one(s: Pair) -> None:
        s.items.append("one")

    def add_two(s: Pair) -> None:
        s.items.extend(["two-a", "two-b"])

    flow = two_branches(Pair, add_one, add_two)()
    flow.kickoff()
    assert flow.state.items == ["two-a", "two-b", "one"]


class Address(BaseModel):
    street: str = ""
    city: str = ""


class Person(FlowState):
    address: Address = Address()


def test_nested_model_fields_merge_field_by_field() -> None:
    """Two methods that change different fields of one nested model: both are kept."""

    def set_street(s: Person) -> None:
        s.address.street = "Main St"

    def set_city(s: Person) -> None:
        s.address.city = "Oslo"

    flow = two_branches(Person, set_street, set_city)()
    flow.kickoff()
    assert flow.state.address == Address(street="Main St", city="Oslo")


def test_conflicting_writes_raise_state_conflict_error_naming_field_and_methods() -> None:
    """Two overlapping methods that set one field to different values: a
    StateConflictError naming the field and both methods (also a RuntimeError)."""

    def one(s: Pair) -> None:
        s.total = 1

    def two(s: Pair) -> None:
        s.total = 2

    with pytest.raises(StateConflictError) as info:
        two_branches(Pair, one, two)().kickoff()
    assert info.value.path == "state.total"
    assert info.value.methods == ("one", "two")
    assert "state.total" in str(info.value) and "one" in str(info.value)
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, StateError)


def test_same_increment_in_two_branches_is_a_conflict_not_a_lost_update() -> None:
    """``total += 1`` in two overlapping methods would count once; it is a conflict."""

    def bump(s: Pair) -> None:
        s.total += 1

    with pytest.raises(StateConflictError, match=r"state\.total"):
        two_branches(Pair, bump, bump)().kickoff()


def test_dict_state_merges_by_key() -> None:
    """A dict state merges like a model: keys set by one side, appends by both, a key
    deleted by one side."""

    def one(s: dict[str, Any]) -> None:
        s["x"] = 1
        s["log"].append("one")
        del s["old"]

    def two(s: dict[str, Any]) -> None:
        s["y"] = 2
        s["log"].append("two")

    flow = two_branches(dict, one, two)()
    flow.kickoff(inputs={"log": [], "old": True})
    state = dict(flow.state)
    state.pop("id")
    assert state == {"log": ["two", "one"], "x": 1, "y": 2}


def test_dict_state_conflict_names_the_key() -> None:
    """Conflicting writes to one key of a dict state name it as state['key']."""

    def one(s: dict[str, Any]) -> None:
        s["k"] = "one"

    def two(s: dict[str, Any]) -> None:
        s["k"] = "two"

    with pytest.raises(StateConflictError, match=r"state\['k'\]"):
        two_branches(dict, one, two)().kickoff()


def test_exception_in_one_branch_discards_only_its_changes() -> None:
    """A branch that raises leaves no trace in the state or the stored run; the branch
    that finished before it is kept."""
    store = InMemoryFlowPersistence()

    def write(s: Pair) -> None:
        s.left = 99

    def fail(s: Pair) -> None:
        raise KeyError("boom")

    def ok(s: Pair) -> None:
        s.right = 2

    flow = two_branches(Pair, write, ok, backend=store, then=fail)()
    with pytest.raises(KeyError):
        flow.kickoff()
    assert (flow.state.left, flow.state.right) == (0, 2)
    stored = store.load_state(flow.state.id)
    assert stored is not None and (stored["left"], stored["right"]) == (0, 2)


class Approval(FlowState):
    edits: int = 0
    noted: list[str] = []
    verdict: str = ""


@persist(InMemoryFlowPersistence())
class AskWhileOtherRuns(Flow[Approval]):
    @start()
    def begin(self) -> None:
        pass

    @listen(begin)
    async def ask(self) -> None:
        self.state.edits += 1  # must not be stored with the interrupt, nor applied twice
        await asyncio.sleep(0.02)  # `note` finishes while this one runs
        self.state.verdict = self.interrupt("approve?")

    @listen(begin)
    async def note(self) -> None:
        self.state.noted.append("note")


def test_interrupt_in_one_branch_discards_its_changes_and_keeps_the_others() -> None:
    """A method interrupted while another ran beside it: its own changes are not stored
    (the resumed method starts from the state it started with); the other's are."""
    flow = AskWhileOtherRuns()
    result = flow.kickoff()
    assert isinstance(result, Interrupted)
    assert (flow.state.edits, flow.state.noted) == (0, ["note"])
    resumed = AskWhileOtherRuns()
    resumed.resume(result.run_id, "yes")
    assert (resumed.state.edits, resumed.state.noted, resumed.state.verdict) == (
        1,
        ["note"],
        "yes",
    )


def test_checkpoint_never_holds_changes_of_a_method_still_running() -> None:
    """The checkpoint written when one branch finishes does not contain what a sibling
    still running has written so far."""
    store = InMemoryFlowPersistence()
    seen: dict[str, Any] = {}

    @persist(store)
    class Slow(Flow[Pair]):
        @start()
        def begin(self) -> None:
            pass

        @listen(begin)
        async def fast(self) -> None:
            self.state.left = 1

        @listen(begin)
        async def slow(self) -> None:
            self.state.right = 2
            while (cp := store.load_checkpoint(self.state.id)).method_name != "fast":
                await asyncio.sleep(0.005)
            seen.update(cp.state)

    Slow().kickoff()
    assert (seen["left"], seen["right"]) == (1, 0)


def test_sync_methods_in_worker_threads_are_isolated_too() -> None:
    """Sync methods that overlap run in worker threads, each on its own view."""
    barrier = threading.Barrier(2, timeout=10)

    class Threads(Flow[Pair]):
        @start()
        def begin(self) -> None:
            pass

        @listen(begin)
        def one(self) -> None:
            self.state.items.append("one")
            self.state.left = len(self.state.items)
            barrier.wait()

        @listen(begin)
        def two(self) -> None:
            self.state.items.append("two")
            self.state.right = len(self.state.items)
            barrier.wait()

        @listen(and_(one, two))
        def join(self) -> list[str]:
            return sorted(self.state.items)

    flow = Threads()
    assert flow.kickoff() == ["one", "two"]
    # each saw only its own append
    assert (flow.state.left, flow.state.right) == (1, 1)


def test_method_running_alone_works_on_the_live_state() -> None:
    """A method that nothing overlaps with gets the live state object itself (no copy)."""
    seen: list[Any] = []

    class Chain(Flow[Pair]):
        @start()
        def a(self) -> None:
            seen.append(self.state)

        @listen(a)
        def b(self) -> None:
            seen.append(self.state)

    flow = Chain()
    flow.kickoff()
    assert seen[0] is seen[1] is flow.state


def test_interrupt_with_method_level_persist_keeps_earlier_unpersisted_changes() -> None:
    """With @persist on one method only, a method that ran alone and was interrupted
    goes back to the state it started with -- which includes the changes of the
    earlier, unpersisted method -- not to the last stored checkpoint."""
    store = InMemoryFlowPersistence()

    class Partly(Flow[Approval]):
        @start()
        def prepare(self) -> None:
            self.state.noted.append("prepared")  # no checkpoint after this method

        @persist(store)
        @listen(prepare)
        def ask(self) -> None:
            self.state.edits += 1
            self.state.verdict = self.interrupt("approve?")

    flow = Partly()
    result = flow.kickoff()
    assert isinstance(result, Interrupted)
    stored = store.load_state(result.run_id)
    assert stored is not None
    assert (stored["noted"], stored["edits"]) == (["prepared"], 0)
    resumed = Partly()
    resumed.resume(result.run_id, "yes")
    assert (resumed.state.noted, resumed.state.edits) == (["prepared"], 1)
