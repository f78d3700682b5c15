"""Three-way merge of one finished method's state changes into the run's state (pure).

A method that overlapped with others worked on its own copy of the state (its *view*,
taken from the run's state when it started: the *base*). When it finishes, its changes
are folded into the run's current state (*ours*), which other methods may have changed
meanwhile. The rules, applied field by field (models by field, dicts by key, at any
depth):

* a field the method did not change keeps the run's value;
* a field only the method changed takes the method's value;
* a list to which both sides only *appended* keeps every appended item: the run's
  first, then the method's (so items land in completion order);
* anything else changed by both sides is a :class:`~flowkit.exceptions.StateConflictError`
  naming the field and both methods -- also when both set the same value, because two
  ``count += 1`` would otherwise silently count once.

"Changed" is decided by value (``==`` on values of the same type): a method that sets a
field to the value it already had did not change it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from .exceptions import StateConflictError

__all__ = ["Merge"]

_ABSENT: Any = object()  # a dict key one side does not have


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    try:
        return bool(a == b)
    except Exception:  # an __eq__ that returns an array or raises: treat as changed
        return False


class Merge:
    """Folds one method's view into the run's state; records which paths it wrote.

    ``writers`` maps a field path to the method that last changed it through a merge,
    so that a conflict can name the other method. It is shared by every merge of one run.
    """

    def __init__(self, method: str, writers: dict[str, str]) -> None:
        self.method = method
        self.writers = writers
        self.changed: list[str] = []

    def state(self, base: Any, ours: Any, theirs: Any, *, in_place: bool) -> Any:
        """The merged top-level state. ``base`` is never modified; ``ours`` only when
        ``in_place`` says that no running method holds it (as its base), and then only
        its top-level fields are replaced -- nested values are never changed in place."""
        if ours is base:
            # Nothing merged since this method started: its view becomes the state.
            self._note_changes(base, theirs, "state")
            return theirs
        if isinstance(ours, BaseModel):
            updates = self._fields(base, ours, theirs, "state")
            if not updates:
                return ours
            if in_place and not ours.model_config.get("frozen"):
                for name, value in updates.items():
                    setattr(ours, name, value)
                return ours
            return ours.model_copy(update=updates)
        merged = ours if in_place else dict(ours)
        self._keys(base, ours, theirs, "state", merged)
        return merged

    def commit(self) -> None:
        """Record this method as the writer of every path it changed."""
        for path in self.changed:
            self.writers[path] = self.method

    # -- the walk ----------------------------------------------------------------------

    def _value(self, base: Any, ours: Any, theirs: Any, path: str) -> Any:
        if _same(theirs, base):
            return ours
        if _same(ours, base):
            self.changed.append(path)
            return theirs
        return self._both(base, ours, theirs, path)

    def _both(self, base: Any, ours: Any, theirs: Any, path: str) -> Any:
        """Both sides changed the value at ``path``."""
        kind = type(theirs)
        if kind is type(ours) is type(base):
            if isinstance(theirs, BaseModel):
                updates = self._fields(base, ours, theirs, path)
                return ours.model_copy(update=updates) if updates else ours
            if kind is dict:
                merged = dict(ours)
                self._keys(base, ours, theirs, path, merged)
                return merged
            if kind is list:
                n = len(base)
                if ours[:n] == base and theirs[:n] == base:
                    self.changed.append(path)
                    return ours + theirs[n:]
        raise self._conflict(path)

    def _fields(self, base: Any, ours: Any, theirs: Any, path: str) -> dict[str, Any]:
        updates: dict[str, Any] = {}
        b, o = base.__dict__, ours.__dict__
        for name, value in theirs.__dict__.items():
            old = b.get(name, _ABSENT)
            if _same(value, old):
                continue
            current = o.get(name, _ABSENT)
            if _same(current, old):  # only this method changed it
                self.changed.append(f"{path}.{name}")
                updates[name] = value
                continue
            merged = self._both(old, current, value, f"{path}.{name}")
            if merged is not current:
                updates[name] = merged
        return updates

    def _keys(self, base: Any, ours: Any, theirs: Any, path: str, out: dict[Any, Any]) -> None:
        for key in (*theirs, *(k for k in base if k not in theirs)):
            old = base.get(key, _ABSENT)
            new = theirs.get(key, _ABSENT)
            if _same(new, old):
                continue
            merged = self._value(old, ours.get(key, _ABSENT), new, f"{path}[{key!r}]")
            if merged is _ABSENT:
                out.pop(key, None)
            else:
                out[key] = merged

    def _note_changes(self, base: Any, theirs: Any, path: str) -> None:
        if isinstance(theirs, BaseModel):
            b = base.__dict__
            for name, value in theirs.__dict__.items():
                if not _same(value, b.get(name, _ABSENT)):
                    self.changed.append(f"{path}.{name}")
        else:
            for key in (*theirs, *(k for k in base if k not in theirs)):
                if not _same(theirs.get(key, _ABSENT), base.get(key, _ABSENT)):
                    self.changed.append(f"{path}[{key!r}]")

    def _conflict(self, path: str) -> StateConflictError:
        other = None
        probe = path
        while other is None and probe:
            other = self.writers.get(probe)
            cut = max(probe.rfind("."), probe.rfind("["))
            probe = probe[:cut] if cut > 0 else ""
        others = other or "another method that finished while it ran"
        return StateConflictError(
            f"{path} was changed by both {self.method} and {others}, which ran at the same "
            "time; flowkit cannot tell which value is right. Let one of them own the field, "
            "append to a list instead (appends from parallel methods are all kept), or "
            "return the values and combine them in a method that listens to both.",
            path=path,
            methods=(self.method, other) if other else (self.method,),
        )
