"""The decode walk: JSON-ready data back to Python values, one decoder per tag.

The format is described in :mod:`flowkit._codec`. A malformed tagged value becomes a
:class:`~flowkit._codec_walk.Problem` of kind ``"corrupt"`` naming what is wrong with it.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from pydantic import SecretBytes, SecretStr

from flowkit._codec_walk import TAG_KEY, Problem, checkpoint_name, key_segment, locate
from flowkit._secrets import SecretCipher
from flowkit.exceptions import CorruptCheckpointError, SecretKeyError

_T = TypeVar("_T", datetime, time)

_NoneType = type(None)
_DECODE_LEAVES = frozenset({str, int, bool, float, _NoneType})


def decode_value(data: Any, cipher: SecretCipher | None) -> Any:
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
        return [x if type(x) in leaves else decode_value(x, cipher) for x in items]
    except Problem as problem:
        locate(((f"[{i}]", x) for i, x in enumerate(items)), decode_value, cipher, problem)


def _decode_plain_dict(mapping: dict[str, Any], cipher: SecretCipher | None) -> dict[str, Any]:
    leaves = _DECODE_LEAVES
    try:
        return {
            k: (v if type(v) in leaves else decode_value(v, cipher)) for k, v in mapping.items()
        }
    except Problem as problem:
        locate(((key_segment(k), v) for k, v in mapping.items()), decode_value, cipher, problem)


def _corrupt(detail: str) -> Problem:
    return Problem("corrupt", detail)


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
    except Problem:
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
            raise Problem("corrupt", f"map entry {index} is not a [key, value] pair")
        try:
            pairs.append([decode_value(pair[0], cipher), decode_value(pair[1], cipher)])
        except Problem as problem:
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
        raise Problem("no_cipher", "")
    try:
        return cipher.decrypt(payload)
    except SecretKeyError:
        raise Problem("wrong_key", "") from None


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
        return decode_value(data, cipher)
    except Problem as problem:
        where = path + "".join(reversed(problem.segments))
        raise problem.to_load_error(where, run_id, seq) from None
    except RecursionError:
        raise CorruptCheckpointError(
            f"{checkpoint_name(run_id, seq)} cannot be read back: it is nested too deeply.",
            run_id=run_id or "",
            seq=seq,
        ) from None
