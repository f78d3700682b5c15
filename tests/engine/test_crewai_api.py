"""The CrewAI Flow API that flowkit provides, through flowkit's public API.

Each test states the CrewAI 1.15.30 behaviour it matches (observed in a scratch venv),
or the documented difference it pins.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from flowkit import Flow, FlowState, Interrupted, listen, persist, router, start
from flowkit.events import (
    FlowEvent,
    FlowStarted,
)
from flowkit.exceptions import FlowUsageError, RunNotFoundError
from flowkit.persistence import InMemoryFlowPersistence, SQLiteFlowPersistence

# -- names -------------------------------------------------------------------------------


def test_name_class_attribute_names_the_flow() -> None:
    """CrewAI: `name = "..."` on the class names the flow (events, stored runs)."""

    class Billing(Flow):
        name = "invoice-run"

        @start()
        def begin(self) -> None: ...

    events: list[FlowEvent] = []
    flow = Billing()
    flow.subscribe(events.append, FlowStarted)
    flow.kickoff()
    assert [e.flow_name for e in events] == ["invoice-run"]


class Outer:
    class Inner(Flow):
        @start()
        def begin(self) -> None: ...


def test_default_flow_name_is_the_class_name_not_its_qualified_name() -> None:
    """CrewAI names an unnamed flow after the class's __name__ ("Inner", not "Outer.Inner")."""
    backend = InMemoryFlowPersistence()
    flow = Outer.Inner(persistence=backend)
    flow.kickoff()
    run = backend.get_run(flow.flow_id)
    assert run is not None and run.flow_name == "Inner"


# -- state and run ids -----------------------------------------------------------------


class ChangesId(Flow[dict]):
    @start()
    def begin(self) -> None:
        self.state["id"] = "someone-else"


def test_a_method_changing_state_id_fails_naming_both_ids() -> None:
    """flowkit refuses what CrewAI silently follows (saves under the new id while the
    stored run keeps the old): the method's return is a clear error."""
    flow = ChangesId()
    old = flow.flow_id
    with pytest.raises(FlowUsageError, match=f"from '{old}' to 'someone-else'"):
        flow.kickoff()


def test_a_changed_state_id_never_reaches_storage() -> None:
    """With persistence, nothing is stored under the new id; the run fails under its own."""
    backend = InMemoryFlowPersistence()
    flow = ChangesId(persistence=backend)
    old = flow.flow_id
    with pytest.raises(FlowUsageError):
        flow.kickoff()
    run = backend.get_run(old)
    assert run is not None and run.status == "failed"
    assert backend.get_run("someone-else") is None


def test_flow_id_is_the_state_id() -> None:
    """CrewAI's flow_id is state.id."""

    class Plain(Flow[dict]):
        @start()
        def begin(self) -> None: ...

    flow = Plain()
    assert flow.flow_id == flow.state["id"]


def test_method_outputs_lists_every_output_in_finishing_order() -> None:
    """CrewAI's method_outputs: each method's return value, in order, for the last run."""

    class Steps(Flow):
        @start()
        def one(self) -> str:
            return "a"

        @listen(one)
        def two(self, value: str) -> str:
            return value + "b"

    flow = Steps()
    flow.kickoff()
    assert flow.method_outputs == ["a", "ab"]
    flow.kickoff()
    assert flow.method_outputs == ["a", "ab"]  # per kickoff, not accumulated


class Settings(FlowState):
    level: int = 0


class Levelled(Flow[Settings]):
    @start()
    def read(self) -> tuple[str, int]:
        return self.state.id, self.state.level


def test_initial_state_instance_per_flow_object_keeps_its_values_and_id() -> None:
    """CrewAI: Flow(initial_state=Model(id="mine", ...)) starts from it, id included."""
    assert Levelled(initial_state=Settings(id="mine", level=5)).kickoff() == ("mine", 5)


def test_initial_state_dict_for_a_typed_flow_is_validated_into_the_model() -> None:
    """A dict for Flow[Model] fills the model's fields (CrewAI fails on it later with an
    AttributeError); a fresh id is minted."""
    run_id, level = Levelled(initial_state={"level": "3"}).kickoff()
    assert level == 3 and len(run_id) == 36


# -- persistence -------------------------------------------------------------------------


def test_persist_accepts_the_persistence_keyword(tmp_path: Path) -> None:
    """CrewAI spells it @persist(persistence=backend)."""
    with SQLiteFlowPersistence(tmp_path / "kw.db") as backend:

        @persist(persistence=backend)
        class Keyword(Flow[dict]):
            @start()
            def begin(self) -> None:
                self.state["done"] = True

        flow = Keyword()
        flow.kickoff()
        assert backend.load_state(flow.flow_id)["done"] is True


class FalsyBackend(InMemoryFlowPersistence):
    """A backend whose truth value is False (it defines __len__, like a collection)."""

    def __len__(self) -> int:
        return 0


def test_a_falsy_backend_given_to_persist_is_the_one_used() -> None:
    """CrewAI uses the object given to @persist; it must not be swapped for the default."""
    backend = FalsyBackend()

    @persist(backend)
    class Kept(Flow[dict]):
        @start()
        def begin(self) -> None: ...

    flow = Kept()
    flow.kickoff()
    assert flow.persistence is backend
    assert backend.load_state(flow.flow_id) is not None


@persist(InMemoryFlowPersistence())
class Counter(Flow[dict]):
    @start()
    def bump(self) -> int:
        self.state["n"] = self.state.get("n", 0) + 1
        return int(self.state["n"])


