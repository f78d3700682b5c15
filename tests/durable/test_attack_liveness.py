"""Attack (PostgreSQL): the owner's liveness session ends while the owner is alive and
connected (a network blip on that one connection, an idle-session timeout, an
administrator's pg_terminate_backend). The owner keeps executing and renewing its lease
on its ordinary connections. docs/durable-runs.md: a second process that resumes a run
while a live owner executes it gets RunLockedError."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest
from conftest import PROC, postgres_up
from flows import PG_URL, Slow, backend

from flowkit.exceptions import RunLockedError


@pytest.fixture
def postgres() -> str:
    if not postgres_up():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL at 127.0.0.1:5432 is down; CI must run these tests")
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
    return "postgres"


def _end_liveness_sessions() -> int:
    """Terminates every session of the test database that holds an advisory lock."""
    import asyncpg

    async def end() -> int:
        connection = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            pids = await connection.fetch(
                "SELECT DISTINCT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                "WHERE l.locktype = 'advisory' AND d.datname = current_database() "
                "AND l.pid <> pg_backend_pid()"
            )
            for row in pids:
                await connection.execute("SELECT pg_terminate_backend($1)", row["pid"])
            return len(pids)
        finally:
            await connection.close()

    return asyncio.run(end())


@pytest.mark.slow
@pytest.mark.postgres
def test_a_live_owner_whose_liveness_session_ended_is_not_taken_over(
    postgres: str, proc, run_id: str
) -> None:  # type: ignore[no-untyped-def]
    """The owner (ttl 3 s, so renewals every 1 s; legs of 1 s) loses its liveness session
    in w1; a resume from another process 2 s later (the owner has renewed since) is
    refused with RunLockedError, and the owner finishes its run."""
    env = dict(proc.env, FLOWKIT_TEST_TTL="3", FLOWKIT_TEST_LEG_SECONDS="1")
    child = subprocess.Popen(
        [sys.executable, str(PROC), postgres, "Slow", "kickoff", run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    p = backend(postgres)
    try:
        deadline = time.monotonic() + 60
        while "w1" not in proc.steps():
            assert child.poll() is None and time.monotonic() < deadline, child.communicate()
            time.sleep(0.01)
        assert _end_liveness_sessions() >= 1
        time.sleep(2)  # renewals (every ttl/3 = 1 s) run on the owner's other connections
        assert child.poll() is None, "the owner should still be executing"
        with pytest.raises(RunLockedError):
            Slow(persistence=p, lease_ttl=30).resume(run_id)
    finally:
        p.close()
        out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"result": ["w1", "w2", "w3", "w4"]}
