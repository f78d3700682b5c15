"""flowkit._codec: states to JSON-ready data and back, with paths in every error."""

from __future__ import annotations

import ipaddress
import json
import math
import socket
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import Enum, IntEnum
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, SecretBytes, SecretStr

from flowkit._codec import TAG_KEY, decode, dumps, encode, loads
from flowkit._secrets import SecretCipher, generate_key
from flowkit.exceptions import CorruptCheckpointError, SecretKeyError, UnserializableStateError


class Color(Enum):
    RED = "red"
    BLUE = "blue"


class Level(IntEnum):
    LOW = 1
    HIGH = 2


class Mode(str, Enum):
    FAST = "fast"


@dataclass
class Point:
    x: int
    label: bytes


def typed(value: Any) -> Any:
    """A comparable form of ``value`` that also tells 1, 1.0 and True apart, NaN equal to NaN,
    and naive from aware datetimes (by offset)."""
    cls = type(value)
    if cls is float:
        return ("float", "nan" if math.isnan(value) else value)
    if cls is dict:
        return ("dict", frozenset((typed(k), typed(v)) for k, v in value.items()))
    if cls in (list, tuple):
        return (cls.__name__, tuple(typed(v) for v in value))
    if cls in (set, frozenset):
        return (cls.__name__, frozenset(typed(v) for v in value))
    if cls is bytearray:
        return (cls.__name__, bytes(value))
    if cls in (datetime, time):
        return (cls.__name__, value, value.isoformat())
    return (cls.__name__, value)


def round_trip(value: Any, cipher: SecretCipher | None = None) -> Any:
    """Encode, write as JSON text, read it back, decode."""
    return decode(loads(dumps(encode(value, cipher=cipher))), cipher=cipher)


# --- each supported type ---------------------------------------------------------------------

UTC_PLUS_0530 = timezone(timedelta(hours=5, minutes=30))
ODD_OFFSET = timezone(-timedelta(hours=3, minutes=7, seconds=11, microseconds=5))
TINY_OFFSET = timezone(timedelta(microseconds=1))  # CPython 3.11's fromisoformat reads it as UTC

SUPPORTED = [
    pytest.param(None, id="none"),
    pytest.param(True, id="bool"),
    pytest.param(-(2**70), id="big-int"),
    pytest.param(0.1, id="float"),
    pytest.param(-0.0, id="negative-zero"),
    pytest.param(math.inf, id="inf"),
    pytest.param(-math.inf, id="minus-inf"),
    pytest.param(math.nan, id="nan"),
    pytest.param("héllo \x00 ✓", id="str"),
    pytest.param(b"\xff\xfe\x00 not utf-8", id="bytes"),
    pytest.param(bytearray(b"\x00\x01"), id="bytearray"),
    pytest.param(datetime(2024, 2, 29, 23, 59, 59, 999999), id="naive-datetime"),
    pytest.param(datetime(2024, 1, 1, 12, tzinfo=timezone.utc), id="utc-datetime"),
    pytest.param(datetime(2024, 1, 1, 12, 0, 0, 1, tzinfo=UTC_PLUS_0530), id="offset-datetime"),
    pytest.param(datetime(1, 1, 1, tzinfo=ODD_OFFSET), id="odd-offset-datetime"),
    pytest.param(datetime(2000, 1, 1, tzinfo=TINY_OFFSET), id="sub-second-offset-datetime"),
    pytest.param(time(0, tzinfo=timezone(-timedelta(microseconds=7))), id="sub-second-offset-time"),
    pytest.param(date(1999, 12, 31), id="date"),
    pytest.param(time(7, 8, 9, 10), id="naive-time"),
    pytest.param(time(7, 8, tzinfo=UTC_PLUS_0530), id="aware-time"),
    pytest.param(timedelta(days=-3, seconds=5, microseconds=7), id="timedelta"),
    pytest.param(UUID("12345678-1234-5678-1234-567812345678"), id="uuid"),
    pytest.param(Decimal("1.10"), id="decimal-keeps-trailing-zero"),
    pytest.param(Decimal("-1E+30"), id="decimal-exponent"),
    pytest.param({1, 2, 3}, id="set"),
    pytest.param(frozenset({"a", (1, 2)}), id="frozenset"),
    pytest.param(set(), id="empty-set"),
    pytest.param((1, "a", (None,)), id="tuple"),
    pytest.param((), id="empty-tuple"),
    pytest.param({1: "a", (2, 3): "b", None: "c", False: "d"}, id="non-str-keys"),
    pytest.param({TAG_KEY: "bytes", "v": "looks like a tag"}, id="user-dict-with-tag-key"),
    pytest.param({"a": {TAG_KEY: 1}}, id="nested-tag-key"),
    pytest.param({1: {TAG_KEY: 2}}, id="tag-key-under-int-key"),
    pytest.param([[], {}, [{}]], id="empty-containers"),
]


