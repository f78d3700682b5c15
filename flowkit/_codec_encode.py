"""The encode walk: a state to plain JSON-ready data, tagging what JSON has no type for.

The format is described in :mod:`flowkit._codec`. Dicts and lists of plain values take a
fast path (comprehensions, exact type checks); everything else goes through
:func:`_encode_other`, which knows the rich types, subclasses and Pydantic models.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import fields
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import PurePath
from typing import Any
from uuid import UUID

from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic_core import MultiHostUrl, Url, to_jsonable_python

from flowkit._codec_walk import (
    TAG_KEY,
    NonStrKey,
    Problem,
    key_segment,
    locate,
    member_segment,
    non_str_key,
    type_name,
)
from flowkit._secrets import SecretCipher
from flowkit._unchanged import MIN_ITEMS, UnchangedCache, fresh_copy, snapshot, unchanged
from flowkit.exceptions import UnserializableStateError

_NoneType = type(None)
# Values that are already JSON and need no work; checked by exact type, so that
# subclasses (an IntEnum is an int) take the slow path that knows about them.
_ENCODE_LEAVES = frozenset({str, int, bool, _NoneType})
_isfinite = math.isfinite


def encode_value(value: Any, cipher: SecretCipher | None) -> Any:
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
        return [x if type(x) in _ENCODE_LEAVES else encode_value(x, cipher) for x in items]
    except Problem as problem:
        locate(((f"[{i}]", x) for i, x in enumerate(items)), encode_value, cipher, problem)


def _encode_dict(mapping: dict[Any, Any], cipher: SecretCipher | None) -> Any:
    leaves = _ENCODE_LEAVES
    try:
        out = {
            (k if type(k) is str else non_str_key(k)): (
                v if type(v) in leaves else encode_value(v, cipher)
            )
            for k, v in mapping.items()
        }
    except NonStrKey:
        return _encode_map(mapping, cipher)
    except Problem as problem:
        locate(((key_segment(k), v) for k, v in mapping.items()), encode_value, cipher, problem)
    if TAG_KEY in out:
        return {TAG_KEY: "dict", "v": out}
    return out


def _encode_map(mapping: dict[Any, Any], cipher: SecretCipher | None) -> Any:
    pairs: list[list[Any]] = []
    for key, value in mapping.items():
        segment = key_segment(key)
        try:
            encoded_key = encode_value(key, cipher)
        except Problem as problem:
            if problem.kind == "type" and not problem.segments:
                problem.kind = "key"
            problem.segments.append(segment)
            raise
        try:
            pairs.append([encoded_key, encode_value(value, cipher)])
        except Problem as problem:
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
            encoded.append(encode_value(item, cipher))
        except Problem as problem:
            problem.segments.append(member_segment(item))
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
        return encode_value(value.value, cipher)
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
            raise Problem("secret", "SecretStr")
        token = cipher.encrypt(value.get_secret_value().encode("utf-8"))
        return {TAG_KEY: "secret_str", "v": token}
    if isinstance(value, SecretBytes):
        if cipher is None:
            raise Problem("secret", "SecretBytes")
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
        return encode_value(to_jsonable_python(value), cipher)
    if isinstance(value, BaseModel):
        return encode_value(value.model_dump(mode="python"), cipher)
    if hasattr(type(value), "__dataclass_fields__") and not isinstance(value, type):
        return _encode_dict({f.name: getattr(value, f.name) for f in fields(value)}, cipher)
    raise Problem("type", type_name(value))


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


# -- the top of a state: big fields that did not change are not walked again -----------

_fields: UnchangedCache[None] = UnchangedCache()


def encode_top(value: Any, cipher: SecretCipher | None) -> Any:
    """:func:`encode_value`, except that a big list or dict field of a top-level dict that
    is exactly as it was when last encoded (see :mod:`flowkit._unchanged`) is copied
    from its snapshot instead of walked again. The output is the same either way."""
    if type(value) is not dict:
        return encode_value(value, cipher)
    for item in value.values():
        kind = type(item)
        if (kind is list or kind is dict) and len(item) >= MIN_ITEMS:
            break
    else:  # nothing big: the plain walk
        return encode_value(value, cipher)
    if not all(type(key) is str for key in value):
        return encode_value(value, cipher)
    out: dict[str, Any] = {}
    for key, item in value.items():
        try:
            kind = type(item)
            if kind in _ENCODE_LEAVES:
                out[key] = item
            elif (kind is list or kind is dict) and len(item) >= MIN_ITEMS:
                out[key] = _encode_field(key, item, cipher)
            else:
                out[key] = encode_value(item, cipher)
        except Problem as problem:
            problem.segments.append(key_segment(key))
            raise
    if TAG_KEY in out:
        return {TAG_KEY: "dict", "v": out}
    return out


def _encode_field(key: str, value: Any, cipher: SecretCipher | None) -> Any:
    hit = _fields.get(key, value)
    if hit is not None:
        return fresh_copy(hit[0])
    encoded = encode_value(value, cipher)
    snap = snapshot(value)
    # Only values the walk left as they were (plain JSON: no tags, no secrets), so the
    # copy of the snapshot is exactly what the walk returns.
    if snap is not None and unchanged(encoded, snap):
        _fields.put(key, snap, None)
    return encoded


def encode(value: Any, *, path: str = "state", cipher: SecretCipher | None = None) -> Any:
    """Return ``value`` as JSON-ready data (the format is in :mod:`flowkit._codec`).

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
        return encode_top(value, cipher)
    except Problem as problem:
        raise problem.to_error(path + "".join(reversed(problem.segments))) from None
    except RecursionError:
        raise UnserializableStateError(
            f"{path} cannot be stored: it is nested too deeply or contains a reference to "
            "itself. Flatten the structure or break the cycle.",
            path=path,
        ) from None
