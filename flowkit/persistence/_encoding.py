"""JSON text for states, meta and info, and the content-addressed blobs for big fields.

A top-level state field whose JSON is longer than :data:`BLOB_THRESHOLD` characters is
stored once per run under the SHA-256 of its JSON; the checkpoint's state JSON holds
``{"__flowkit_blob__": "<hash>"}`` in its place. A small value that happens to look like
such a marker is stored as a blob too, so a marker in stored state is never user data.
A big field of any type that is as it was at the last save is not encoded or hashed
again: a ``str`` by identity (immutable), a list or dict by an exact comparison with a
private snapshot (:mod:`flowkit._unchanged`), which sees any in-place mutation.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flowkit._unchanged import MIN_ITEMS, UnchangedCache, snapshot
from flowkit.exceptions import CorruptCheckpointError, UnserializableStateError

BLOB_MARKER = "__flowkit_blob__"
BLOB_THRESHOLD = 1024
# Longest string value a state may hold to be encoded in one call (see _small_state_text).
_FLAT_STR = 256

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def dumps(value: Any, *, what: str) -> str:
    """Compact JSON text; ``what`` names the value in the error (``state.items``)."""
    try:
        return _encoder.encode(value)
    except (TypeError, ValueError) as exc:
        raise UnserializableStateError(
            f"{what} cannot be stored as JSON ({exc}). Backends store JSON-ready data; "
            "convert the value to str/int/float/bool/None/list/dict first.",
            path=what,
        ) from exc


@dataclass(frozen=True, slots=True)
class EncodedState:
    """A state ready to store: its JSON (with markers) and the blobs it refers to."""

    text: str
    blobs: Mapping[str, str]  # hash -> JSON text of the field


def _is_marker(value: object) -> bool:
    return isinstance(value, dict) and len(value) == 1 and BLOB_MARKER in value


class _BigStrings:
    """JSON text and digest of recently stored big ``str`` fields, by object identity.

    A flow's unchanged big field is the same ``str`` object at every checkpoint, so it
    is escaped and hashed once, not at every step. Only ``str``: it is immutable, and
    the entry keeps the object alive so its id cannot be reused by another value.
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self.entries: OrderedDict[int, tuple[str, str, str]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, value: str) -> tuple[str, str] | None:
        with self.lock:
            entry = self.entries.get(id(value))
            if entry is None or entry[0] is not value:
                return None
            self.entries.move_to_end(id(value))
            return entry[1], entry[2]

    def put(self, value: str, text: str, digest: str) -> None:
        with self.lock:
            self.entries[id(value)] = (value, text, digest)
            self.entries.move_to_end(id(value))
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)


_big_strings = _BigStrings()


def encode_state(state: Mapping[str, Any], *, blobs: bool = True) -> EncodedState:
    """Encode ``state``; with ``blobs`` big top-level fields become blob references."""
    if not isinstance(state, Mapping):
        raise UnserializableStateError(
            f"A state must be a dict of JSON-ready values, got {type(state).__name__}. "
            "Pass model.model_dump(mode='json') for a Pydantic model.",
            path="state",
        )
    if not blobs:
        return EncodedState(dumps(dict(state), what="state"), {})
    small = _small_state_text(state)
    if small is not None:
        return EncodedState(small, {})
    parts: list[str] = []
    found: dict[str, str] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise UnserializableStateError(
                f"State keys must be strings, got {key!r}. Rename the field.", path="state"
            )
        if type(value) is str and len(value) > BLOB_THRESHOLD:
            cached = _big_strings.get(value)
            if cached is None:
                text = dumps(value, what=f"state.{key}")
                digest = hashlib.sha256(text.encode()).hexdigest()
                _big_strings.put(value, text, digest)
            else:
                text, digest = cached
            found[digest] = text
            text = _encoder.encode({BLOB_MARKER: digest})
            parts.append(f"{_encoder.encode(key)}:{text}")
            continue
        kind = type(value)
        if (kind is list or kind is dict) and len(value) >= MIN_ITEMS:
            text, big_digest = _big_field(key, value)
            if big_digest is not None:
                found[big_digest] = text
                text = _encoder.encode({BLOB_MARKER: big_digest})
            parts.append(f"{_encoder.encode(key)}:{text}")
            continue
        text = dumps(value, what=f"state.{key}")
        if len(text) > BLOB_THRESHOLD or _is_marker(value):
            digest = hashlib.sha256(text.encode()).hexdigest()
            found[digest] = text
            text = _encoder.encode({BLOB_MARKER: digest})
        parts.append(f"{_encoder.encode(key)}:{text}")
    return EncodedState("{" + ",".join(parts) + "}", found)


