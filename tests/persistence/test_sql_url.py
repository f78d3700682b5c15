"""Database URLs: every PostgreSQL spelling reaches the server through asyncpg, a URL
naming another driver is used when it is an installed asyncio driver and refused with
what to install or write otherwise."""

from __future__ import annotations

import importlib.util
import json
import uuid

import pytest

from flowkit.cli import main
from flowkit.exceptions import FlowConfigurationError
from flowkit.persistence import SQLAlchemyFlowPersistence


def _with_scheme(postgres_url: str, scheme: str) -> str:
    return scheme + postgres_url.split("://", 1)[1]


@pytest.mark.parametrize(
    "scheme",
    [
        pytest.param("postgresql://", id="postgresql"),
        pytest.param("postgres://", id="postgres"),
        pytest.param("postgresql+asyncpg://", id="postgresql+asyncpg"),
    ],
)
def test_postgres_url_spellings_reach_the_server(postgres_url: str, scheme: str) -> None:
    """A run saved through each PostgreSQL URL spelling is stored on the server and read
    back, through asyncpg."""
    url = _with_scheme(postgres_url, scheme)
    backend = SQLAlchemyFlowPersistence(url)
    run_id = f"url-{uuid.uuid4().hex}"
    try:
        assert backend.url.drivername == "postgresql+asyncpg"
        backend.save_state(run_id, "start", {"id": run_id, "scheme": scheme})
        assert backend.load_state(run_id) == {"id": run_id, "scheme": scheme}
    finally:
        backend.delete_run(run_id)
        backend.close()


def test_cli_takes_a_postgres_scheme_url(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`flowkit runs --db postgres://...` lists the runs stored on the server."""
    backend = SQLAlchemyFlowPersistence(postgres_url)
    run_id = f"url-cli-{uuid.uuid4().hex}"
    backend.save_state(run_id, "start", {"id": run_id})
    try:
        url = _with_scheme(postgres_url, "postgres://")
        assert main(["runs", "--json", "--limit", "100000", "--db", url]) == 0
        assert run_id in [run["run_id"] for run in json.loads(capsys.readouterr().out)]
    finally:
        backend.delete_run(run_id)
        backend.close()


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        pytest.param("postgresql+psycopg2://u:pw@h/db", "postgresql+asyncpg://", id="psycopg2"),
        pytest.param("postgresql+pg8000://u@h/db", "postgresql+asyncpg://", id="pg8000"),
        pytest.param("sqlite+pysqlite:///flows.db", "sqlite+aiosqlite://", id="pysqlite"),
    ],
)
def test_synchronous_driver_is_refused_with_the_url_to_write(url: str, fix: str) -> None:
    """A URL naming a synchronous driver is a FlowConfigurationError saying which URL to
    write instead (and never shows the password)."""
    with pytest.raises(FlowConfigurationError, match="asyncio engine") as info:
        SQLAlchemyFlowPersistence(url)
    assert fix in str(info.value) and "pw" not in str(info.value)


@pytest.mark.skipif(
    importlib.util.find_spec("psycopg") is not None, reason="psycopg is installed here"
)
def test_missing_asyncio_driver_is_refused_with_what_to_install() -> None:
    """A URL naming psycopg (an asyncio driver flowkit does not install) is refused with
    the install command while psycopg is missing."""
    with pytest.raises(FlowConfigurationError, match=r"not installed: pip install 'psycopg"):
        SQLAlchemyFlowPersistence("postgresql+psycopg://u@h/db")


def test_plain_sqlite_url_uses_aiosqlite() -> None:
    """sqlite:// (no driver) is SQLite through aiosqlite, and works."""
    backend = SQLAlchemyFlowPersistence("sqlite://")
    try:
        assert backend.url.drivername == "sqlite+aiosqlite"
        backend.save_state("r1", "start", {"id": "r1"})
        assert backend.load_state("r1") == {"id": "r1"}
    finally:
        backend.close()
