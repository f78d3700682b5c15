"""State <-> JSON-ready data, without pickle, class names or eval.

:func:`encode` turns a state (a dict, or a Pydantic model's ``model_dump(mode="python")``)
into plain ``dict`` / ``list`` / ``str`` / ``int`` / ``float`` / ``bool`` / ``None``;
:func:`decode` turns that back. Values JSON has no type for are written as a small
tagged object, ``{"__fk__": TAG, "v": ...}``:

=============  ==========================================  ============================
tag            Python value                                ``v``
=============  ==========================================  ============================
bytes          ``bytes``                                   standard base64
bytearray      ``bytearray``                               standard base64
datetime       ``datetime`` (naive or aware)               ``isoformat()``
date           ``date``                                    ``isoformat()``
time           ``time`` (naive or aware)                   ``isoformat()``
timedelta      ``timedelta``                               ``[days, seconds, microseconds]``
uuid           ``UUID``                                    canonical string
decimal        ``Decimal``                                 ``str()`` (exact)
set            ``set``                                     items, sorted by their JSON text
frozenset      ``frozenset``                               items, sorted by their JSON text
tuple          ``tuple``                                   items
map            ``dict`` with a key that is not a ``str``   ``[[key, value], ...]``
dict           ``dict`` that has a ``"__fk__"`` key        the dict, taken literally
float          ``nan`` / ``inf`` / ``-inf``                ``"nan"`` / ``"inf"`` / ``"-inf"``
secret_str     ``pydantic.SecretStr``                      Fernet token
secret_bytes   ``pydantic.SecretBytes``                    Fernet token
=============  ==========================================  ============================

Some values are stored as something simpler and come back as that, which a Pydantic
state model turns back into the declared type when it validates the loaded data:

* an ``Enum`` member is stored as its ``.value``;
* a nested Pydantic model as its ``model_dump(mode="python")`` dict;
* a dataclass instance as a dict of its fields;
* subclasses of ``str`` / ``int`` / ``float`` / ``list`` / ``dict`` / ``tuple`` as the base
  type; an aware ``datetime`` / ``time`` keeps its UTC offset, not its ``tzinfo`` object
  (a ``ZoneInfo`` comes back as a fixed offset: the same instant);
* a dict whose keys encode to distinct plain strings (``StrEnum`` keys) as a plain dict.

A set of dataclasses or models comes back as a list of dicts, and a dict keyed by them
as a list of ``[key, value]`` pairs (dicts cannot be set members or keys).

Anything else — ``object()``, functions, generators, clients, sockets — raises
:class:`~flowkit.exceptions.UnserializableStateError` naming its path, such as
``state.items[3].payload``. The functions are pure, so that happens before anything is
written. The output never shares a mutable container with the input, in either
direction.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import fields
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation
from enum import Enum
from pathlib import Path, PurePath
from typing import Any, NoReturn, TypeVar
from uuid import UUID

from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic_core import MultiHostUrl, Url, to_jsonable_python

from flowkit._secrets import SecretCipher
from flowkit.exceptions import CorruptCheckpointError, SecretKeyError, UnserializableStateError

__all__ = ["TAG_KEY", "decode", "dumps", "encode", "loads"]

TAG_KEY = "__fk__"

_T = TypeVar("_T", datetime, time)

_NoneType = type(None)
# Values that are already JSON and need no work; checked by exact type, so that
# subclasses (an IntEnum is an int) take the slow path that knows about them.
_ENCODE_LEAVES = frozenset({str, int, bool, _NoneType})
_DECODE_LEAVES = frozenset({str, int, bool, float, _NoneType})
_isfinite = math.isfinite

_HOW_TO_FIX_TYPE = (
    "Convert it to a JSON-compatible value (str, int, float, bool, None, list, dict) or a "
    "supported rich type (bytes, datetime, date, time, timedelta, UUID, Decimal, Enum, set, "
    "tuple, dataclass, Pydantic model), or declare the field in a Pydantic state model with "
    "such a type. Keep live objects (clients, connections, files) out of the state."
)
_HOW_TO_SET_KEY = (
    "Set the FLOWKIT_SECRET_KEY environment variable to a passphrase or to a key made by "
    "flowkit._secrets.generate_key() (or pass the key explicitly)"
)


def encode(value: Any, *, path: str = "state", cipher: SecretCipher | None = None) -> Any:
    """Return ``value`` as JSON-ready data (see the module docstring for the format).

    Example::

        >>> encode({"when": date(2024, 5, 1), "tags": {"b", "a"}})
        {'when': {'__fk__': 'date', 'v': '2024-05-01'}, 'tags': {'__fk__': 'set', 'v': ['a', 'b']}}

    Args:
        value: the state, or any part of it.
        path: how error messages name ``value``; nested parts extend it
            (``state.items[3].payload``).
        cipher: encrypts ``SecretStr`` / ``SecretBytes`` values.

    Raises:
        UnserializableStateError: a value has no stored form (``.path`` names it).
        SecretKeyError: a secret value is found and ``cipher`` is ``None``.
    """
    try:
        return _encode(value, cipher)
    except _Problem as problem:
        raise problem.to_error(path + "".join(reversed(problem.segments))) from None
    except RecursionError:
        raise UnserializableStateError(
            f"{path} cannot be stored: it is nested too deeply or contains a reference to "
            "itself. Flatten the structure or break the cycle.",
            path=path,
        ) from None


def decode(
    data: Any,
    *,
    cipher: SecretCipher | None = None,
    run_id: str | None = None,
    seq: int | None = None,
    path: str = "state",
) -> Any:
    """Return the value that :func:`encode` turned into ``data``.

    ``run_id`` and ``seq`` only make error messages name the checkpoint.

    Raises:
        CorruptCheckpointError: a tagged value is malformed.
        SecretKeyError: a secret is found and ``cipher`` is ``None`` or holds another key.
    """
    try:
        return _decode(data, cipher)
    except _Problem as problem:
        where = path + "".join(reversed(problem.segments))
        raise problem.to_load_error(where, run_id, seq) from None
    except RecursionError:
        raise CorruptCheckpointError(
            f"{_checkpoint_name(run_id, seq)} cannot be read back: it is nested too deeply.",
            run_id=run_id or "",
            seq=seq,
        ) from None


def dumps(obj: Any) -> str:
    """Compact JSON text for data produced by :func:`encode` (NaN and infinities refused)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def loads(s: str | bytes, *, run_id: str | None = None, seq: int | None = None) -> Any:
    """Parse JSON text written by :func:`dumps`.

    Raises:
        CorruptCheckpointError: ``s`` is not valid JSON (names ``run_id`` / ``seq`` if given).
    """
    try:
        return json.loads(s)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptCheckpointError(
            f"{_checkpoint_name(run_id, seq)} cannot be read back: it is not valid JSON "
            f"({exc}). {_HOW_TO_RECOVER}",
            run_id=run_id or "",
            seq=seq,
        ) from None