def test_restore_from_state_id_starts_a_new_run_from_the_stored_state() -> None:
    """CrewAI: kickoff(restore_from_state_id=X) copies X's latest state into a new run
    with a new id; X is unchanged. flowkit records X as the new run's parent."""
    first = Counter()
    first.kickoff()
    second = Counter()
    assert second.kickoff(restore_from_state_id=first.flow_id) == 2
    assert second.flow_id != first.flow_id
    backend = Counter().persistence
    assert backend is not None
    assert backend.load_state(first.flow_id)["n"] == 1
    child = backend.get_run(second.flow_id)
    assert child is not None and child.parent_run_id == first.flow_id


def test_restore_from_state_id_applies_inputs_on_top_and_inputs_id_names_the_run() -> None:
    """CrewAI: inputs are applied after the restore, and inputs["id"] pins the new id."""
    first = Counter()
    first.kickoff()
    second = Counter()
    out = second.kickoff(inputs={"id": "pinned-run", "n": 10}, restore_from_state_id=first.flow_id)
    assert out == 11 and second.flow_id == "pinned-run"


def test_restore_from_an_unknown_id_is_an_error() -> None:
    """CrewAI logs and starts from scratch; flowkit refuses (a typo would lose the state
    the caller meant to continue from)."""
    with pytest.raises(RunNotFoundError, match="no-such-run"):
        Counter().kickoff(restore_from_state_id="no-such-run")


def test_akickoff_takes_restore_from_state_id() -> None:
    """The awaitable forms take the same argument."""
    first = Counter()
    first.kickoff()
    assert asyncio.run(Counter().akickoff(restore_from_state_id=first.flow_id)) == 2


# -- trigger payload -------------------------------------------------------------------


class Triggered(Flow[dict]):
    @start()
    def receive(self, crewai_trigger_payload: Any = None) -> Any:
        return crewai_trigger_payload


def test_trigger_payload_reaches_a_start_that_declares_it() -> None:
    """CrewAI passes inputs["crewai_trigger_payload"] to start methods with that parameter
    (and keeps it in a dict state)."""
    flow = Triggered()
    assert flow.kickoff(inputs={"crewai_trigger_payload": {"order": 7}}) == {"order": 7}
    assert flow.state["crewai_trigger_payload"] == {"order": 7}


def test_trigger_payload_is_not_a_state_field_error_for_models() -> None:
    """CrewAI ignores the trigger input for a model state without such a field."""

    class Typed(Flow[Settings]):
        @start()
        def receive(self, crewai_trigger_payload: Any = None) -> Any:
            return crewai_trigger_payload

    assert Typed().kickoff(inputs={"crewai_trigger_payload": "hook"}) == "hook"


def test_trigger_payload_survives_a_resume() -> None:
    """A start interrupted before it finished gets the payload again on resume."""

    @persist(InMemoryFlowPersistence())
    class Paused(Flow[Settings]):
        @start()
        def receive(self, crewai_trigger_payload: Any = None) -> Any:
            answer = self.interrupt("go?")
            return (crewai_trigger_payload, answer)

    paused = Paused().kickoff(inputs={"crewai_trigger_payload": {"k": 1}})
    assert isinstance(paused, Interrupted)
    assert Paused().resume(paused.run_id, "yes") == ({"k": 1}, "yes")


class Seen(FlowState):
    note: str = ""
    level: int = 0


class RoutedStart(Flow[Seen]):
    """A kickoff start, a router, and conditional starts fired by the router's label."""

    @start()
    def kick(self) -> str:
        return "kicked"

    @router(kick)
    def route(self) -> str:
        return "go"

    @start("go")
    def with_payload(self, crewai_trigger_payload: Any = None) -> Any:
        self.state.note = f"payload={crewai_trigger_payload}"
        return crewai_trigger_payload

    @start("go")
    def with_param(self, given: Any = "default") -> Any:
        self.state.level = 1 if given == "default" else 2
        return given


def test_trigger_payload_reaches_a_conditional_start_fired_by_a_label() -> None:
    """CrewAI 1.15.30 passes inputs["crewai_trigger_payload"] to every start method that
    declares it, a start fired later by a router's label included, and calls such a start
    without the label (its parameters keep their defaults)."""
    flow = RoutedStart()
    flow.kickoff(inputs={"crewai_trigger_payload": {"order": 7}})
    assert flow.state.note == "payload={'order': 7}"
    assert flow.state.level == 1  # with_param got no argument
    assert flow.method_outputs[-2:] in ([{"order": 7}, "default"], ["default", {"order": 7}])

    plain = RoutedStart()
    plain.kickoff()
    assert plain.state.note == "payload=None"


def test_trigger_payload_of_a_conditional_start_survives_a_crash(tmp_path: Path) -> None:
    """The payload is stored with the run: a conditional start that runs only after a
    resume in another Flow object (as after a crash) still gets it."""
    store = SQLiteFlowPersistence(str(tmp_path / "flows.db"))

    @persist(store)
    class Waits(Flow[Seen]):
        @start()
        def kick(self) -> None:
            self.state.note = "kicked"

        @router(kick)
        def ask_first(self) -> str:
            return "go" if self.interrupt("go on?") == "yes" else "stop"

        @start("go")
        def later(self, crewai_trigger_payload: Any = None) -> Any:
            return crewai_trigger_payload

    paused = Waits().kickoff(inputs={"crewai_trigger_payload": {"hook": "h1"}})
    assert isinstance(paused, Interrupted)
    assert Waits().resume(paused.run_id, "yes") == {"hook": "h1"}
    store.close()


def test_initial_state_dict_for_a_dict_flow_is_this_objects_start() -> None:
    """CrewAI: Flow(initial_state={...}) on a dict flow starts from that dict."""

    class Notes(Flow[dict]):
        initial_state = {"source": "class"}

        @start()
        def read(self) -> Any:
            return self.state["source"]

    assert Notes(initial_state={"source": "object"}).kickoff() == "object"
    assert Notes().kickoff() == "class"
