"""Flow state: models, dicts, initial_state, inputs (SPEC 3)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import BaseModel

from flowkit import Flow, FlowState, start
from flowkit.exceptions import FlowkitError, StateAssignmentError, StateValidationError


class Plain(BaseModel):
    name: str = "x"
    count: int = 0


class WithId(FlowState):
    count: int = 0
    tags: list[str] = []


def _is_uuid4(value: str) -> bool:
    return uuid.UUID(value).version == 4


def test_model_without_id_gets_a_uuid4_id_field() -> None:
    """Flow[Model] adds an id (UUID4 string) when the model lacks one; still an instance."""

    class F(Flow[Plain]):
        @start()
        def a(self) -> None: ...

    flow = F()
    assert isinstance(flow.state, Plain)
    assert _is_uuid4(flow.state.id)  # type: ignore[attr-defined]
    assert F().state.id != flow.state.id  # type: ignore[attr-defined]


def test_dict_and_unparametrised_flows_have_dict_state_with_id() -> None:
    """Flow[dict] and plain Flow get a dict with an "id" key."""

    class D(Flow[dict]):  # type: ignore[type-arg]
        @start()
        def a(self) -> None: ...

    class P(Flow):  # type: ignore[type-arg]
        @start()
        def a(self) -> None: ...

    for flow in (D(), P()):
        assert isinstance(flow.state, dict)
        assert _is_uuid4(flow.state["id"])


@pytest.mark.parametrize(
    "initial",
    [
        pytest.param(WithId, id="class"),
        pytest.param(WithId(count=5), id="instance"),
        pytest.param({"count": 5}, id="dict"),
    ],
)
def test_initial_state_forms(initial: Any) -> None:
    """initial_state may be a model class, a model instance (copied) or a dict."""

    class F(Flow):  # type: ignore[type-arg]
        initial_state = initial

        @start()
        def a(self) -> Any:
            return self.state

    first, second = F(), F()
    if isinstance(initial, dict):
        assert first.state["count"] == 5
        first.state["count"] = 9
        assert second.state["count"] == 5
    else:
        assert isinstance(first.state, WithId)
        expected = 5 if isinstance(initial, WithId) else 0
        assert first.state.count == expected
        first.state.tags.append("mine")
        assert second.state.tags == []
        assert first.state.id != second.state.id


def test_inputs_set_and_validate_model_fields() -> None:
    """kickoff(inputs) sets model fields after validating them."""

    class F(Flow[WithId]):
        @start()
        def a(self) -> int:
            return self.state.count

    assert F().kickoff(inputs={"count": "41"}) == 41


def test_bad_input_value_is_clear_error_naming_field() -> None:
    """A value that fails validation raises StateValidationError naming the field path."""

    class F(Flow[WithId]):
        @start()
        def a(self) -> None: ...

    with pytest.raises(StateValidationError, match=r"state\.count: .*'many'"):
        F().kickoff(inputs={"count": "many"})
    with pytest.raises(ValueError):
        F().kickoff(inputs={"tags": [1, {"x": 2}]})


def test_unknown_input_field_is_rejected_for_models() -> None:
    """An input that is not a field of the model is named in the error."""

    class F(Flow[WithId]):
        @start()
        def a(self) -> None: ...

    with pytest.raises(StateValidationError, match="coutn"):
        F().kickoff(inputs={"coutn": 1})


def test_dict_state_takes_any_inputs() -> None:
    """Dict states accept any inputs as keys."""

    class F(Flow[dict]):  # type: ignore[type-arg]
        @start()
        def a(self) -> Any:
            return self.state["anything"]

    assert F().kickoff(inputs={"anything": [1, 2]}) == [1, 2]


def test_inputs_id_without_persistence_sets_the_run_id() -> None:
    """inputs={"id": X} without persistence just makes X the state's id."""

    class F(Flow[WithId]):
        @start()
        def a(self) -> str:
            return self.state.id

    assert F().kickoff(inputs={"id": "my-own-id"}) == "my-own-id"


def test_assigning_state_raises() -> None:
    """self.state = ... raises StateAssignmentError (also an AttributeError)."""

    class F(Flow[WithId]):
        @start()
        def a(self) -> None:
            self.state = WithId()  # type: ignore[misc]

    with pytest.raises(StateAssignmentError, match="cannot be replaced"):
        F().kickoff()
    with pytest.raises(AttributeError):
        F().state = WithId()  # type: ignore[misc]


def test_model_needing_arguments_is_a_clear_error() -> None:
    """A state model with required fields (no defaults) fails at Flow() naming them."""

    class Needs(BaseModel):
        required: int

    class F(Flow[Needs]):
        @start()
        def a(self) -> None: ...

    with pytest.raises(StateValidationError, match=r"state\.required"):
        F()


def test_unsupported_state_type_is_rejected() -> None:
    """Flow[int] is a configuration error."""
    with pytest.raises(FlowkitError, match="not supported"):

        class F(Flow[int]):  # type: ignore[type-var]
            @start()
            def a(self) -> None: ...


def test_new_ids_are_canonical_random_uuid4_strings() -> None:
    """A new state's id is a UUID4 in canonical text (version 4, the RFC 4122 variant,
    lower-case hex with dashes, exactly as str(uuid.uuid4()) writes it), and no two of
    many flows share one."""

    class Counted(Flow[WithId]):
        @start()
        def go(self) -> None:
            pass

    class Untyped(Flow):  # type: ignore[type-arg]
        @start()
        def go(self) -> None:
            pass

    ids = [Counted().flow_id for _ in range(200)] + [Untyped().flow_id for _ in range(200)]
    for value in ids:
        parsed = uuid.UUID(value)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == value
    assert len(set(ids)) == len(ids)