@pytest.mark.parametrize("value", SUPPORTED)
def test_supported_value_round_trips_exactly(value: Any) -> None:
    """Every supported type comes back with the same value and the same type."""
    assert typed(round_trip(value)) == typed(value)


@pytest.mark.parametrize("value", SUPPORTED)
def test_encoded_value_is_strict_json(value: Any) -> None:
    """Encoded output is JSON without NaN/Infinity and survives a JSON text round trip."""
    encoded = encode(value)
    text = json.dumps(encoded, allow_nan=False)
    assert json.loads(text) == encoded


def test_aware_and_naive_datetimes_keep_their_offsets() -> None:
    """Naive stays naive; aware keeps its exact UTC offset and microseconds."""
    naive = datetime(2024, 5, 1, 8, 30, 0, 123456)
    aware = datetime(2024, 5, 1, 8, 30, 0, 123456, tzinfo=UTC_PLUS_0530)
    back_naive, back_aware = round_trip([naive, aware])
    assert back_naive.tzinfo is None
    assert back_naive == naive
    assert back_aware.utcoffset() == timedelta(hours=5, minutes=30)
    assert back_aware.microsecond == 123456
    assert back_aware == aware


def test_bool_stays_bool_and_int_stays_int() -> None:
    """True is not turned into 1, nor 1 into True, even as set members and dict keys."""
    value = {"flag": True, "n": 1, "s": {True, 2}, "k": {False: 0, 5: 1}}
    assert typed(round_trip(value)) == typed(value)


def test_enums_are_stored_as_their_values() -> None:
    """Enum -> .value (IntEnum -> int, str-mixin Enum -> str); a model restores the member."""
    assert encode([Color.RED, Level.HIGH, Mode.FAST]) == ["red", 2, "fast"]
    assert type(encode(Level.HIGH)) is int
    assert type(encode(Mode.FAST)) is str


def test_str_enum_keys_give_a_plain_dict() -> None:
    """Keys that encode to distinct strings need no "map" form."""
    assert encode({Mode.FAST: 1}) == {"fast": 1}


def test_subclasses_of_builtins_become_the_builtin() -> None:
    """str/int/float/dict/list subclasses are stored as their base type."""

    class Name(str):
        def __str__(self) -> str:
            return "overridden"

    ordered = OrderedDict(a=1)
    encoded = encode({"name": Name("ada"), "ordered": ordered})
    assert encoded == {"name": "ada", "ordered": {"a": 1}}
    assert type(encoded["name"]) is str
    assert type(encoded["ordered"]) is dict


def test_nested_model_and_dataclass_become_dicts() -> None:
    """A nested BaseModel is its python-mode dump; a dataclass is a dict of its fields."""

    class Inner(BaseModel):
        when: date
        color: Color

    value = {"inner": Inner(when=date(2024, 1, 2), color=Color.BLUE), "pt": Point(3, b"\xff")}
    assert round_trip(value) == {
        "inner": {"when": date(2024, 1, 2), "color": "blue"},
        "pt": {"x": 3, "label": b"\xff"},
    }


def test_set_of_dataclasses_comes_back_as_list_of_dicts() -> None:
    """Members stored as dicts cannot form a set again; they come back as a list."""

    @dataclass(frozen=True)
    class Tag:
        name: str

    assert round_trip({Tag("a")}) == [{"name": "a"}]


