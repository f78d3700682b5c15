"""Attack: a run record whose ``info`` holds labels or an error of the wrong type
(written straight into the real database). The record is damaged: reading it must say so
(CorruptRunError naming the run) instead of showing "no labels" or "no error", a listing
must skip it and report it, ``flowkit runs --where`` must report it without a traceback,
and no kickoff or resume with new labels may silently replace what is stored."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
from pathlib import Path

import pytest
from conftest import mysql_up, postgres_up
from flows import MYSQL_URL, PG_URL

from flowkit import Flow, FlowState, start
from flowkit.cli import main as cli_main
from flowkit.exceptions import CorruptRunError
from flowkit.persistence import FlowPersistence, SQLAlchemyFlowPersistence, SQLiteFlowPersistence

DAMAGE = {
    "labels-a-list": {"metadata": ["case"]},
    "labels-a-string": {"metadata": "case"},
    "labels-a-number": {"metadata": 5},
    "error-a-string": {"error": "boom"},
    "error-a-list": {"error": ["boom"]},
}


class Fails(Flow[FlowState], name="attack-damaged-info"):
    @start()
    def only(self) -> None:
        raise RuntimeError("fails on purpose")


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    up = {"postgres": postgres_up, "mysql": mysql_up}.get(request.param)
    if up is not None and not up():
        if os.environ.get("CI"):
            pytest.fail(f"{request.param} at 127.0.0.1 is down; CI must run these tests")
        pytest.skip(f"{request.param} at 127.0.0.1 is not reachable")
    return {"postgres": PG_URL, "mysql": MYSQL_URL}.get(request.param, str(tmp_path / "f.db"))


def _store(url: str) -> FlowPersistence:
    return SQLAlchemyFlowPersistence(url) if "://" in url else SQLiteFlowPersistence(url)


def _info(url: str, run_id: str, text: str | None = None) -> str:
    """The stored info text of ``run_id``; with ``text``, first replace it."""
    if "://" not in url:
        connection = sqlite3.connect(url)
        try:
            if text is not None:
                connection.execute(
                    "UPDATE flowkit_runs SET info = ? WHERE run_id = ?", (text, run_id)
                )
                connection.commit()
            row = connection.execute(
                "SELECT info FROM flowkit_runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            return str(row[0])
        finally:
            connection.close()
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    async def run() -> str:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as connection:
                if text is not None:
                    await connection.execute(
                        sa.text("UPDATE flowkit_runs SET info = :info WHERE run_id = :run"),
                        {"info": text, "run": run_id},
                    )
                found = await connection.execute(
                    sa.text("SELECT info FROM flowkit_runs WHERE run_id = :run"), {"run": run_id}
                )
                return str(found.scalar_one())
        finally:
            await engine.dispose()

    return asyncio.run(run())


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_labels_or_error_are_reported_never_replaced(
    url: str,
    damage: str,
    run_id: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = _store(url)
    try:
        with pytest.raises(RuntimeError):
            Fails(persistence=store).kickoff(inputs={"id": run_id}, metadata={"case": run_id})
        info = json.loads(_info(url, run_id))
        info.update(DAMAGE[damage])
        damaged = _info(url, run_id, json.dumps(info, separators=(",", ":")))

        with pytest.raises(CorruptRunError, match=run_id) as caught:
            store.get_run(run_id)
        assert caught.value.run_id == run_id
        with caplog.at_level(logging.WARNING, logger="flowkit"):
            listed = store.list_runs(flow_name="attack-damaged-info", limit=1000)
        assert run_id not in [r.run_id for r in listed]
        assert any(
            getattr(r, "unreadable_run", None) is not None and r.unreadable_run.run_id == run_id
            for r in caplog.records
        ), caplog.records

        for again in (
            lambda: Fails(persistence=store).resume(run_id, metadata={"new": 1}),
            lambda: Fails(persistence=store).kickoff(inputs={"id": run_id}, metadata={"new": 1}),
        ):
            with pytest.raises(CorruptRunError, match=run_id):
                again()
            assert _info(url, run_id) == damaged  # nothing replaced

        capsys.readouterr()
        code = cli_main(["runs", "--where", "case=" + run_id, "--db", url])
        out, err = capsys.readouterr()
        assert code in (0, 3), (code, out, err)
        assert "Traceback" not in err and run_id not in out, (out, err)
        code = cli_main(["runs", "--flow", "attack-damaged-info", "--db", url, "--limit", "1000"])
        out, err = capsys.readouterr()
        assert code == 3 and run_id in err and "Traceback" not in err, (code, out, err)
    finally:
        # the PostgreSQL and MariaDB databases are shared: other tests list every run
        store.delete_run(run_id)
        store.close()
