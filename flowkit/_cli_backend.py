"""Which storage the ``flowkit`` command opens: ``--db``, ``--dir``, ``FLOWKIT_DB_URL``."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowkit.persistence import FlowPersistence

__all__ = ["DB_URL_ENV", "CliError", "describe_default", "open_backend", "unreadable_runs"]

DB_URL_ENV = "FLOWKIT_DB_URL"
_PASSWORD = re.compile(r"(://[^:/@]*:)[^@/]*@")
_SQLITE_URL = re.compile(r"^sqlite(\+\w+)?:///(?P<path>.*?)(\?.*)?$")


class CliError(Exception):
    """A problem the command reports on stderr with exit code 1 (no traceback)."""


def masked(url: str) -> str:
    """``url`` with its password replaced by ``***``, safe to print."""
    return _PASSWORD.sub(r"\1***@", url)


def describe_default() -> str:
    """Where the command looks when neither ``--db`` nor ``--dir`` is given."""
    return f"${DB_URL_ENV} if set, else the default SQLite file"


def _is_url(target: str) -> bool:
    return "://" in target


def _require_file(path: Path, shown: str) -> None:
    if path.is_dir():
        raise CliError(
            f"{shown} is a directory, not a database file; pass a SQLite file with --db, "
            "or use --dir for a FileFlowPersistence folder."
        )
    if not path.exists():
        raise CliError(
            f"no flowkit database at {shown}: the file does not exist. Pass --db PATH_OR_URL "
            f"(or set {DB_URL_ENV}) to the database your flows use; it is created when a "
            "flow with @persist first runs."
        )
    _require_flowkit_tables(path, shown)


def _require_flowkit_tables(path: Path, shown: str) -> None:
    """Refuse a SQLite file that flowkit never wrote to: opening it through the backend
    would create flowkit's tables in someone else's database."""
    import sqlite3

    try:
        with contextlib.closing(
            sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        ) as raw:
            found = raw.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'flowkit_runs'"
            ).fetchone()
    except sqlite3.DatabaseError as exc:
        raise CliError(
            f"{shown} is not a SQLite database ({exc}); pass the file your flows use."
        ) from None
    if found is None:
        raise CliError(
            f"{shown} is a SQLite database without flowkit's tables; pass the file your "
            "flows use (the command leaves other databases untouched)."
        )


def _from_target(target: str, origin: str) -> FlowPersistence:
    if not _is_url(target):
        path = Path(target).expanduser()
        _require_file(path, f"{path} ({origin})")
        from flowkit.persistence import SQLiteFlowPersistence

        return SQLiteFlowPersistence(path)
    sqlite = _SQLITE_URL.match(target)
    if sqlite is not None:
        file_part = sqlite.group("path")
        if file_part and file_part != ":memory:" and not file_part.startswith("file:"):
            _require_file(Path(file_part), f"{file_part} ({origin})")
    from flowkit.persistence import SQLAlchemyFlowPersistence

    try:
        return SQLAlchemyFlowPersistence(target)
    except Exception as exc:  # a bad URL: unknown dialect, missing driver, syntax
        raise CliError(
            f"cannot use database URL {masked(target)} ({origin}): {exc}. Use a SQLAlchemy "
            "async URL such as sqlite+aiosqlite:///flows.db or "
            "postgresql+asyncpg://user:password@host/db, or a SQLite file path."
        ) from None


def open_backend(db: str | None, directory: str | None) -> tuple[FlowPersistence, str]:
    """The backend chosen by the options and the environment, and how to name it.

    Raises:
        CliError: both options given, or the database is missing or cannot be opened.
    """
    if db is not None and directory is not None:
        raise CliError("pass either --db or --dir, not both.")
    if directory is not None:
        folder = Path(directory).expanduser()
        if not folder.is_dir():
            raise CliError(
                f"no FileFlowPersistence folder at {folder} (--dir): it does not exist or is "
                "not a directory. Pass the folder your flows were given."
            )
        from flowkit.persistence import FileFlowPersistence

        return FileFlowPersistence(folder), str(folder)
    if db is not None:
        return _from_target(db, "--db"), masked(db)
    env = os.environ.get(DB_URL_ENV)
    if env:
        return _from_target(env, f"${DB_URL_ENV}"), masked(env)
    from flowkit.persistence import default_db_path

    path = default_db_path()
    return _from_target(str(path), "the default database"), str(path)


def check_capabilities(backend: FlowPersistence, shown: str) -> None:
    """Refuse backends that cannot list runs and their history."""
    missing = [
        flag
        for flag in ("supports_runs", "supports_history")
        if not getattr(type(backend), flag, False)
    ]
    if missing:
        raise CliError(
            f"{type(backend).__name__} at {shown} lacks {', '.join(missing)}: the flowkit "
            "command needs runs and history. Use a built-in backend."
        )


class _Unreadable(logging.Handler):
    """Collects the runs ``list_runs`` skipped (see ``_rules.report_unreadable``)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.errors: dict[str, Exception] = {}

    def emit(self, record: logging.LogRecord) -> None:
        error = getattr(record, "unreadable_run", None)
        if error is not None:
            self.errors.setdefault(error.run_id, error)


@contextlib.contextmanager
def unreadable_runs() -> Iterator[dict[str, Exception]]:
    """While inside, the runs ``list_runs`` skips are collected (run id -> error); the
    command prints them itself (with a handler in place, logging's last-resort printer
    stays quiet)."""
    logger = logging.getLogger("flowkit")
    handler = _Unreadable()
    logger.addHandler(handler)
    try:
        yield handler.errors
    finally:
        logger.removeHandler(handler)


def probe(backend: FlowPersistence, shown: str) -> None:
    """Read once so that a broken database is reported as such, not as a missing run."""
    check_capabilities(backend, shown)
    try:
        with unreadable_runs():  # a damaged run is reported by `runs`, not by every command
            backend.list_runs(limit=1)
    except Exception as exc:
        raise CliError(
            f"cannot read the flowkit database at {shown}: {type(exc).__name__}: "
            f"{str(exc).rstrip('.')}. Check that --db / --dir points at a flowkit database "
            "and that it is reachable."
        ) from None
