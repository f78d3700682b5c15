"""What is specific to MariaDB/MySQL (the contract itself runs in test_sqlalchemy.py): URL
spellings and drivers, keys compared exactly, big values, clear errors for what does not
fit, and session liveness through named locks (GET_LOCK)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from flowkit.exceptions import FlowConfigurationError, InvalidArgumentError, RunLockedError
from flowkit.persistence import SQLAlchemyFlowPersistence
from flowkit.persistence._sql_liveness import liveness_lock_name

pytestmark = pytest.mark.mysql


def _with_scheme(mysql_url: str, scheme: str) -> str:
    return scheme + mysql_url.split("://", 1)[1]


@pytest.fixture
def backend(mysql_url: str) -> Iterator[SQLAlchemyFlowPersistence]:
    store = SQLAlchemyFlowPersistence(mysql_url)
    yield store
    store.close()


def _new_id(prefix: str = "mysql") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


@pytest.mark.parametrize(
    ("scheme", "drivername"),
    [
        pytest.param("mysql://", "mysql+asyncmy", id="mysql"),
        pytest.param("mariadb://", "mariadb+asyncmy", id="mariadb"),
        pytest.param("mysql+asyncmy://", "mysql+asyncmy", id="mysql+asyncmy"),
        pytest.param("mysql+aiomysql://", "mysql+aiomysql", id="mysql+aiomysql"),
    ],
)
def test_url_spellings_reach_the_server(mysql_url: str, scheme: str, drivername: str) -> None:
    """Each MariaDB/MySQL URL spelling stores a run on the server and reads it back (and
    claims it), through the driver the URL names or asyncmy by default."""
    backend = SQLAlchemyFlowPersistence(_with_scheme(mysql_url, scheme))
    run_id = _new_id("url")
    try:
        assert backend.url.drivername == drivername
        backend.save_state(run_id, "start", {"id": run_id, "scheme": scheme})
        run, latest = backend.claim_run(run_id, "claimant", 30)
        assert run.lease_owner == "claimant"
        assert latest is not None and latest.state == {"id": run_id, "scheme": scheme}
    finally:
        backend.delete_run(run_id)
        backend.close()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("mysql+pymysql://u:pw@h/db", id="pymysql"),
        pytest.param("mysql+mysqldb://u:pw@h/db", id="mysqldb"),
        pytest.param("mariadb+mysqlconnector://u:pw@h/db", id="mysqlconnector"),
    ],
)
def test_synchronous_mysql_driver_is_refused_with_the_url_to_write(url: str) -> None:
    """A URL naming a synchronous MySQL driver is a FlowConfigurationError naming the
    asyncmy URL to write instead, without the password."""
    with pytest.raises(FlowConfigurationError, match="asyncio engine") as info:
        SQLAlchemyFlowPersistence(url)
    assert "+asyncmy://" in str(info.value) and "pw" not in str(info.value)


def test_run_ids_are_compared_exactly(backend: SQLAlchemyFlowPersistence) -> None:
    """Run ids that differ only in case or in a trailing space are different runs (the
    server's default collation would take them for one)."""
    base = _new_id("Case")
    ids = [base, base.upper(), base + " "]
    try:
        for n, run_id in enumerate(ids):
            backend.save_state(run_id, "a", {"id": run_id, "n": n})
        for n, run_id in enumerate(ids):
            assert backend.load_state(run_id) == {"id": run_id, "n": n}
            run = backend.get_run(run_id)
            assert run is not None and run.run_id == run_id and run.last_seq == 1
    finally:
        for run_id in ids:
            backend.delete_run(run_id)


def test_states_beyond_64_kib_round_trip(backend: SQLAlchemyFlowPersistence) -> None:
    """A state and a single field far larger than a TEXT column (64 KiB) load back whole,
    non-ASCII text included."""
    run_id = _new_id()
    state = {
        "id": run_id,
        "big": "é✓" * 200_000,
        "many": [{"n": n, "s": "x" * 50} for n in range(3000)],
    }
    try:
        backend.save_state(run_id, "a", state)
        assert backend.load_state(run_id) == state
        assert backend.history(run_id)[0].state == state
    finally:
        backend.delete_run(run_id)


def test_run_id_longer_than_the_key_is_refused_clearly(
    backend: SQLAlchemyFlowPersistence,
) -> None:
    """A run id or flow name longer than 255 characters (the key columns' length) is
    refused with an InvalidArgumentError saying so; nothing is stored."""
    run_id = "r" * 256
    with pytest.raises(InvalidArgumentError, match=r"run id 'rrr.* 256 characters"):
        backend.save_state(run_id, "a", {"id": run_id})
    with pytest.raises(InvalidArgumentError, match=r"flow name 'fff.* 300 characters"):
        backend.create_run("short-id", "f" * 300)
    assert backend.get_run(run_id) is None
    assert backend.get_run("short-id") is None


def _lock_in_use(mysql_url: str, owner: str) -> bool:
    """Whether some session holds ``owner``'s liveness lock (asked on a new connection)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    async def ask() -> bool:
        engine = create_async_engine(mysql_url)
        try:
            async with engine.connect() as connection:
                result = await connection.execute(
                    text("SELECT IS_USED_LOCK(:name)"), {"name": liveness_lock_name(owner)}
                )
                return result.scalar() is not None
        finally:
            await engine.dispose()

    return asyncio.run(ask())


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


HOLD_LEASE = """
import sys, time
from flowkit.persistence import SQLAlchemyFlowPersistence
p = SQLAlchemyFlowPersistence(sys.argv[1])
p.acquire_lease(sys.argv[2], sys.argv[3], 600)
print("held", flush=True)
time.sleep(600)
"""


def test_owner_on_another_machine_is_taken_over_when_its_session_dies(
    backend: SQLAlchemyFlowPersistence, mysql_url: str
) -> None:
    """A lease (ttl 600 s) held by an owner naming another host: while its process lives
    (holding its GET_LOCK) claims are refused; once it is SIGKILLed the server ends its
    session, the named lock is free, and the claim succeeds without waiting for the
    lease to expire."""
    run_id = _new_id("far")
    backend.create_run(run_id, "remote")
    far_owner = f"far-away-host:4242:1:{uuid.uuid4().hex[:8]}"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_LEASE, mysql_url, run_id, far_owner],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "held"
        assert _lock_in_use(mysql_url, far_owner)
        with pytest.raises(RunLockedError, match="far-away-host"):
            backend.claim_run(run_id, "claimant", 30)
        child.kill()
        child.wait()

        def claimed() -> bool:
            try:
                backend.claim_run(run_id, "claimant", 30)
            except RunLockedError:
                return False  # the server has not noticed the closed connection yet
            return True

        _wait_for(claimed, "the server to end the dead owner's session")
        run = backend.get_run(run_id)
        assert run is not None and run.lease_owner == "claimant"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        assert child.stdout is not None
        child.stdout.close()
        backend.delete_run(run_id)


def test_liveness_lock_is_held_with_the_lease_and_given_back(
    backend: SQLAlchemyFlowPersistence, mysql_url: str
) -> None:
    """Taking a lease takes the owner's named lock before the lease is visible; giving
    the lease back gives the lock back; closing the backend ends the session."""
    run_id = _new_id("lock")
    owner = f"far-away-host:1:1:{uuid.uuid4().hex[:8]}"
    backend.create_run(run_id, "locks")
    try:
        assert not _lock_in_use(mysql_url, owner)
        backend.acquire_lease(run_id, owner, 60)
        assert _lock_in_use(mysql_url, owner)
        backend.release_lease(run_id, owner)
        _wait_for(lambda: not _lock_in_use(mysql_url, owner), "the lock to be given back")
        backend.acquire_lease(run_id, owner, 60)
        assert _lock_in_use(mysql_url, owner)
        backend.close()
        _wait_for(lambda: not _lock_in_use(mysql_url, owner), "the session to end")
    finally:
        backend.delete_run(run_id)


def _on_server(mysql_url: str, *statements: str) -> list[Any]:
    """Run statements on the server (no database selected); the last one's rows."""
    from sqlalchemy.ext.asyncio import create_async_engine

    async def run() -> list[Any]:
        engine = create_async_engine(make_url(mysql_url).set(database=None))
        rows: list[Any] = []
        try:
            async with engine.begin() as connection:
                for statement in statements:
                    result = await connection.execute(text(statement))
                    rows = list(result.fetchall()) if result.returns_rows else []
        finally:
            await engine.dispose()
        return rows

    return asyncio.run(run())


def test_reads_of_a_database_without_tables_create_nothing(mysql_url: str) -> None:
    """Reads of a database flowkit never wrote answer as empty and create no table; the
    first write creates them."""

    name = f"flowkit_ro_{uuid.uuid4().hex[:12]}"
    _on_server(mysql_url, f"CREATE DATABASE {name}")
    url = make_url(mysql_url).set(database=name).render_as_string(hide_password=False)
    backend = SQLAlchemyFlowPersistence(url)
    try:
        assert backend.list_runs() == []
        assert backend.list_runs(metadata={"user": "u1"}) == []
        assert backend.get_run("r") is None
        assert backend.load_state("r") is None
        assert backend.history("r") == []
        tables = f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{name}'"
        assert _on_server(mysql_url, tables) == []
        backend.save_state("r", "a", {"id": "r"})
        assert len(_on_server(mysql_url, tables)) == 4
    finally:
        backend.close()
        _on_server(mysql_url, f"DROP DATABASE {name}")


def test_a_big_field_is_stored_once_even_by_two_writers(mysql_url: str) -> None:
    """An unchanged big field is stored once per run, also when a second backend (its
    own engine, so it does not know what the first stored) saves it again; prune then
    drops the blobs no checkpoint refers to."""
    first = SQLAlchemyFlowPersistence(mysql_url)
    second = SQLAlchemyFlowPersistence(mysql_url, engine_kwargs={"pool_size": 2})
    run_id = _new_id("blob")
    big = "b" * 5000
    try:
        first.save_state(run_id, "s0", {"id": run_id, "doc": big, "n": 0})
        second.save_state(run_id, "s1", {"id": run_id, "doc": big, "n": 1})
        first.save_state(run_id, "s2", {"id": run_id, "doc": big + "!", "n": 2})
        assert second.load_state(run_id) == {"id": run_id, "doc": big + "!", "n": 2}
        blobs = f"SELECT COUNT(*) FROM flowkit_blobs WHERE run_id = '{run_id}'"
        database = make_url(mysql_url).database
        assert _on_server(mysql_url, f"USE {database}", blobs) == [(2,)]
        assert first.prune(run_id, keep_last=1) == 2
        assert _on_server(mysql_url, f"USE {database}", blobs) == [(1,)]
        assert [c.state["n"] for c in first.history(run_id)] == [2]
    finally:
        first.delete_run(run_id)
        first.close()
        second.close()