# (JSON text, SHA-256 or None when it stays inline) of recent big list / dict fields.
_big_fields: UnchangedCache[tuple[str, str | None]] = UnchangedCache()


def _big_field(key: str, value: list[Any] | dict[str, Any]) -> tuple[str, str | None]:
    """The JSON of a big container field and its digest if it is blob-sized; encoded
    and hashed once while the field stays as it was (checked exactly, see
    :mod:`flowkit._unchanged`)."""
    hit = _big_fields.get(key, value)
    if hit is not None:
        return hit[1]
    text = dumps(value, what=f"state.{key}")
    digest = hashlib.sha256(text.encode()).hexdigest() if len(text) > BLOB_THRESHOLD else None
    snap = snapshot(value)
    if snap is not None:
        _big_fields.put(key, snap, (text, digest))
    return text, digest


_FLAT = (type(None), bool, int, float)


def _small_state_text(state: Mapping[str, Any]) -> str | None:
    """The JSON of a flat state (string keys; None, bool, number or short string values)
    in one encoder call, if it is too small to hold a blob-sized field; None when it
    needs the field-by-field path. Only flat states: encoding a nested or big value here
    first would encode it twice."""
    for key, value in state.items():
        if type(key) is not str:
            return None
        if type(value) is str:
            if len(value) > _FLAT_STR:
                return None
        elif type(value) not in _FLAT:
            return None
    try:
        text = _encoder.encode(state if type(state) is dict else dict(state))
    except ValueError:  # nan or infinity: the field-by-field path names the field
        return None
    # Every field's JSON is shorter than the whole, so none can reach the threshold.
    return text if len(text) <= BLOB_THRESHOLD else None


def decode_object(text: str | None, *, run_id: str, seq: int | None, what: str) -> dict[str, Any]:
    """Parse stored JSON that must be an object, or raise CorruptCheckpointError."""
    try:
        value = json.loads(text) if text is not None else None
    except (TypeError, ValueError) as exc:
        raise corrupt(run_id, seq, f"its {what} is not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise corrupt(run_id, seq, f"its {what} is not a JSON object")
    return value


def decode_state(
    text: str | None,
    fetch_blob: Callable[[str], str | None],
    *,
    run_id: str,
    seq: int,
) -> dict[str, Any]:
    """Parse a stored state and put the blob-stored fields back in place."""
    state = decode_object(text, run_id=run_id, seq=seq, what="state")
    return inflate_state(state, fetch_blob, run_id=run_id, seq=seq)


def inflate_state(
    state: dict[str, Any],
    fetch_blob: Callable[[str], str | None],
    *,
    run_id: str,
    seq: int,
) -> dict[str, Any]:
    """Replace the blob markers of a parsed state by the values they stand for."""
    for key, value in state.items():
        if _is_marker(value):
            digest = value[BLOB_MARKER]
            blob = fetch_blob(digest) if isinstance(digest, str) else None
            if blob is None:
                raise corrupt(run_id, seq, f"the stored value of state.{key} is missing")
            if type(blob) is not str:
                raise corrupt(run_id, seq, f"the stored value of state.{key} is not JSON text")
            try:
                state[key] = json.loads(blob)
            except (TypeError, ValueError) as exc:
                raise corrupt(run_id, seq, f"the stored value of state.{key} is not JSON") from exc
    return state


def corrupt(run_id: str, seq: int | None, problem: str) -> CorruptCheckpointError:
    where = f"checkpoint seq {seq} of run {run_id!r}" if seq is not None else f"run {run_id!r}"
    return CorruptCheckpointError(
        f"Stored {where} cannot be read back: {problem}. Restore it from a backup, fork the run "
        "from an earlier checkpoint, or delete the run; flowkit will not start it afresh "
        "silently.",
        run_id=run_id,
        seq=seq,
    )