# --- errors -------------------------------------------------------------------------------

_HOW_TO_RECOVER = (
    "The stored data is damaged or was not written by flowkit: restore it from a backup, "
    "fork the run from an earlier checkpoint, or delete the run."
)


class _Problem(Exception):
    """Raised deep in the walk; each container on the way out adds its path segment.

    Building the path only on failure keeps the common case free of string work.
    """

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.segments: list[str] = []

    def to_error(self, path: str) -> Exception:
        if self.kind == "secret":
            return SecretKeyError(
                f"{path} is a {self.detail} and secrets are only stored encrypted, but no "
                f"secret key is configured. {_HOW_TO_SET_KEY}, or keep the secret out of the "
                "state (read it from the environment where it is used)."
            )
        if self.kind == "key":
            return UnserializableStateError(
                f"{path} cannot be stored: it has a dict key of type {self.detail}. "
                f"{_HOW_TO_FIX_TYPE}",
                path=path,
            )
        return UnserializableStateError(
            f"{path} cannot be stored: values of type {self.detail} have no stored form. "
            f"{_HOW_TO_FIX_TYPE}",
            path=path,
        )

    def to_load_error(self, path: str, run_id: str | None, seq: int | None) -> Exception:
        name = _checkpoint_name(run_id, seq)
        if self.kind == "no_cipher":
            return SecretKeyError(
                f"{name} holds an encrypted secret at {path}, but no secret key is "
                f"configured. {_HOW_TO_SET_KEY}: it must be the key the run was saved with."
            )
        if self.kind == "wrong_key":
            return SecretKeyError(
                f"{name} holds an encrypted secret at {path} that the configured key cannot "
                "decrypt: the run was saved with a different key (or the value is damaged). "
                "Set FLOWKIT_SECRET_KEY (or pass the key explicitly) to the key the run was "
                "saved with."
            )
        return CorruptCheckpointError(
            f"{name} cannot be read back: {self.detail} at {path}. {_HOW_TO_RECOVER}",
            run_id=run_id or "",
            seq=seq,
        )


