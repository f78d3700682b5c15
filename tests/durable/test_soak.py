"""Random SIGKILLs while parallel branches run (issue 10): after resuming, every run's
final state equals an uncrashed run's and no committed method ran twice.

A short soak per backend (15 kills each); ``nox -s soak`` runs a long one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import postgres_up
from soak import drive

KILLS = int(os.environ.get("FLOWKIT_SOAK_KILLS", "15"))


@pytest.fixture(params=["sqlite", "file", pytest.param("postgres", marks=pytest.mark.postgres)])
def soak_spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        if not postgres_up():
            if os.environ.get("CI"):
                pytest.fail("PostgreSQL at 127.0.0.1:5432 is down; CI must run these tests")
            pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
        return "postgres"
    if request.param == "file":
        return f"file:{tmp_path / 'runs'}"
    return f"sqlite:{tmp_path / 'runs.db'}"


@pytest.mark.slow
def test_random_kills_never_lose_or_repeat_committed_work(soak_spec: str, tmp_path: Path) -> None:
    """Workers killed at random moments (fan-out, and_ join, router, loop): each run
    completes with the uncrashed final state, and no method call whose changes were
    committed at a kill is started again after it."""
    stats = drive(soak_spec, kills=KILLS, runs=10, log=tmp_path / "steps.log")
    print(stats.line())
    assert stats.problems == []
    assert stats.kills == KILLS
