"""Takeover of a run whose owner stopped: a SIGSTOPped owner thawed after the takeover
can never append, and (PostgreSQL) an owner on another machine whose session died is
taken over without waiting for its lease to expire."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PROC, postgres_up
from flows import PG_URL, Slow, backend

from flowkit.exceptions import RunLockedError

LEGS = ["w1", "w2", "w3", "w4"]


def _wait_for(predicate, what: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.mark.slow
def test_sigstopped_owner_thawed_after_takeover_never_appends(
    proc, backend_spec: str, run_id: str
) -> None:  # type: ignore[no-untyped-def]
    """An owner is SIGSTOPped inside w2; once its lease (ttl 1 s) expires another process
    resumes and finishes the run; on SIGCONT the old owner's next save is refused
    (fenced), and the stored history is the new owner's, each leg committed once."""
    env = dict(proc.env, FLOWKIT_TEST_TTL="1", FLOWKIT_TEST_LEG_SECONDS="0.5")
    child = subprocess.Popen(
        [sys.executable, str(PROC), backend_spec, "Slow", "kickoff", run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        _wait_for(lambda: "w2" in proc.steps(), "the owner to start w2")
        os.kill(child.pid, signal.SIGSTOP)  # inside w2's sleep, no transaction open
        time.sleep(1.5)  # its lease expires; the stopped process cannot renew it
        p = backend(backend_spec)
        try:
            assert Slow(persistence=p, lease_ttl=30).resume(run_id) == LEGS
        finally:
            p.close()
    finally:
        os.kill(child.pid, signal.SIGCONT)
        out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    refused = json.loads(out.strip().splitlines()[-1])
    assert refused.get("error") in ("LeaseLostError", "RunLockedError", "ConcurrentUpdateError")
    assert run_id in refused["message"]
    p = backend(backend_spec)
    try:
        history = p.history(run_id)
        assert [c.seq for c in history] == list(range(1, len(history) + 1))
        assert [c.method_name for c in history] == ["kickoff", *LEGS]
        assert history[-1].state["legs"] == LEGS
        run = p.get_run(run_id)
        assert run is not None and run.status == "completed" and run.lease_owner is None
    finally:
        p.close()


@pytest.fixture
def postgres() -> str:
    if not postgres_up():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL at 127.0.0.1:5432 is down; CI must run these tests")
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
    return "postgres"


HOLD_LEASE = """
import sys, time
from flowkit.persistence import SQLAlchemyFlowPersistence
p = SQLAlchemyFlowPersistence(sys.argv[1])
p.acquire_lease(sys.argv[2], sys.argv[3], 600)
print("held", flush=True)
time.sleep(600)
"""


@pytest.mark.postgres
def test_owner_on_another_machine_is_taken_over_when_its_session_dies(
    postgres: str, run_id: str
) -> None:
    """A lease (ttl 600 s) held by an owner that names another host cannot be judged
    from this machine's processes; while its process lives the claim is refused, and
    once it is SIGKILLed the server ends its session and the claim succeeds at once."""
    p = backend(postgres)
    p.create_run(run_id, "remote")
    far_owner = "far-away-host:4242:1:feedbeef"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_LEASE, PG_URL, run_id, far_owner],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match="far-away-host"):
            p.claim_run(run_id, "claimant", 30)
        child.kill()
        child.wait()

        def claimed() -> bool:
            try:
                p.claim_run(run_id, "claimant", 30)
            except RunLockedError:
                return False  # the server has not noticed the closed connection yet
            return True

        _wait_for(claimed, "the server to end the dead owner's session")
        assert p.get_run(run_id).lease_owner == "claimant"
        # Given back, not left to close(): the database (and its liveness session) is
        # shared by every open backend of this URL in the process, and another test's
        # backend may keep it open.
        p.release_lease(run_id, "claimant")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        assert child.stdout is not None
        child.stdout.close()
        p.close()


@pytest.mark.postgres
def test_liveness_locks_are_given_back(postgres: str, run_id: str, tmp_path: Path) -> None:
    """After runs end (normally, or with a failing method) no liveness lock stays held,
    and closing the backend ends the liveness session."""
    from flows import Relay

    p = backend(postgres)
    try:
        assert Relay(persistence=p).kickoff(inputs={"id": run_id}) == ["r1", "r2", "r3", "r4"]
        Relay.halt_at = "r3"
        try:
            with pytest.raises(Exception, match="r3"):
                Relay(persistence=p).kickoff(inputs={"id": run_id + "-failing"})
        finally:
            Relay.halt_at = None
        # Unlocking happens in the background, right after each release.
        _wait_for(lambda: _advisory_locks() == 0, "the liveness locks to be given back")
    finally:
        p.close()
    p = backend(postgres)
    try:
        assert _advisory_locks() == 0
    finally:
        p.close()


def _advisory_locks() -> int:
    """Advisory locks held in the test database (asked on a connection of its own)."""
    import asyncio

    import asyncpg

    async def count() -> int:
        connection = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return int(
                await connection.fetchval(
                    "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                    "WHERE l.locktype = 'advisory' AND d.datname = current_database()"
                )
            )
        finally:
            await connection.close()

    return asyncio.run(count())
