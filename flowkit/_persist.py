"""``@persist``: choose where a flow's checkpoints go, for the class or one method."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .exceptions import FlowConfigurationError

if TYPE_CHECKING:
    from .persistence import FlowPersistence

__all__ = ["PERSIST_ATTR", "PersistConfig", "default_persistence", "persist"]

T = TypeVar("T")
PERSIST_ATTR = "__flowkit_persist__"


@dataclass(frozen=True, slots=True)
class PersistConfig:
    """A ``@persist`` marker: a backend (None = the default SQLite file) and verbosity."""

    backend: FlowPersistence | None
    verbose: bool = False


_default: FlowPersistence | None = None
_default_lock = threading.Lock()


def default_persistence() -> FlowPersistence:
    """The process-wide default backend: a SQLite file in the per-user data folder.

    Created on first use (never at import); ``FLOWKIT_DATA_DIR`` moves the folder.
    """
    global _default
    with _default_lock:
        if _default is None:
            from .persistence import SQLiteFlowPersistence

            _default = SQLiteFlowPersistence()
        return _default


def _check_backend(backend: Any) -> None:
    from .persistence import FlowPersistence

    if not isinstance(backend, FlowPersistence):
        # CrewAI-style duck typing is accepted only through the base class, so that
        # the missing-method checks and the async forms are there.
        raise FlowConfigurationError(
            f"@persist got {backend!r}; pass an instance of a FlowPersistence subclass "
            "(e.g. SQLiteFlowPersistence('flows.db')), or nothing for the default."
        )


def _mark(target: T, config: PersistConfig) -> T:
    setattr(target, PERSIST_ATTR, config)
    return target


@overload
def persist(persistence: type[T], /) -> type[T]: ...
@overload
def persist(persistence: Callable[..., Any], /) -> Any: ...
@overload
def persist(
    persistence: FlowPersistence | None = None, verbose: bool = False
) -> Callable[[T], T]: ...
def persist(persistence: Any = None, verbose: bool = False) -> Any:
    """Save the flow's state after every method (on a class) or after one method.

    ``@persist``, ``@persist()``, ``@persist(backend)``, ``@persist(backend, verbose=True)``,
    ``@persist(persistence=backend)`` (CrewAI's keyword).
    Without a backend the default SQLite file is used. ``Flow(persistence=...)`` overrides
    the backend chosen here.

    Example::

        @persist(SQLiteFlowPersistence("flows.db"))
        class Checkout(Flow[Cart]):
            @start()
            def add_item(self): ...
    """
    if isinstance(persistence, type) or (
        callable(persistence) and hasattr(persistence, "__code__")
    ):
        # bare @persist
        return _mark(persistence, PersistConfig(None, verbose))
    if persistence is not None:
        _check_backend(persistence)
    config = PersistConfig(persistence, verbose)

    def decorate(target: T) -> T:
        if not (isinstance(target, type) or callable(target)):
            raise FlowConfigurationError(
                f"@persist decorates a Flow class or a flow method, not {target!r}."
            )
        return _mark(target, config)

    return decorate
