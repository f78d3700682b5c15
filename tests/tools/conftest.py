"""Fixtures for the tool tests: the PostgreSQL server fixture of the persistence tests
(skipped without a server, a failure when CI is set)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_source = Path(__file__).resolve().parent.parent / "persistence" / "conftest.py"
_spec = importlib.util.spec_from_file_location("_flowkit_pg_fixtures", _source)
assert _spec is not None and _spec.loader is not None
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)

postgres_url = _module.postgres_url
