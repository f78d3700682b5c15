"""Big fields of any type (list, dict, model) that do not change are stored once per run,
and every change, in-place mutations included, is stored."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import (
    BaseModel,
    ConfigDict,
    PlainSerializer,
    computed_field,
    field_serializer,
    model_serializer,
)

from flowkit import Flow, FlowState, listen, persist, start
from flowkit._codec import encode
from flowkit._codec_encode import encode_value
from flowkit._state import StateAdapter
from flowkit.persistence import SQLiteFlowPersistence

WORDS = [f"word-{i:04d}-" + "x" * 40 for i in range(200)]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "flows.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SQLiteFlowPersistence]:
    backend = SQLiteFlowPersistence(db_path)
    yield backend
    backend.close()


def _blob_count(db_path: Path) -> int:
    with closing(sqlite3.connect(db_path)) as connection:
        return int(connection.execute("SELECT COUNT(*) FROM flowkit_blobs").fetchone()[0])


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: list(WORDS), id="list-of-str"),
        pytest.param(lambda: {w: w.upper() for w in WORDS}, id="dict-of-str"),
        pytest.param(lambda: [{"n": i, "w": w} for i, w in enumerate(WORDS)], id="list-of-dicts"),
        pytest.param(lambda: list(range(500)), id="list-of-ints"),
    ],
)
def test_unchanged_big_container_is_stored_once(
    store: SQLiteFlowPersistence, db_path: Path, make: Any
) -> None:
    """A big list or dict field saved five times with the same content (a new object
    each time) is one blob; the states read back are whole."""
    for n in range(5):
        store.save_state("r1", f"s{n}", {"id": "r1", "big": make(), "n": n})
    assert _blob_count(db_path) == 1
    assert store.load_state("r1") == {"id": "r1", "big": make(), "n": 4}


def test_list_mutated_in_place_between_saves_is_stored(
    store: SQLiteFlowPersistence, db_path: Path
) -> None:
    """The same list object, appended to and changed in place between saves, is stored
    as it was at each save."""
    items = list(WORDS)
    store.save_state("r1", "a", {"id": "r1", "items": items})
    items.append("appended")
    store.save_state("r1", "b", {"id": "r1", "items": items})
    items[0] = "replaced"
    store.save_state("r1", "c", {"id": "r1", "items": items})
    states = [checkpoint.state["items"] for checkpoint in store.history("r1")]
    assert states == [WORDS, [*WORDS, "appended"], ["replaced", *WORDS[1:], "appended"]]
    assert _blob_count(db_path) == 3


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param(1, True, id="int-to-bool"),
        pytest.param(1, 1.0, id="int-to-float"),
        pytest.param(0.0, -0.0, id="zero-to-negative-zero"),
        pytest.param(None, "None", id="none-to-text"),
    ],
)
def test_equal_but_differently_typed_value_is_stored(
    store: SQLiteFlowPersistence, before: Any, after: Any
) -> None:
    """A value replaced in place by one that compares equal but has other JSON (True for
    1, 1.0 for 1, -0.0 for 0.0) is stored as the new value."""
    items: list[Any] = [before] * 100
    store.save_state("r1", "a", {"id": "r1", "items": items})
    items[50] = after
    store.save_state("r1", "b", {"id": "r1", "items": items})
    stored = store.load_state("r1")
    assert stored is not None
    assert repr(stored["items"][50]) == repr(after)


def test_dict_key_order_change_is_stored(store: SQLiteFlowPersistence) -> None:
    """A big dict rebuilt with its keys in another order is stored in the new order."""
    forward = {w: w for w in WORDS}
    store.save_state("r1", "a", {"id": "r1", "d": forward})
    backward = dict(reversed(list(forward.items())))
    store.save_state("r1", "b", {"id": "r1", "d": backward})
    stored = store.load_state("r1")
    assert stored is not None and list(stored["d"]) == list(backward)


def test_nested_in_place_mutation_is_stored(store: SQLiteFlowPersistence) -> None:
    """A dict inside a big list, changed in place between saves, is stored changed."""
    rows = [{"n": i, "w": w} for i, w in enumerate(WORDS)]
    store.save_state("r1", "a", {"id": "r1", "rows": rows})
    rows[7]["w"] = "changed"
    store.save_state("r1", "b", {"id": "r1", "rows": rows})
    stored = store.load_state("r1")
    assert stored is not None and stored["rows"][7] == {"n": 7, "w": "changed"}


# -- through a flow: the engine's encoding of the state --------------------------------


class Doc(BaseModel):
    title: str
    lines: list[str]


class Notes(FlowState):
    items: list[str] = []
    tags: dict[str, str] = {}
    doc: Doc | None = None


def _notes_flow(backend: SQLiteFlowPersistence) -> type[Flow[Notes]]:
    @persist(backend)
    class NotesFlow(Flow[Notes]):
        @start()
        def load(self) -> None:
            self.state.items = list(WORDS)
            self.state.tags = {w: "t" for w in WORDS}
            self.state.doc = Doc(title="d", lines=list(WORDS))

        @listen(load)
        def idle(self) -> None:
            pass

        @listen(idle)
        def append(self) -> None:
            self.state.items.append("appended")

        @listen(append)
        def replace(self) -> None:
            self.state.items[3] = "replaced"
            self.state.tags[WORDS[0]] = "changed"

        @listen(replace)
        def edit_model(self) -> None:
            assert self.state.doc is not None
            self.state.doc.lines[0] = "first"

        @listen(edit_model)
        def idle_again(self) -> None:
            pass

    return NotesFlow


def test_flow_state_mutated_in_place_is_stored_at_every_step(
    store: SQLiteFlowPersistence, db_path: Path
) -> None:
    """A flow that mutates its list, dict and nested model fields in place between steps
    stores each step's state exactly; the steps that change nothing add no blob."""
    flow = _notes_flow(store)()
    flow.kickoff()
    states = {cp.method_name: cp.state for cp in store.history(flow.state.id)}
    assert states["idle"]["items"] == WORDS
    assert states["append"]["items"] == [*WORDS, "appended"]
    assert states["replace"]["items"][3] == "replaced"
    assert states["replace"]["tags"][WORDS[0]] == "changed"
    assert states["replace"]["doc"]["lines"][0] == WORDS[0]
    assert states["edit_model"]["doc"]["lines"][0] == "first"
    assert states["idle_again"] == states["edit_model"]
    # items, tags, doc at load; items at append; items and tags at replace; doc at edit.
    assert _blob_count(db_path) == 7


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"big": list(WORDS), "n": 1}, id="list"),
        pytest.param({"big": {"__fk__": "x", **{w: w for w in WORDS}}}, id="dict-with-tag-key"),
        pytest.param({"big": [float("nan")] * 40}, id="non-finite-floats"),
        pytest.param({"big": [(1, 2)] * 40}, id="tuples"),
        pytest.param({"big": {i: "x" for i in range(40)}}, id="int-keys"),
    ],
)
def test_codec_output_is_the_same_on_every_call(value: dict[str, Any]) -> None:
    """Encoding a state again (when its big fields may be taken from a snapshot) gives
    what the plain walk gives, in containers not shared with the input or earlier output."""
    first = encode(value)
    second = encode(value)
    assert first == second == encode_value(value, None)
    assert first["big"] is not second["big"] and second["big"] is not value["big"]


