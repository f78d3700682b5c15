"""Where flows keep their runs: the :class:`FlowPersistence` interface and its backends.

``SQLiteFlowPersistence`` is the default. Importing this package does not import
SQLAlchemy; the SQL backends load it on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flowkit.persistence._base import FlowPersistence
from flowkit.persistence._file import FileFlowPersistence
from flowkit.persistence._memory import InMemoryFlowPersistence
from flowkit.persistence._paths import default_db_path
from flowkit.persistence._records import Checkpoint, RunRecord, RunStatus

if TYPE_CHECKING:
    from flowkit.persistence._sqlalchemy import SQLAlchemyFlowPersistence, SQLiteFlowPersistence

__all__ = [
    "Checkpoint",
    "FileFlowPersistence",
    "FlowPersistence",
    "InMemoryFlowPersistence",
    "RunRecord",
    "RunStatus",
    "SQLAlchemyFlowPersistence",
    "SQLiteFlowPersistence",
    "default_db_path",
]

_LAZY = {"SQLAlchemyFlowPersistence", "SQLiteFlowPersistence"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from flowkit.persistence import _sqlalchemy

        value = getattr(_sqlalchemy, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)