def test_set_encoding_is_deterministic() -> None:
    """Equal sets encode identically whatever their insertion order."""
    items = [f"item-{i}" for i in range(50)] + [(1, 2), 3, None]
    one = dumps(encode(set(items)))
    other = dumps(encode(set(reversed(items))))
    assert one == other


def test_tag_format_is_stable() -> None:
    """The stored form of tagged values (read by other processes and versions) is fixed."""
    assert encode(b"hi") == {TAG_KEY: "bytes", "v": "aGk="}
    assert encode(datetime(2024, 1, 2, 3, 4, 5)) == {
        TAG_KEY: "datetime",
        "v": "2024-01-02T03:04:05",
    }
    assert encode({1: "a"}) == {TAG_KEY: "map", "v": [[1, "a"]]}
    assert encode({TAG_KEY: 1}) == {TAG_KEY: "dict", "v": {TAG_KEY: 1}}
    assert encode(math.nan) == {TAG_KEY: "float", "v": "nan"}
    assert encode(Decimal("0.10")) == {TAG_KEY: "decimal", "v": "0.10"}


def test_output_shares_no_containers_with_input() -> None:
    """Encoding and decoding copy, so a stored checkpoint cannot change under the user."""
    state = {"items": [1, 2], "nested": {"a": []}}
    encoded = encode(state)
    encoded["items"].append(3)
    encoded["nested"]["a"].append(1)
    assert state == {"items": [1, 2], "nested": {"a": []}}
    decoded = decode(encoded)
    decoded["items"].append(4)
    assert encoded["items"] == [1, 2, 3]


# --- property tests --------------------------------------------------------------------------

fixed_offsets = st.builds(
    timezone,
    st.timedeltas(
        min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
    ),
)
hashable_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.binary(),
    st.datetimes(),
    st.datetimes(timezones=fixed_offsets),
    st.dates(),
    st.times(),
    st.times(timezones=fixed_offsets),
    st.timedeltas(),
    st.uuids(),
    st.decimals(allow_nan=False, allow_infinity=True),
)
hashables = st.recursive(
    hashable_leaves,
    lambda inner: st.one_of(
        st.tuples(inner, inner),
        st.lists(inner, max_size=3).map(tuple),
        st.frozensets(inner, max_size=3),
    ),
    max_leaves=8,
)
# Keys that look like tags are the interesting strings.
str_keys = st.one_of(st.text(max_size=8), st.sampled_from([TAG_KEY, "v", "", "a b"]))
values = st.recursive(
    st.one_of(hashable_leaves, st.binary().map(bytearray)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.sets(hashables, max_size=4),
        st.frozensets(hashables, max_size=4),
        st.dictionaries(str_keys, inner, max_size=4),
        st.dictionaries(hashables, inner, max_size=4),
    ),
    max_leaves=30,
)
dict_states = st.dictionaries(str_keys, values, max_size=6)


@settings(max_examples=250, suppress_health_check=[HealthCheck.too_slow])
@given(dict_states)
def test_property_dict_state_round_trips_through_strict_json(state: dict[str, Any]) -> None:
    """For random nested states of every type, encode gives JSON that passes
    json.dumps(allow_nan=False), and decoding it gives the state back, types included."""
    encoded = encode(state)
    text = json.dumps(encoded, allow_nan=False)
    assert typed(decode(encoded)) == typed(state)
    assert typed(decode(json.loads(text))) == typed(state)


@settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow])
@given(dict_states)
def test_property_encoding_is_deterministic(state: dict[str, Any]) -> None:
    """Encoding the decoded state again gives the same JSON text."""
    once = dumps(encode(state))
    assert dumps(encode(decode(loads(once)))) == once


# --- pydantic models -------------------------------------------------------------------------


class Address(BaseModel):
    city: str
    tags: list[str] = Field(default_factory=list)