class _NonStrKey(Exception):
    """Aborts the fast dict path: this dict needs the "map" form."""


def _non_str_key(key: object) -> NoReturn:
    raise _NonStrKey


def _checkpoint_name(run_id: str | None, seq: int | None) -> str:
    if run_id is None:
        return "A stored checkpoint" if seq is None else f"Checkpoint {seq}"
    if seq is None:
        return f"The stored state of run {run_id!r}"
    return f"Checkpoint {seq} of run {run_id!r}"


def _type_name(value: object) -> str:
    cls = type(value)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _key_segment(key: object) -> str:
    if type(key) is str and key.isidentifier():
        return f".{key}"
    text = repr(key)
    return f"[{text if len(text) <= 60 else text[:57] + '...'}]"


def _member_segment(item: object) -> str:
    text = repr(item)
    return "{" + (text if len(text) <= 60 else text[:57] + "...") + "}"


def _locate(
    parts: Iterable[tuple[str, Any]],
    walk: Callable[[Any, SecretCipher | None], Any],
    cipher: SecretCipher | None,
    original: _Problem,
) -> NoReturn:
    """Walk ``parts`` again one by one to find which one failed, and add its segment.

    Containers use comprehensions (fast) and only pay for this on failure; the walk is
    deterministic, so the same part fails again.
    """
    for segment, part in parts:
        try:
            walk(part, cipher)
        except _Problem as problem:
            problem.segments.append(segment)
            raise
    raise original


# --- encode -------------------------------------------------------------------------------


def _encode(value: Any, cipher: SecretCipher | None) -> Any:
    cls = type(value)
    if cls in _ENCODE_LEAVES:
        return value
    if cls is dict:
        return _encode_dict(value, cipher)
    if cls is list:
        return _encode_list(value, cipher)
    if cls is float:
        return value if _isfinite(value) else _encode_float(value)
    return _encode_other(value, cipher)


def _encode_float(value: float) -> Any:
    if _isfinite(value):
        return value
    text = "nan" if value != value else ("inf" if value > 0 else "-inf")
    return {TAG_KEY: "float", "v": text}


def _encode_list(items: Iterable[Any], cipher: SecretCipher | None) -> list[Any]:
    try:
        return [x if type(x) in _ENCODE_LEAVES else _encode(x, cipher) for x in items]
    except _Problem as problem:
        _locate(((f"[{i}]", x) for i, x in enumerate(items)), _encode, cipher, problem)


def _encode_dict(mapping: dict[Any, Any], cipher: SecretCipher | None) -> Any:
    leaves = _ENCODE_LEAVES
    try:
        out = {
            (k if type(k) is str else _non_str_key(k)): (
                v if type(v) in leaves else _encode(v, cipher)
            )
            for k, v in mapping.items()
        }
    except _NonStrKey:
        return _encode_map(mapping, cipher)
    except _Problem as problem:
        _locate(((_key_segment(k), v) for k, v in mapping.items()), _encode, cipher, problem)
    if TAG_KEY in out:
        return {TAG_KEY: "dict", "v": out}
    return out


def _encode_map(mapping: dict[Any, Any], cipher: SecretCipher | None) -> Any:
    pairs: list[list[Any]] = []
    for key, value in mapping.items():
        segment = _key_segment(key)
        try:
            encoded_key = _encode(key, cipher)
        except _Problem as problem:
            if problem.kind == "type" and not problem.segments:
                problem.kind = "key"
            problem.segments.append(segment)
            raise
        try:
            pairs.append([encoded_key, _encode(value, cipher)])
        except _Problem as problem:
            problem.segments.append(segment)
            raise
    # Keys that became distinct plain strings (StrEnum members, str subclasses) need no map.
    if all(type(k) is str for k, _ in pairs):
        plain = {k: v for k, v in pairs}
        if len(plain) == len(pairs):
            return {TAG_KEY: "dict", "v": plain} if TAG_KEY in plain else plain
    return {TAG_KEY: "map", "v": pairs}


def _encode_members(tag: str, items: set[Any] | frozenset[Any], cipher: SecretCipher | None) -> Any:
    encoded = []
    for item in items:
        try:
            encoded.append(_encode(item, cipher))
        except _Problem as problem:
            problem.segments.append(_member_segment(item))
            raise
    if len(encoded) > 1:
        encoded.sort(key=_sort_key)
    return {TAG_KEY: tag, "v": encoded}


