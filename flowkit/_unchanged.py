"""Telling, cheaply and exactly, that a big JSON-ready field has not changed since last time.

A flow's big field (a list of 2,000 strings, a dict of documents) is usually the same at
every checkpoint, and encoding it again each time is most of a checkpoint's cost. A
:class:`Snapshot` is a private copy of such a value (its lists and dicts copied, its
strings and numbers shared, which is safe: they are immutable), taken when the value was
last encoded. :func:`unchanged` compares the current value with it:

* a flat list of strings, or a dict of string keys to strings, compares with ``==`` in C
  (pointer comparisons for the shared strings): equal strings have equal JSON, and
  nothing that is not a string equals one;
* anything else compares structure for structure, every number, bool and ``None`` by
  identity, so ``True`` never passes for ``1``, nor ``1.0`` for ``1``.

Because the snapshot is private, a value mutated in place (``items.append(x)``) is
always seen as changed; a value rebuilt with equal contents is usually seen as unchanged.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from operator import is_
from typing import Any, Generic, TypeVar

P = TypeVar("P")

# Containers with fewer items are encoded directly: a snapshot would not pay for itself.
MIN_ITEMS = 32
_LEAVES = (str, int, float, bool, type(None))


class Snapshot:
    """A private copy of a plain JSON tree (str dict keys; str, int, float, bool, None)."""

    __slots__ = ("flat_str", "keys", "value")

    def __init__(self, value: Any, flat_str: bool) -> None:
        self.value = value
        self.flat_str = flat_str
        self.keys = list(value) if type(value) is dict else None


def snapshot(value: Any) -> Snapshot | None:
    """A snapshot of ``value`` (a list or dict), or None if it is not a plain JSON tree."""
    if type(value) is list:
        if all(type(item) is str for item in value):
            return Snapshot(list(value), flat_str=True)
    elif type(value) is dict:
        if all(type(key) is str and type(item) is str for key, item in value.items()):
            return Snapshot(dict(value), flat_str=True)
    else:
        return None
    copied = _copy(value)
    return None if copied is _NOT_PLAIN else Snapshot(copied, flat_str=False)


_NOT_PLAIN: Any = object()


def _copy(value: Any) -> Any:
    kind = type(value)
    if kind is list:
        items = [_copy(item) for item in value]
        return _NOT_PLAIN if any(item is _NOT_PLAIN for item in items) else items
    if kind is dict:
        if not all(type(key) is str for key in value):
            return _NOT_PLAIN
        copied = {key: _copy(item) for key, item in value.items()}
        return _NOT_PLAIN if any(item is _NOT_PLAIN for item in copied.values()) else copied
    return value if kind in _LEAVES else _NOT_PLAIN


def fresh_copy(snap: Snapshot) -> Any:
    """The snapshot's value in new containers (the caller may keep or change it)."""
    if snap.flat_str:
        return list(snap.value) if type(snap.value) is list else dict(snap.value)
    return _copy(snap.value)


def unchanged(value: Any, snap: Snapshot) -> bool:
    """True only if ``value`` has exactly the content (and JSON) ``snap`` was taken of."""
    if snap.flat_str:
        if type(value) is dict:
            return list(value) == snap.keys and value == snap.value
        return type(value) is list and value == snap.value
    return _same(value, snap.value)


def _same(value: Any, copy: Any) -> bool:
    kind = type(copy)
    if kind is list:
        return (
            type(value) is list
            and len(value) == len(copy)
            and (all(map(is_, value, copy)) or all(map(_same, value, copy)))
        )
    if kind is dict:
        return (
            type(value) is dict
            and list(value) == list(copy)
            and all(map(_same, value.values(), copy.values()))
        )
    if value is copy:
        return True
    return kind is str and type(value) is str and value == copy


class UnchangedCache(Generic[P]):
    """Recent snapshots by field name, each with what its value was turned into (``P``).

    Two snapshots per name, so two flows running side by side with a field of the same
    name do not keep evicting each other; few names, because a snapshot keeps its
    strings alive after the flow is done. Thread-safe.
    """

    def __init__(self, names: int = 64, per_name: int = 2) -> None:
        self.names = names
        self.per_name = per_name
        self.entries: OrderedDict[str, list[tuple[Snapshot, P]]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, name: str, value: Any) -> tuple[Snapshot, P] | None:
        with self.lock:
            candidates = self.entries.get(name)
            if not candidates:
                return None
            candidates = list(candidates)
        for entry in candidates:
            if unchanged(value, entry[0]):
                return entry
        return None

    def put(self, name: str, snap: Snapshot, payload: P) -> None:
        with self.lock:
            candidates = self.entries.setdefault(name, [])
            candidates.insert(0, (snap, payload))
            del candidates[self.per_name :]
            self.entries.move_to_end(name)
            while len(self.entries) > self.names:
                self.entries.popitem(last=False)