def test_unstorable_value_in_a_big_field_is_named_by_its_path() -> None:
    """An unstorable value deep in a big field is reported with its full path, as for
    small fields."""
    from flowkit.exceptions import UnserializableStateError

    big: list[Any] = list(WORDS)
    encode({"big": big})
    big[40] = object()
    with pytest.raises(UnserializableStateError) as info:
        encode({"big": big})
    assert info.value.path == "state.big[40]"


# -- the state as the journal hands it to the codec (StateAdapter.dump_for_codec) ------


class PlainContainers(FlowState):
    items: list[str] = []
    counts: dict[str, int] = {}
    nested: list[list[str]] = []
    n: int = 0


class Serialized(FlowState):
    items: list[str] = []

    @field_serializer("items")
    def upper(self, items: list[str]) -> list[str]:
        return [item.upper() for item in items]


class WholeModel(FlowState):
    items: list[str] = []

    @model_serializer(mode="wrap")
    def tagged(self, handler: Any) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        data["items"] = ["<", *data["items"], ">"]
        return data


class Annotated_(FlowState):
    items: Annotated[list[str], PlainSerializer(lambda v: ["x"] * len(v))] = []


class Computed(FlowState):
    items: list[str] = []

    @computed_field  # type: ignore[prop-decorator]
    @property
    def size(self) -> int:
        return len(self.items)


class Extra(FlowState):
    model_config = ConfigDict(extra="allow")
    items: list[str] = []


@pytest.mark.parametrize(
    "state",
    [
        PlainContainers(items=WORDS, counts={"a": 1}, nested=[["x"]], n=3),
        Serialized(items=WORDS),
        WholeModel(items=WORDS),
        Annotated_(items=WORDS),
        Computed(items=WORDS),
        Extra(items=WORDS, other=[1, 2]),
    ],
    ids=lambda s: type(s).__name__,
)
def test_dump_for_codec_gives_what_model_dump_gives(state: FlowState) -> None:
    """Same keys in the same order and equal values as model_dump, serializers and
    computed or extra fields included, and the same encoded state."""
    adapter = StateAdapter("F", type(state), None)
    fast, full = adapter.dump_for_codec(state), adapter.dump(state)
    assert list(fast) == list(full) and fast == full
    assert encode(fast, path="state", cipher=None) == encode(full, path="state", cipher=None)


def test_dump_for_codec_hands_plain_containers_over_and_the_codec_copies_them() -> None:
    """Only plain list/dict fields are handed over as they are (the nested list is not
    plain); the codec's output never shares them, so a later in-place change of the
    state does not reach what was encoded; a field holding another type at run time
    (no validation on assignment) falls back to model_dump."""
    state = PlainContainers(items=list(WORDS), counts={"a": 1}, nested=[["x"]])
    adapter = StateAdapter("F", PlainContainers, None)
    data = adapter.dump_for_codec(state)
    assert data["items"] is state.items and data["counts"] is state.counts
    assert data["nested"] is not state.nested
    encoded = encode(data, path="state", cipher=None)
    state.items.append("later")
    state.counts["b"] = 2
    assert encoded["items"] == WORDS and encoded["counts"] == {"a": 1}
    state.items = ("a", "tuple")  # type: ignore[assignment]
    with pytest.warns(UserWarning, match="serialized value may not be as expected"):
        assert adapter.dump_for_codec(state) == adapter.dump(state)