class Rich(BaseModel):
    id: str = "run-1"
    address: Address
    history: list[Address]
    created: datetime
    local: datetime
    birthday: date
    alarm: time
    timeout: timedelta
    key: UUID
    price: Decimal
    color: Color
    level: Level
    seen: set[int]
    frozen: frozenset[str]
    pair: tuple[int, str]
    raw: bytes
    by_id: dict[int, str]
    by_pair: dict[tuple[int, int], float]
    optional: str | None = None
    ratio: float


def rich_model() -> Rich:
    return Rich(
        address=Address(city="Oslo", tags=["a"]),
        history=[Address(city="Bergen"), Address(city="Tromsø", tags=["north"])],
        created=datetime(2024, 3, 10, 2, 30, 0, 7, tzinfo=UTC_PLUS_0530),
        local=datetime(2024, 3, 10, 2, 30),
        birthday=date(1990, 7, 4),
        alarm=time(6, 45),
        timeout=timedelta(minutes=90, microseconds=1),
        key=UUID("87654321-4321-8765-4321-876543218765"),
        price=Decimal("19.990"),
        color=Color.BLUE,
        level=Level.HIGH,
        seen={3, 1, 2},
        frozen=frozenset({"x", "y"}),
        pair=(7, "seven"),
        raw=b"\x80\x81\xfe\xff",
        by_id={1: "one", 2: "two"},
        by_pair={(1, 2): 0.5},
        ratio=-math.inf,
    )


def test_pydantic_model_with_every_rich_type_round_trips() -> None:
    """model_validate(decode(encode(model_dump(mode="python")))) equals the model."""
    model = rich_model()
    stored = dumps(encode(model.model_dump(mode="python")))
    restored = Rich.model_validate(decode(loads(stored)))
    assert restored == model
    assert restored.created.utcoffset() == timedelta(hours=5, minutes=30)
    assert restored.local.tzinfo is None
    assert type(restored.raw) is bytes


class Credentials(BaseModel):
    user: str
    api_key: SecretStr
    cert: SecretBytes


class WithSecrets(BaseModel):
    credentials: Credentials


def secret_model() -> WithSecrets:
    return WithSecrets(
        credentials=Credentials(
            user="ada", api_key=SecretStr("sk-123456"), cert=SecretBytes(b"\xff")
        )
    )


def test_secrets_are_encrypted_and_round_trip() -> None:
    """SecretStr/SecretBytes are stored as ciphertext and come back with a cipher."""
    cipher = SecretCipher(generate_key())
    model = secret_model()
    stored = dumps(encode(model.model_dump(mode="python"), cipher=cipher))
    assert "sk-123456" not in stored
    assert '"secret_str"' in stored
    assert '"secret_bytes"' in stored
    restored = WithSecrets.model_validate(decode(loads(stored), cipher=cipher))
    assert restored.credentials.api_key.get_secret_value() == "sk-123456"
    assert restored.credentials.cert.get_secret_value() == b"\xff"


def test_secret_without_key_names_the_field() -> None:
    """No cipher: SecretKeyError names the path and says how to provide a key."""
    with pytest.raises(SecretKeyError) as info:
        encode(secret_model().model_dump(mode="python"))
    message = str(info.value)
    assert "state.credentials.api_key" in message
    assert "FLOWKIT_SECRET_KEY" in message


def test_secret_without_key_on_load_names_run_and_seq() -> None:
    """Loading an encrypted secret with no key: SecretKeyError naming run, seq and path."""
    stored = encode({"token": SecretStr("x")}, cipher=SecretCipher(generate_key()))
    with pytest.raises(SecretKeyError) as info:
        decode(stored, run_id="run-7", seq=4)
    message = str(info.value)
    assert "'run-7'" in message
    assert "4" in message
    assert "state.token" in message
    assert "FLOWKIT_SECRET_KEY" in message


def test_secret_with_wrong_key_on_load() -> None:
    """Loading with another key: SecretKeyError, not a corrupt-checkpoint error or a crash."""
    stored = encode({"token": SecretStr("x")}, cipher=SecretCipher(generate_key()))
    with pytest.raises(SecretKeyError, match="different key"):
        decode(stored, cipher=SecretCipher(generate_key()), run_id="r", seq=1)


# --- unserializable values: errors name the path --------------------------------------------


def _gen() -> Any:
    yield 1


