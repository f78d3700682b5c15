"""Private copies of the state for methods that run at the same time.

A method that runs alone works on the run's live state: nothing is copied. A method that
overlaps with others gets a *view*: a copy of the run's state as it was when the method
started, made the first time the method reads ``self.state`` (a method that never
touches the state costs nothing). When it finishes, :mod:`flowkit._merge` folds the
view's changes into the run's state; when it fails or is interrupted, the view is
simply dropped -- which is what makes "a method is the unit of atomicity" hold for
parallel branches.

The copy is deep where it must be and shallow where it can be: immutable values
(strings, numbers, ...) are shared, containers and models are copied, and anything
unknown goes through :func:`copy.deepcopy` (or is shared when it cannot be copied, like
a client object holding a socket).
"""

from __future__ import annotations

import copy
import datetime
import decimal
import enum
import uuid
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr

__all__ = ["copy_state"]

_ATOMS: frozenset[type] = frozenset(
    {
        str,
        int,
        float,
        bool,
        type(None),
        bytes,
        complex,
        decimal.Decimal,
        datetime.datetime,
        datetime.date,
        datetime.time,
        datetime.timedelta,
        uuid.UUID,
        SecretStr,
        SecretBytes,
        frozenset,
    }
)


def copy_state(value: Any) -> Any:
    """A copy of ``value`` that shares nothing mutable with it (as far as it can tell)."""
    kind = type(value)
    if kind in _ATOMS:
        return value
    if kind is list:
        for item in value:
            if type(item) not in _ATOMS:
                return [copy_state(item) for item in value]
        return value.copy()
    if kind is dict:
        for item in value.values():
            if type(item) not in _ATOMS:
                return {key: copy_state(item) for key, item in value.items()}
        return value.copy()
    if isinstance(value, BaseModel):
        if value.model_extra:
            return copy.deepcopy(value)
        new = value.model_copy()
        # the copy's own field dict: replacing values of existing keys, as
        # model_copy(update=...) does, minus its bookkeeping for new keys
        fields = new.__dict__
        for name, item in fields.items():
            if type(item) not in _ATOMS:
                fields[name] = copy_state(item)
        return new
    if kind is tuple:
        return tuple(copy_state(item) for item in value)
    if kind is set:
        return {copy_state(item) for item in value}
    if isinstance(value, enum.Enum):
        return value
    try:
        return copy.deepcopy(value)
    except Exception:  # a lock, a client with a socket: shared, as it must be
        return value
