"""Where the default SQLite database lives."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DATA_DIR_ENV = "FLOWKIT_DATA_DIR"


def default_db_path() -> Path:
    """The default database file: ``$FLOWKIT_DATA_DIR/flowkit.db`` if that variable is set,
    else ``flowkit.db`` in the per-user data folder:

    - Linux and other Unix: ``$XDG_DATA_HOME/flowkit`` (``~/.local/share/flowkit``)
    - macOS: ``~/Library/Application Support/flowkit``
    - Windows: ``%LOCALAPPDATA%\\flowkit``

    Only computes the path; the folder is created when the database is first used.
    """
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser() / "flowkit.db"
    return _user_data_dir() / "flowkit.db"


def _user_data_dir() -> Path:
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "flowkit"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "flowkit"
    xdg = os.environ.get("XDG_DATA_HOME")
    base_dir = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base_dir / "flowkit"