@pytest.mark.parametrize(
    ("state", "path", "type_name"),
    [
        pytest.param(
            {"items": [0, 1, 2, {"payload": object()}]},
            "state.items[3].payload",
            "object",
            id="list-then-key",
        ),
        pytest.param(
            {"key with space": object()}, "state['key with space']", "object", id="quoted-key"
        ),
        pytest.param({"f": lambda: None}, "state.f", "function", id="function"),
        pytest.param({"g": _gen()}, "state.g", "generator", id="generator"),
        pytest.param({"lock": threading.Lock()}, "state.lock", "lock", id="lock"),
        pytest.param({"t": (1, object())}, "state.t[1]", "object", id="tuple"),
        pytest.param({"m": {5: object()}}, "state.m[5]", "object", id="value-under-int-key"),
        pytest.param({"m": {object(): 1}}, "state.m[<object object", "object", id="bad-key"),
        pytest.param(
            {"s": {(1, object())}}, "state.s{(1, <object object", "object", id="set-member"
        ),
        pytest.param({"p": Point(1, object())}, "state.p.label", "object", id="dataclass-field"),  # type: ignore[arg-type]
        pytest.param({"c": Point}, "state.c", "type", id="dataclass-class"),
        pytest.param({"mv": memoryview(b"x")}, "state.mv", "memoryview", id="memoryview"),
    ],
)
def test_unserializable_value_names_its_path(
    state: dict[str, Any], path: str, type_name: str
) -> None:
    """The error names the path and the type and says what to do."""
    with pytest.raises(UnserializableStateError) as info:
        encode(state)
    message = str(info.value)
    assert info.value.path.startswith(path)
    assert path in message
    assert type_name in message
    assert "JSON-compatible" in message
    assert "Pydantic model" in message


def test_socket_is_refused_with_module_qualified_type() -> None:
    """Types outside builtins are named with their module."""
    with socket.socket() as sock, pytest.raises(UnserializableStateError, match=r"socket\.socket"):
        encode({"conn": sock})


def test_unserializable_inside_pydantic_dump() -> None:
    """A model field holding an arbitrary object is named by its field path."""

    class Holder(BaseModel, arbitrary_types_allowed=True):
        items: list[Any]

    model = Holder(items=[1, {"payload": object()}])
    with pytest.raises(UnserializableStateError) as info:
        encode(model.model_dump(mode="python"))
    assert info.value.path == "state.items[1].payload"


def test_custom_root_path() -> None:
    """`path=` sets the root name used in messages."""
    with pytest.raises(UnserializableStateError) as info:
        encode({"x": object()}, path="inputs")
    assert info.value.path == "inputs.x"


def test_cycle_is_an_unserializable_error() -> None:
    """A self-referencing structure is refused clearly, not with a RecursionError."""
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(UnserializableStateError, match=r"references? to itself"):
        encode({"loop": loop})


def test_error_is_a_type_error() -> None:
    """UnserializableStateError is also a TypeError for code that does not know flowkit."""
    with pytest.raises(TypeError):
        encode(object())


# --- corrupt stored data ---------------------------------------------------------------------