def _sort_key(encoded: Any) -> str:
    return json.dumps(encoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _encode_other(value: Any, cipher: SecretCipher | None) -> Any:
    exact = _EXACT_ENCODERS.get(type(value))
    if exact is not None:
        return exact(value, cipher)
    # Subclasses and the rest. Order matters: Enum before its str/int mixins, datetime
    # before date (a subclass).
    if isinstance(value, Enum):
        return _encode(value.value, cipher)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return _encode_float(float.__float__(value))
    if isinstance(value, dict):
        return _encode_dict(value, cipher)
    if isinstance(value, list):
        return _encode_list(value, cipher)
    if isinstance(value, tuple):
        return {TAG_KEY: "tuple", "v": _encode_list(value, cipher)}
    if isinstance(value, datetime):
        return {TAG_KEY: "datetime", "v": value.isoformat()}
    if isinstance(value, date):
        return {TAG_KEY: "date", "v": value.isoformat()}
    if isinstance(value, time):
        return {TAG_KEY: "time", "v": value.isoformat()}
    if isinstance(value, timedelta):
        return {TAG_KEY: "timedelta", "v": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, UUID):
        return {TAG_KEY: "uuid", "v": str(value)}
    if isinstance(value, Decimal):
        return {TAG_KEY: "decimal", "v": str(value)}
    if isinstance(value, bytes):
        return {TAG_KEY: "bytes", "v": _b64_text(value)}
    if isinstance(value, bytearray):
        return {TAG_KEY: "bytearray", "v": _b64_text(value)}
    if isinstance(value, frozenset):
        return _encode_members("frozenset", value, cipher)
    if isinstance(value, set):
        return _encode_members("set", value, cipher)
    if isinstance(value, SecretStr):
        if cipher is None:
            raise _Problem("secret", "SecretStr")
        token = cipher.encrypt(value.get_secret_value().encode("utf-8"))
        return {TAG_KEY: "secret_str", "v": token}
    if isinstance(value, SecretBytes):
        if cipher is None:
            raise _Problem("secret", "SecretBytes")
        return {TAG_KEY: "secret_bytes", "v": cipher.encrypt(value.get_secret_value())}
    if isinstance(value, PurePath):
        return {TAG_KEY: "path", "v": str(value)}
    # Interfaces subclass addresses: test them first.
    if isinstance(value, (ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        return {TAG_KEY: "ip_interface", "v": str(value)}
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return {TAG_KEY: "ip_address", "v": str(value)}
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return {TAG_KEY: "ip_network", "v": str(value)}
    if isinstance(value, (Url, MultiHostUrl)) or type(value).__module__.startswith("pydantic."):
        # Pydantic's own field types (URLs, DSNs, ...) stay objects in python mode; the
        # model turns their JSON form back into one on load.
        return _encode(to_jsonable_python(value), cipher)
    if isinstance(value, BaseModel):
        return _encode(value.model_dump(mode="python"), cipher)
    if hasattr(type(value), "__dataclass_fields__") and not isinstance(value, type):
        return _encode_dict({f.name: getattr(value, f.name) for f in fields(value)}, cipher)
    raise _Problem("type", _type_name(value))


def _b64_text(value: bytes | bytearray) -> str:
    return base64.b64encode(value).decode("ascii")


# The common rich types by exact class: one dict lookup instead of a chain of isinstance.
_EXACT_ENCODERS: dict[type, Callable[[Any, SecretCipher | None], Any]] = {
    datetime: lambda v, c: {TAG_KEY: "datetime", "v": v.isoformat()},
    date: lambda v, c: {TAG_KEY: "date", "v": v.isoformat()},
    time: lambda v, c: {TAG_KEY: "time", "v": v.isoformat()},
    timedelta: lambda v, c: {TAG_KEY: "timedelta", "v": [v.days, v.seconds, v.microseconds]},
    UUID: lambda v, c: {TAG_KEY: "uuid", "v": str(v)},
    Decimal: lambda v, c: {TAG_KEY: "decimal", "v": str(v)},
    bytes: lambda v, c: {TAG_KEY: "bytes", "v": _b64_text(v)},
    bytearray: lambda v, c: {TAG_KEY: "bytearray", "v": _b64_text(v)},
    tuple: lambda v, c: {TAG_KEY: "tuple", "v": _encode_list(v, c)},
    set: lambda v, c: _encode_members("set", v, c),
    frozenset: lambda v, c: _encode_members("frozenset", v, c),
}


# --- decode -------------------------------------------------------------------------------


def _decode(data: Any, cipher: SecretCipher | None) -> Any:
    cls = type(data)
    if cls is dict:
        if TAG_KEY in data:
            return _decode_tagged(data, cipher)
        return _decode_plain_dict(data, cipher)
    if cls is list:
        return _decode_list(data, cipher)
    return data


def _decode_list(items: list[Any], cipher: SecretCipher | None) -> list[Any]:
    leaves = _DECODE_LEAVES
    try:
        return [x if type(x) in leaves else _decode(x, cipher) for x in items]
    except _Problem as problem:
        _locate(((f"[{i}]", x) for i, x in enumerate(items)), _decode, cipher, problem)


def _decode_plain_dict(mapping: dict[str, Any], cipher: SecretCipher | None) -> dict[str, Any]:
    leaves = _DECODE_LEAVES
    try:
        return {k: (v if type(v) in leaves else _decode(v, cipher)) for k, v in mapping.items()}
    except _Problem as problem:
        _locate(((_key_segment(k), v) for k, v in mapping.items()), _decode, cipher, problem)


def _corrupt(detail: str) -> _Problem:
    return _Problem("corrupt", detail)


def _decode_tagged(data: dict[str, Any], cipher: SecretCipher | None) -> Any:
    tag = data[TAG_KEY]
    if len(data) != 2 or "v" not in data:
        raise _corrupt(f"a tagged value ({TAG_KEY}={tag!r}) has keys {sorted(data)!r}")
    decoder = _TAG_DECODERS.get(tag) if type(tag) is str else None
    if decoder is None:
        raise _corrupt(f"unknown tag {TAG_KEY}={tag!r}")
    payload = data["v"]
    try:
        return decoder(payload, cipher)
    except _Problem:
        raise
    except (ValueError, TypeError, ArithmeticError, binascii.Error) as exc:
        raise _corrupt(f"a malformed {tag!r} value {_short(payload)} ({exc})") from None


def _short(payload: Any) -> str:
    text = repr(payload)
    return text if len(text) <= 80 else text[:77] + "..."


def _expect(payload: Any, cls: type, tag: str) -> None:
    if type(payload) is not cls:
        raise TypeError(f"expected a JSON {'string' if cls is str else 'array'} for {tag!r}")


def _b64(payload: Any) -> bytes:
    _expect(payload, str, "bytes")
    return base64.b64decode(payload, validate=True)


def _dec_bytes(payload: Any, cipher: SecretCipher | None) -> bytes:
    return _b64(payload)


def _dec_bytearray(payload: Any, cipher: SecretCipher | None) -> bytearray:
    return bytearray(_b64(payload))


def _dec_datetime(payload: Any, cipher: SecretCipher | None) -> datetime:
    _expect(payload, str, "datetime")
    return _exact_offset(datetime.fromisoformat(payload), payload)


def _exact_offset(value: _T, text: str) -> _T:
    # CPython 3.11 reads an offset below one second ("+00:00:00.000001") as UTC; isoformat
    # writes one only for a sub-minute offset with microseconds ("+HH:MM:SS.ffffff").
    if len(text) < 16 or text[-16] not in "+-" or text[-7] != ".":
        return value
    sign = -1 if text[-16] == "-" else 1
    hours, minutes, seconds = (int(part) for part in text[-15:-7].split(":"))
    offset = timedelta(hours=hours, minutes=minutes, seconds=seconds, microseconds=int(text[-6:]))
    return value.replace(tzinfo=timezone(sign * offset))


def _dec_date(payload: Any, cipher: SecretCipher | None) -> date:
    _expect(payload, str, "date")
    return date.fromisoformat(payload)


def _dec_time(payload: Any, cipher: SecretCipher | None) -> time:
    _expect(payload, str, "time")
    return _exact_offset(time.fromisoformat(payload), payload)


def _dec_timedelta(payload: Any, cipher: SecretCipher | None) -> timedelta:
    _expect(payload, list, "timedelta")
    if len(payload) != 3 or any(type(n) is not int for n in payload):
        raise ValueError("expected [days, seconds, microseconds] integers")
    days, seconds, microseconds = payload
    return timedelta(days=days, seconds=seconds, microseconds=microseconds)


def _dec_uuid(payload: Any, cipher: SecretCipher | None) -> UUID:
    _expect(payload, str, "uuid")
    return UUID(payload)


def _dec_path(payload: Any, cipher: SecretCipher | None) -> Path:
    _expect(payload, str, "path")
    return Path(payload)


def _dec_ip_address(payload: Any, cipher: SecretCipher | None) -> Any:
    _expect(payload, str, "ip_address")
    return ipaddress.ip_address(payload)


def _dec_ip_network(payload: Any, cipher: SecretCipher | None) -> Any:
    _expect(payload, str, "ip_network")
    return ipaddress.ip_network(payload)


def _dec_ip_interface(payload: Any, cipher: SecretCipher | None) -> Any:
    _expect(payload, str, "ip_interface")
    return ipaddress.ip_interface(payload)


def _dec_decimal(payload: Any, cipher: SecretCipher | None) -> Decimal:
    _expect(payload, str, "decimal")
    try:
        return Decimal(payload)
    except InvalidOperation:
        raise ValueError("not a decimal number") from None


def _dec_items(payload: Any, cipher: SecretCipher | None) -> list[Any]:
    _expect(payload, list, "items")
    return _decode_list(payload, cipher)


def _dec_set(payload: Any, cipher: SecretCipher | None) -> set[Any] | list[Any]:
    items = _dec_items(payload, cipher)
    try:
        return set(items)
    except TypeError:  # members stored as dicts (dataclasses, models): see module docstring
        return items


def _dec_frozenset(payload: Any, cipher: SecretCipher | None) -> frozenset[Any] | list[Any]:
    items = _dec_items(payload, cipher)
    try:
        return frozenset(items)
    except TypeError:
        return items


def _dec_tuple(payload: Any, cipher: SecretCipher | None) -> tuple[Any, ...]:
    return tuple(_dec_items(payload, cipher))


def _dec_map(payload: Any, cipher: SecretCipher | None) -> dict[Any, Any] | list[list[Any]]:
    _expect(payload, list, "map")
    pairs: list[list[Any]] = []
    for index, pair in enumerate(payload):
        if type(pair) is not list or len(pair) != 2:
            raise _Problem("corrupt", f"map entry {index} is not a [key, value] pair")
        try:
            pairs.append([_decode(pair[0], cipher), _decode(pair[1], cipher)])
        except _Problem as problem:
            problem.segments.append(f"[{index}]")
            raise
    try:
        return {key: value for key, value in pairs}
    except TypeError:  # keys stored as dicts (dataclasses, models): see module docstring
        return pairs


def _dec_escaped_dict(payload: Any, cipher: SecretCipher | None) -> dict[str, Any]:
    if type(payload) is not dict:
        raise TypeError("expected a JSON object for 'dict'")
    return _decode_plain_dict(payload, cipher)


_SPECIAL_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _dec_float(payload: Any, cipher: SecretCipher | None) -> float:
    if type(payload) is not str or payload not in _SPECIAL_FLOATS:
        raise ValueError("expected 'nan', 'inf' or '-inf'")
    return _SPECIAL_FLOATS[payload]


def _decrypt(payload: Any, cipher: SecretCipher | None) -> bytes:
    _expect(payload, str, "secret")
    if cipher is None:
        raise _Problem("no_cipher", "")
    try:
        return cipher.decrypt(payload)
    except SecretKeyError:
        raise _Problem("wrong_key", "") from None


def _dec_secret_str(payload: Any, cipher: SecretCipher | None) -> SecretStr:
    return SecretStr(_decrypt(payload, cipher).decode("utf-8"))


def _dec_secret_bytes(payload: Any, cipher: SecretCipher | None) -> SecretBytes:
    return SecretBytes(_decrypt(payload, cipher))


_TAG_DECODERS: dict[str, Callable[[Any, SecretCipher | None], Any]] = {
    "bytes": _dec_bytes,
    "bytearray": _dec_bytearray,
    "datetime": _dec_datetime,
    "date": _dec_date,
    "time": _dec_time,
    "timedelta": _dec_timedelta,
    "uuid": _dec_uuid,
    "path": _dec_path,
    "ip_address": _dec_ip_address,
    "ip_network": _dec_ip_network,
    "ip_interface": _dec_ip_interface,
    "decimal": _dec_decimal,
    "set": _dec_set,
    "frozenset": _dec_frozenset,
    "tuple": _dec_tuple,
    "map": _dec_map,
    "dict": _dec_escaped_dict,
    "float": _dec_float,
    "secret_str": _dec_secret_str,
    "secret_bytes": _dec_secret_bytes,
}
