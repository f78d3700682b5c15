"""What changed between two states or two checkpoints, field by field.

Example::

    from flowkit.diff import diff_states

    changes = diff_states({"items": [{"title": "a"}]}, {"items": [{"title": "b"}], "n": 1})
    assert [str(c) for c in changes] == [
        'changed state.items[0].title: "a" -> "b"',
        "added state.n: 1",
    ]

Values are compared in their stored form as people read it (``flowkit show`` shows the
same): dates as ISO text, bytes as ``"<N bytes>"``, secrets as ``"<secret>"`` -- a diff
never reveals a secret. ``diff_checkpoints`` reads two checkpoints of a run from a
backend; ``flowkit diff RUN SEQ_A SEQ_B`` prints it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .exceptions import RunNotFoundError, UnsupportedOperationError

if TYPE_CHECKING:
    from .persistence import FlowPersistence

__all__ = ["Change", "diff_checkpoints", "diff_states"]

ChangeKind = Literal["added", "removed", "changed"]
_MISSING: Any = object()
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def abbreviate(value: Any, limit: int = 80) -> str:
    """``value`` as compact JSON, cut to ``limit`` characters with an ellipsis."""
    text = json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


@dataclass(frozen=True)
class Change:
    """One difference: ``kind`` at ``path`` (``state.items[3].title``), ``old`` / ``new``
    values (``None`` for the side that does not exist)."""

    kind: ChangeKind
    path: str
    old: Any = None
    new: Any = None

    def __str__(self) -> str:
        if self.kind == "added":
            return f"added {self.path}: {abbreviate(self.new)}"
        if self.kind == "removed":
            return f"removed {self.path}: {abbreviate(self.old)}"
        return f"changed {self.path}: {abbreviate(self.old)} -> {abbreviate(self.new)}"

    def to_json(self, *, limit: int | None = None) -> dict[str, Any]:
        """JSON-ready form; with ``limit``, values are abbreviated text of that length."""
        data: dict[str, Any] = {"kind": self.kind, "path": self.path}
        if self.kind != "added":
            data["old"] = self.old if limit is None else abbreviate(self.old, limit)
        if self.kind != "removed":
            data["new"] = self.new if limit is None else abbreviate(self.new, limit)
        return data


def _key_path(path: str, key: str) -> str:
    if _IDENTIFIER.match(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def _walk(old: Any, new: Any, path: str, out: list[Change]) -> None:
    if old is _MISSING:
        out.append(Change("added", path, new=new))
    elif new is _MISSING:
        out.append(Change("removed", path, old=old))
    elif isinstance(old, dict) and isinstance(new, dict):
        for key in old:
            _walk(old[key], new.get(key, _MISSING), _key_path(path, str(key)), out)
        for key in new:
            if key not in old:
                _walk(_MISSING, new[key], _key_path(path, str(key)), out)
    elif isinstance(old, list) and isinstance(new, list):
        for i in range(max(len(old), len(new))):
            _walk(
                old[i] if i < len(old) else _MISSING,
                new[i] if i < len(new) else _MISSING,
                f"{path}[{i}]",
                out,
            )
    elif old != new or type(old) is not type(new):
        out.append(Change("changed", path, old=old, new=new))


def diff_states(old: Any, new: Any, *, root: str = "state") -> list[Change]:
    """Field-level changes from ``old`` to ``new`` (JSON-like data), in document order:
    nested dicts and lists are compared item by item, so a path names the innermost
    value that differs."""
    out: list[Change] = []
    _walk(old, new, root, out)
    return out


def diff_checkpoints(backend: FlowPersistence, run_id: str, seq_a: int, seq_b: int) -> list[Change]:
    """Changes from checkpoint ``seq_a`` to checkpoint ``seq_b`` of run ``run_id``.

    Raises:
        RunNotFoundError: the run or one of the checkpoints does not exist (pruned ones
            are gone).
        UnsupportedOperationError: the backend keeps no history.
    """
    from ._cli_render import plain

    if not backend.supports_history:
        raise UnsupportedOperationError(
            f"diffing checkpoints needs a backend with history; {type(backend).__name__} "
            "keeps only the latest state. Use a built-in backend."
        )
    states = []
    for seq in (seq_a, seq_b):
        cp = backend.load_checkpoint(run_id, seq)
        if cp is None:
            raise RunNotFoundError(
                f"run {run_id!r} has no checkpoint {seq} in {backend!r} (see `flowkit "
                f"history {run_id}`; pruned checkpoints are gone)."
            )
        states.append(plain(cp.state))
    return diff_states(states[0], states[1])