CORRUPT = [
    pytest.param({TAG_KEY: "nope", "v": 1}, "unknown tag", id="unknown-tag"),
    pytest.param({TAG_KEY: 3, "v": 1}, "unknown tag", id="non-str-tag"),
    pytest.param({TAG_KEY: "bytes"}, "keys", id="missing-v"),
    pytest.param({TAG_KEY: "bytes", "v": "aGk=", "x": 1}, "keys", id="extra-key"),
    pytest.param({TAG_KEY: "bytes", "v": "***"}, "'bytes'", id="bad-base64"),
    pytest.param({TAG_KEY: "bytes", "v": 5}, "'bytes'", id="bytes-not-str"),
    pytest.param({TAG_KEY: "datetime", "v": "yesterday"}, "'datetime'", id="bad-datetime"),
    pytest.param({TAG_KEY: "date", "v": None}, "'date'", id="date-not-str"),
    pytest.param({TAG_KEY: "time", "v": "25:00"}, "'time'", id="bad-time"),
    pytest.param({TAG_KEY: "timedelta", "v": [1, 2]}, "'timedelta'", id="short-timedelta"),
    pytest.param({TAG_KEY: "timedelta", "v": [1, 2, "3"]}, "'timedelta'", id="str-in-timedelta"),
    pytest.param({TAG_KEY: "uuid", "v": "not-a-uuid"}, "'uuid'", id="bad-uuid"),
    pytest.param({TAG_KEY: "decimal", "v": "one"}, "'decimal'", id="bad-decimal"),
    pytest.param({TAG_KEY: "set", "v": "abc"}, "'set'", id="set-not-list"),
    pytest.param({TAG_KEY: "map", "v": [[1]]}, "pair", id="map-not-pairs"),
    pytest.param({TAG_KEY: "dict", "v": []}, "'dict'", id="escaped-dict-not-object"),
    pytest.param({TAG_KEY: "float", "v": "1.5"}, "'float'", id="bad-special-float"),
    pytest.param({TAG_KEY: "secret_str", "v": 1}, "'secret_str'", id="secret-not-str"),
]


@pytest.mark.parametrize(("stored", "detail"), CORRUPT)
def test_malformed_tag_is_a_corrupt_checkpoint(stored: Any, detail: str) -> None:
    """A damaged tagged value raises CorruptCheckpointError naming run, seq and path."""
    with pytest.raises(CorruptCheckpointError) as info:
        decode({"outer": [0, stored]}, run_id="run-42", seq=7)
    error = info.value
    assert error.run_id == "run-42"
    assert error.seq == 7
    message = str(error)
    assert "'run-42'" in message
    assert "Checkpoint 7" in message
    assert "state.outer[1]" in message
    assert detail in message


def test_corrupt_error_without_run_id() -> None:
    """Decoding outside a run still raises CorruptCheckpointError."""
    with pytest.raises(CorruptCheckpointError, match="A stored checkpoint"):
        decode({TAG_KEY: "nope", "v": 1})


def test_loads_of_damaged_json_is_a_corrupt_checkpoint() -> None:
    """Invalid JSON text raises CorruptCheckpointError, not a raw JSONDecodeError."""
    with pytest.raises(CorruptCheckpointError) as info:
        loads('{"a": ', run_id="r1", seq=2)
    assert (info.value.run_id, info.value.seq) == ("r1", 2)


def test_dumps_is_compact_and_keeps_unicode() -> None:
    """dumps writes no spaces and does not escape non-ASCII text."""
    assert dumps({"a": [1, "é"]}) == '{"a":[1,"é"]}'


def test_dumps_refuses_nan() -> None:
    """dumps never writes NaN (encode turns it into a tag first)."""
    with pytest.raises(ValueError):
        dumps({"x": math.nan})


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(Path("/tmp/some dir/file.txt"), id="path"),
        pytest.param(ipaddress.ip_address("10.1.2.3"), id="ipv4"),
        pytest.param(ipaddress.ip_address("::1"), id="ipv6"),
        pytest.param(ipaddress.ip_network("10.0.0.0/8"), id="network"),
        pytest.param(ipaddress.ip_interface("10.0.0.5/24"), id="interface"),
    ],
)
def test_paths_and_ip_values_round_trip(value: object) -> None:
    """Paths and ipaddress values (which Pydantic models keep as objects) round trip."""
    decoded = decode(json.loads(json.dumps(encode({"v": value}))))
    assert decoded == {"v": value} and type(decoded["v"]) is type(value)


def test_model_with_path_ip_and_url_fields_round_trips() -> None:
    """A state model with Path, IP and URL fields stores and validates back."""
    from pydantic import AnyUrl, BaseModel

    class Where(BaseModel):
        path: Path = Path("/srv/data")
        host: ipaddress.IPv4Address = ipaddress.IPv4Address("127.0.0.1")
        url: AnyUrl = AnyUrl("https://example.invalid/x?y=1")

    model = Where()
    data = decode(json.loads(json.dumps(encode(model.model_dump(mode="python")))))
    assert Where.model_validate(data) == model
