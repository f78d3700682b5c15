"""What the encode and decode walks share: the tag key, and failures that find their path.

A walk raises :class:`Problem` deep inside a value; each container on the way out adds its
segment, so the public functions can name the place (``state.items[3].payload``) without
building paths on the common, successful path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from flowkit._secrets import SecretCipher
from flowkit.exceptions import CorruptCheckpointError, SecretKeyError, UnserializableStateError

TAG_KEY = "__fk__"

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


HOW_TO_RECOVER = (
    "The stored data is damaged or was not written by flowkit: restore it from a backup, "
    "fork the run from an earlier checkpoint, or delete the run."
)


class Problem(Exception):
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
        name = checkpoint_name(run_id, seq)
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
            f"{name} cannot be read back: {self.detail} at {path}. {HOW_TO_RECOVER}",
            run_id=run_id or "",
            seq=seq,
        )


class NonStrKey(Exception):
    """Aborts the fast dict path: this dict needs the "map" form."""


def non_str_key(key: object) -> NoReturn:
    raise NonStrKey


def checkpoint_name(run_id: str | None, seq: int | None) -> str:
    if run_id is None:
        return "A stored checkpoint" if seq is None else f"Checkpoint {seq}"
    if seq is None:
        return f"The stored state of run {run_id!r}"
    return f"Checkpoint {seq} of run {run_id!r}"


def type_name(value: object) -> str:
    cls = type(value)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def key_segment(key: object) -> str:
    if type(key) is str and key.isidentifier():
        return f".{key}"
    text = repr(key)
    return f"[{text if len(text) <= 60 else text[:57] + '...'}]"


def member_segment(item: object) -> str:
    text = repr(item)
    return "{" + (text if len(text) <= 60 else text[:57] + "...") + "}"


def locate(
    parts: Iterable[tuple[str, Any]],
    walk: Callable[[Any, SecretCipher | None], Any],
    cipher: SecretCipher | None,
    original: Problem,
) -> NoReturn:
    """Walk ``parts`` again one by one to find which one failed, and add its segment.

    Containers use comprehensions (fast) and only pay for this on failure; the walk is
    deterministic, so the same part fails again.
    """
    for segment, part in parts:
        try:
            walk(part, cipher)
        except Problem as problem:
            problem.segments.append(segment)
            raise
    raise original
