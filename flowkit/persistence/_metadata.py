"""Run metadata: the JSON object a caller attaches to a run (``kickoff(metadata=...)``),
kept in the run's ``info`` under ``"metadata"``, and the filter that finds runs by it.

A filter ``{"user": "u123", "ticket": 42}`` matches a run whose metadata has every one of
those keys with an equal JSON value: strings, ``null`` and booleans by type and value
(``true`` never matches ``1``), numbers by value (``42`` matches ``42.0``), arrays item by
item, objects key by key. Pure functions, no I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from flowkit.exceptions import FlowConfigurationError, InvalidArgumentError

#: the key of ``RunRecord.info`` that holds the metadata
INFO_KEY = "metadata"
#: the largest metadata (as compact JSON) a run may carry: it is stored on the run's row
#: and read back by every listing, so it is meant for labels, not payloads
MAX_METADATA_CHARS = 64 * 1024

_compact = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def check_metadata(value: Any, *, what: str = "metadata") -> dict[str, Any]:
    """``value`` as a plain JSON object (a copy), or an error naming the offending key.

    Raises:
        FlowConfigurationError: not a dict, a key that is not a string, or a value JSON
            cannot hold (names the key).
        InvalidArgumentError: NaN or infinity, or more than MAX_METADATA_CHARS of JSON.
    """
    if not isinstance(value, Mapping):
        raise FlowConfigurationError(
            f"{what} must be a dict of JSON values, e.g. {{'user': 'u123'}}; got "
            f"{type(value).__name__}."
        )
    for key, item in value.items():
        if not isinstance(key, str):
            raise FlowConfigurationError(
                f"{what} keys must be strings; got {key!r} ({type(key).__name__})."
            )
        _check_json(item, f"{what}[{key!r}]")
    text = _compact.encode(dict(value))
    if len(text) > MAX_METADATA_CHARS:
        raise InvalidArgumentError(
            f"{what} is {len(text)} characters of JSON, more than the {MAX_METADATA_CHARS} "
            "a run may carry; keep labels and ids in metadata and bigger data in the state."
        )
    copy: dict[str, Any] = json.loads(text)
    return copy


def _check_json(value: Any, path: str) -> None:
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgumentError(f"{path} is {value!r}, which JSON cannot hold.")
        return
    if isinstance(value, (list, tuple)):
        for n, item in enumerate(value):
            _check_json(item, f"{path}[{n}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise FlowConfigurationError(f"{path} has a key that is not a string: {key!r}.")
            _check_json(item, f"{path}[{key!r}]")
        return
    raise FlowConfigurationError(
        f"{path} is a {type(value).__name__}, which cannot be stored as JSON; use "
        "str/int/float/bool/None/list/dict."
    )


def metadata_of(info: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata stored in a run's ``info`` ({} when there is none)."""
    found = info.get(INFO_KEY)
    return found if isinstance(found, dict) else {}


def merged_info(info: Mapping[str, Any], metadata: Mapping[str, Any]) -> dict[str, Any]:
    """``info`` with ``metadata`` merged into its metadata (shallow; ``metadata`` wins)."""
    return {**info, INFO_KEY: {**metadata_of(info), **metadata}}


def json_equal(a: Any, b: Any) -> bool:
    """Equality of two JSON values (see the module doc): no ``True == 1``."""
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return False


def matches(info: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether a run with this ``info`` carries every key of ``wanted`` with an equal
    value."""
    stored = metadata_of(info)
    return all(key in stored and json_equal(stored[key], value) for key, value in wanted.items())


def like_patterns(wanted: Mapping[str, Any], escape: str = "!") -> list[str]:
    """SQL ``LIKE`` patterns (escaped with ``escape``) that every matching run's stored
    ``info`` text matches: it is written as compact JSON, so a wanted string, boolean or
    null appears as ``"key":value`` and a number, array or object at least as ``"key":``.
    They narrow a query in the database; :func:`matches` decides."""
    patterns = []
    for key, value in wanted.items():
        text = _compact.encode(key) + ":"
        if value is None or isinstance(value, (str, bool)):
            text += _compact.encode(value)
        patterns.append("%" + _escape_like(text, escape) + "%")
    return patterns


def _escape_like(text: str, escape: str) -> str:
    for char in (escape, "%", "_"):
        text = text.replace(char, escape + char)
    return text
