"""What a backend stores and returns: its records, and the JSON text of a state.

The records (:class:`Checkpoint`, :class:`RunRecord`) are immutable snapshots, their
timestamps aware UTC. A checkpoint is its stored text read back: a backend that has the
text at hand hands it over unparsed (:meth:`Checkpoint.deferred`) and the record parses
it on first access, with the functions below (:func:`inflate_state`).

States, meta and info are stored as JSON text, big state fields as content-addressed
blobs: a top-level state field whose JSON is longer than :data:`BLOB_THRESHOLD` characters is
stored once per run under the SHA-256 of its JSON; the checkpoint's state JSON holds
``{"__flowkit_blob__": "<hash>"}`` in its place. A small value that happens to look like
such a marker is stored as a blob too, so a marker in stored state is never user data.
A big field of any type that is as it was at the last save is not encoded or hashed
again: a ``str`` by identity (immutable), a list or dict by an exact comparison with a
private snapshot (:mod:`flowkit._unchanged`), which sees any in-place mutation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, get_args

from flowkit._unchanged import MIN_ITEMS, UnchangedCache, snapshot
from flowkit.exceptions import CorruptCheckpointError, UnserializableStateError

RunStatus = Literal["running", "completed", "failed", "interrupted"]
RUN_STATUSES: frozenset[str] = frozenset(get_args(RunStatus))


class Checkpoint:
    """One saved step of a run (immutable).

    ``state`` is the JSON-ready dict the engine saved; each load returns a fresh copy, so
    mutating it never changes what is stored. ``meta`` is the engine's opaque dict
    (execution position, state version, ...), stored verbatim.

    A backend that has the stored JSON at hand may build the record with
    :meth:`deferred`: ``state`` and ``meta`` are then parsed on first access, so a save
    whose returned record is only read for its ``seq`` (the engine's case) parses
    nothing.
    """

    __slots__ = ("_meta", "_parse", "_state", "created_at", "method_name", "run_id", "seq")

    run_id: str
    seq: int
    method_name: str
    created_at: datetime
    _state: dict[str, Any]
    _meta: dict[str, Any]
    _parse: Callable[[], tuple[dict[str, Any], dict[str, Any]]] | None

    def __init__(
        self,
        run_id: str,
        seq: int,
        method_name: str,
        state: dict[str, Any],
        created_at: datetime,
        meta: dict[str, Any] | None = None,
    ) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "run_id", run_id)
        setattr_(self, "seq", seq)
        setattr_(self, "method_name", method_name)
        setattr_(self, "created_at", created_at)
        setattr_(self, "_state", state)
        setattr_(self, "_meta", {} if meta is None else meta)
        setattr_(self, "_parse", None)

    @classmethod
    def deferred(
        cls,
        run_id: str,
        seq: int,
        method_name: str,
        created_at: datetime,
        parse: Callable[[], tuple[dict[str, Any], dict[str, Any]]],
    ) -> Checkpoint:
        """A record whose ``(state, meta)`` come from ``parse()``, called once, on the
        first access to either."""
        record = cls(run_id, seq, method_name, {}, created_at)
        object.__setattr__(record, "_parse", parse)
        return record

    def _parsed(self) -> None:
        parse = self._parse
        if parse is not None:
            state, meta = parse()
            object.__setattr__(self, "_state", state)
            object.__setattr__(self, "_meta", meta)
            object.__setattr__(self, "_parse", None)

    @property
    def state(self) -> dict[str, Any]:
        self._parsed()
        return self._state

    @property
    def meta(self) -> dict[str, Any]:
        self._parsed()
        return self._meta

    def _fields(self) -> tuple[Any, ...]:
        return (self.run_id, self.seq, self.method_name, self.state, self.created_at, self.meta)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Checkpoint)
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Checkpoint(run_id={self.run_id!r}, seq={self.seq!r}, "
            f"method_name={self.method_name!r}, state={self.state!r}, "
            f"created_at={self.created_at!r}, meta={self.meta!r})"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What a backend knows about a run besides its checkpoints.

    ``last_seq`` is the seq of the newest checkpoint ever written (0 before the first save);
    it never decreases, even when old checkpoints are pruned. ``flow_name`` is ``None`` for
    runs created through the CrewAI-style ``save_state``, which does not pass one.
    :attr:`metadata` is what callers attached to the run (``kickoff(metadata=...)``), kept
    in ``info["metadata"]``.
    """

    run_id: str
    flow_name: str | None
    status: RunStatus
    created_at: datetime
    updated_at: datetime
    last_seq: int = 0
    parent_run_id: str | None = None
    parent_seq: int | None = None
    fingerprint: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None

    def replace(self, **changes: Any) -> RunRecord:
        """Return a copy with ``changes`` applied (records are frozen)."""
        return dataclasses.replace(self, **changes)

    @property
    def metadata(self) -> dict[str, Any]:
        """The run's metadata: ``info["metadata"]``, or {} when it has none::

        run = persistence.get_run(run_id)
        print(run.metadata.get("user"))
        """
        found = self.info.get("metadata")
        return found if isinstance(found, dict) else {}


def utc_from_timestamp(timestamp: float) -> datetime:
    """Convert stored epoch seconds to the aware UTC datetime records carry."""
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)


# -- the JSON text of a state, meta and info ----------------------------------------

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
