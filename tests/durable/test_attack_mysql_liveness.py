"""Attack (MariaDB): the owner's GET_LOCK liveness session ends while the owner is alive
(an administrator's KILL CONNECTION, a wait_timeout on that one idle connection). The
owner keeps executing and renewing its lease on its ordinary connections, and takes its
named lock again on a new session: a second process that resumes the run a little later
must get RunLockedError, the owner must finish its run, and every leg runs once."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest
from conftest import PROC
from flows import MYSQL_URL, Slow, backend

from flowkit.exceptions import RunLockedError
from flowkit.persistence._sql_liveness import liveness_lock_name


def _kill_liveness_session(owner: str) -> int:
    """KILL CONNECTION of the MariaDB session holding ``owner``'s named lock; its id."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    async def kill() -> int:
        engine = create_async_engine(MYSQL_URL)
        try:
            async with engine.connect() as connection:
                found = await connection.execute(
                    sa.text("SELECT IS_USED_LOCK(:name)"), {"name": liveness_lock_name(owner)}
                )
                session = found.scalar()
                assert session is not None, "the owner holds no liveness lock"
                await connection.execute(sa.text(f"KILL CONNECTION {int(session)}"))
                return int(session)
        finally:
            await engine.dispose()

    return asyncio.run(kill())


@pytest.mark.slow
@pytest.mark.mysql
def test_a_live_owner_whose_get_lock_session_was_killed_is_not_taken_over(
    mysql_spec: str, proc, run_id: str
) -> None:  # type: ignore[no-untyped-def]
    """The owner (ttl 3 s, so renewals every 1 s; legs of 1 s) loses its liveness session
    in w1; a resume from another process 2 s later (the owner has renewed since) is
    refused with RunLockedError, and the owner finishes its run with each leg once."""
    env = dict(proc.env, FLOWKIT_TEST_TTL="3", FLOWKIT_TEST_LEG_SECONDS="1")
    child = subprocess.Popen(
        [sys.executable, str(PROC), mysql_spec, "Slow", "kickoff", run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    p = backend(mysql_spec)
    try:
        deadline = time.monotonic() + 60
        while "w1" not in proc.steps():
            assert child.poll() is None and time.monotonic() < deadline, child.communicate()
            time.sleep(0.01)
        run = p.get_run(run_id)
        assert run is not None and run.lease_owner is not None
        _kill_liveness_session(run.lease_owner)
        time.sleep(2)  # renewals (every ttl/3 = 1 s) run on the owner's other connections
        assert child.poll() is None, "the owner should still be executing"
        with pytest.raises(RunLockedError):
            Slow(persistence=p, lease_ttl=30).resume(run_id)
    finally:
        p.close()
        out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"result": ["w1", "w2", "w3", "w4"]}
    assert proc.steps() == ["w1", "w2", "w3", "w4"]
