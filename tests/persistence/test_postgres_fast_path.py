"""PostgreSQL specifics of the fast path (``_sql_postgres``, ``_sql_pg_connections``):
pool exhaustion is an error that says what to raise, and connections the server ended
are replaced. The rules themselves (fencing, compare-and-set, claims) are the contract
suite's, which runs on PostgreSQL through the same path."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import pytest

from flowkit.exceptions import FlowkitError, PersistenceError
from flowkit.persistence import SQLAlchemyFlowPersistence

pytestmark = pytest.mark.postgres


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def test_pool_exhaustion_is_an_error_naming_the_pool_settings(postgres_url: str) -> None:
    """With every pooled connection busy (a save waiting on a row lock another session
    holds), the next operation fails after ``pool_timeout`` with a FlowkitError naming
    the operation and the settings to raise; the busy save completes afterwards."""
    import asyncpg

    persistence = SQLAlchemyFlowPersistence(
        postgres_url, engine_kwargs={"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.5}
    )
    run_id = f"pool-{uuid.uuid4().hex}"
    persistence.create_run(run_id, "Pool")
    caught: list[BaseException] = []

    async def scenario() -> Any:
        blocker = await asyncpg.connect(_dsn(postgres_url))
        try:
            transaction = blocker.transaction()
            await transaction.start()
            await blocker.execute("SELECT 1 FROM flowkit_runs WHERE run_id = $1 FOR UPDATE", run_id)
            blocked = asyncio.ensure_future(
                persistence.asave_checkpoint(run_id, "s1", {"id": run_id}, expected_seq=0)
            )
            # until the save holds the pool's only connection, waiting for the row lock
            while not await blocker.fetchval(
                "SELECT COUNT(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                "WHERE NOT l.granted AND a.datname = current_database()"
            ):
                assert not blocked.done(), blocked
                await asyncio.sleep(0.02)
            try:
                await persistence.aload_checkpoint(run_id)
            except BaseException as exc:
                caught.append(exc)
            await transaction.rollback()
            return await blocked
        finally:
            await blocker.close()

    try:
        saved = asyncio.run(scenario())
        assert saved.seq == 1
        assert len(caught) == 1, caught
        error = caught[0]
        assert isinstance(error, PersistenceError) and isinstance(error, FlowkitError)
        message = str(error)
        assert "load_checkpoint" in message
        assert "pool_size" in message and "max_overflow" in message
        assert "engine_kwargs" in message
        # the pool works again once the connection is free
        checkpoint = persistence.load_checkpoint(run_id)
        assert checkpoint is not None and checkpoint.seq == 1
    finally:
        persistence.delete_run(run_id)
        persistence.close()


def test_connections_the_server_ended_are_replaced(postgres_url: str) -> None:
    """Connections are kept between operations; when the server ends them
    (pg_terminate_backend, a restart), at most the next operation fails, as a
    PersistenceError, and the ones after it work on fresh connections."""
    import asyncpg

    name = f"flowkit-test-{uuid.uuid4().hex[:12]}"
    persistence = SQLAlchemyFlowPersistence(
        postgres_url,
        engine_kwargs={"connect_args": {"server_settings": {"application_name": name}}},
    )
    run_id = f"ended-{uuid.uuid4().hex}"

    async def terminate() -> int:
        connection = await asyncpg.connect(_dsn(postgres_url))
        try:
            return int(
                await connection.fetchval(
                    "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = $1",
                    name,
                )
            )
        finally:
            await connection.close()

    try:
        persistence.save_state(run_id, "s0", {"id": run_id, "n": 0})
        assert asyncio.run(terminate()) >= 1
        failures = []
        for n in range(1, 4):
            try:
                persistence.save_state(run_id, f"s{n}", {"id": run_id, "n": n})
            except PersistenceError as exc:
                failures.append(exc)
        assert len(failures) <= 1, failures
        state = persistence.load_state(run_id)
        assert state is not None and state["n"] == 3
        assert len(persistence.history(run_id)) == 4 - len(failures)
    finally:
        persistence.delete_run(run_id)
        persistence.close()


def test_racing_saves_of_one_seq_store_exactly_one(postgres_url: str) -> None:
    """Ten saves of the same next seq at once, on as many pooled connections: the
    database's guard in the one-statement save admits exactly one; the others write
    nothing and report the conflict (ConcurrentUpdateError) -- and a save fenced on an
    owner that is not the lease holder writes nothing either."""
    from flowkit.exceptions import ConcurrentUpdateError, LeaseLostError, RunLockedError

    persistence = SQLAlchemyFlowPersistence(postgres_url)
    run_id = f"race-{uuid.uuid4().hex}"
    owner = f"elsewhere:1:1:{uuid.uuid4().hex[:8]}"

    async def race() -> list[Any]:
        await persistence.abegin_run(
            run_id,
            "Race",
            owner=owner,
            ttl=60.0,
            method_name="kickoff",
            state={"id": run_id, "n": 0},
            expected_seq=0,
        )
        saves = [
            persistence.asave_checkpoint(
                run_id, f"s{n}", {"id": run_id, "n": n}, expected_seq=1, lease_owner=owner
            )
            for n in range(10)
        ]
        return await asyncio.gather(*saves, return_exceptions=True)

    try:
        results = asyncio.run(race())
        stored = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(stored) == 1 and stored[0].seq == 2
        assert all(isinstance(r, ConcurrentUpdateError) for r in refused), refused
        history = persistence.history(run_id)
        assert [c.seq for c in history] == [1, 2]
        assert history[1].state == {"id": run_id, "n": int(stored[0].method_name[1:])}
        intruder = f"elsewhere:2:1:{uuid.uuid4().hex[:8]}"
        with pytest.raises((RunLockedError, LeaseLostError)):
            persistence.save_checkpoint(
                run_id, "x", {"id": run_id}, expected_seq=2, lease_owner=intruder
            )
        assert [c.seq for c in persistence.history(run_id)] == [1, 2]
    finally:
        persistence.delete_run(run_id)
        persistence.close()


def test_more_operations_than_connections_wait_their_turn(postgres_url: str) -> None:
    """Sixty operations at once on a pool of 1 + 1 overflow: all complete (they queue for
    the two connections, which flowkit keeps between operations), and no more than two
    connections are ever open for the pool."""
    import asyncpg

    name = f"flowkit-test-{uuid.uuid4().hex[:12]}"
    persistence = SQLAlchemyFlowPersistence(
        postgres_url,
        engine_kwargs={
            "pool_size": 1,
            "max_overflow": 1,
            "pool_timeout": 20,
            "connect_args": {"server_settings": {"application_name": name}},
        },
    )
    run_ids = [f"turns-{n}-{uuid.uuid4().hex}" for n in range(60)]
    seen: list[int] = []

    async def scenario() -> list[Any]:
        watcher = await asyncpg.connect(_dsn(postgres_url))
        try:

            async def watch() -> None:
                while True:
                    seen.append(
                        await watcher.fetchval(
                            "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1",
                            name,
                        )
                    )
                    await asyncio.sleep(0.01)

            watching = asyncio.ensure_future(watch())
            try:
                return await asyncio.gather(
                    *(
                        persistence.asave_state(run_id, "s", {"id": run_id, "n": n})
                        for n, run_id in enumerate(run_ids)
                    ),
                    return_exceptions=True,
                )
            finally:
                watching.cancel()
                await asyncio.gather(watching, return_exceptions=True)
        finally:
            await watcher.close()

    try:
        results = asyncio.run(scenario())
        assert [r for r in results if r is not None] == []
        assert all(persistence.load_state(run_id) is not None for run_id in run_ids)
        assert seen and max(seen) <= 2, seen
    finally:
        for run_id in run_ids:
            persistence.delete_run(run_id)
        persistence.close()


def test_named_parameters_become_numbered_ones_and_casts_stay() -> None:
    """The asyncpg path numbers ``:name`` parameters ($1, $2, ...; a name used twice
    keeps its number) and leaves ``::type`` casts alone. It does not parse quoted text,
    so no statement of flowkit's may hold a literal with a colon in it."""
    from flowkit.persistence import _schema, _sql_postgres
    from flowkit.persistence._sql_database import asyncpg_sql

    sql, names = asyncpg_sql("SELECT :a, :b::jsonb, :a, x::text FROM t WHERE y = :c_1")
    assert sql == "SELECT $1, $2::jsonb, $1, x::text FROM t WHERE y = $3"
    assert names == ("a", "b", "c_1")
    literal_with_colon = re.compile(r"'[^']*:[^']*'")
    checked = 0
    for module in (_schema, _sql_postgres):
        for name, value in vars(module).items():
            if isinstance(value, str) and name.isupper():
                checked += 1
                assert not literal_with_colon.search(value), f"{module.__name__}.{name}"
    assert checked > 5


def test_a_claim_waiting_on_a_writer_returns_what_the_writer_committed(
    postgres_url: str,
) -> None:
    """claim_run is one statement on PostgreSQL, whose lease update waits for a writer
    holding the run row and then sees the row as the writer left it, while its read of
    the checkpoint sees the statement's older snapshot. A claim that waited for a writer
    committing checkpoint 2 must still answer checkpoint 2 (never 1, never none), and
    hold the lease; a claim with nothing in its way answers the latest in one go."""
    import asyncpg

    persistence = SQLAlchemyFlowPersistence(postgres_url)
    run_id = f"claim-{uuid.uuid4().hex}"
    owner = f"elsewhere:1:1:{uuid.uuid4().hex[:8]}"
    persistence.save_checkpoint(run_id, "one", {"id": run_id, "n": 1}, expected_seq=0)
    persistence.save_checkpoint(run_id, "two", {"id": run_id, "n": 2}, expected_seq=1)

    async def scenario() -> Any:
        writer = await asyncpg.connect(_dsn(postgres_url))
        try:
            # Take checkpoint 2 back out, then commit it again from a transaction that
            # holds the run row while the claim starts.
            row = await writer.fetchrow(
                "DELETE FROM flowkit_checkpoints WHERE run_id = $1 AND seq = 2 RETURNING *",
                run_id,
            )
            await writer.execute("UPDATE flowkit_runs SET last_seq = 1 WHERE run_id = $1", run_id)
            transaction = writer.transaction()
            await transaction.start()
            await writer.execute("UPDATE flowkit_runs SET last_seq = 2 WHERE run_id = $1", run_id)
            columns = list(row.keys())
            await writer.execute(
                f"INSERT INTO flowkit_checkpoints ({', '.join(columns)}) VALUES "
                f"({', '.join(f'${i + 1}' for i in range(len(columns)))})",
                *row.values(),
            )
            claim = asyncio.ensure_future(persistence.aclaim_run(run_id, owner, 60.0))
            while not await writer.fetchval(
                "SELECT COUNT(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                "WHERE NOT l.granted AND a.datname = current_database()"
            ):
                assert not claim.done(), claim
                await asyncio.sleep(0.02)
            await transaction.commit()
            return await claim
        finally:
            await writer.close()

    try:
        run, checkpoint = asyncio.run(scenario())
        assert run.last_seq == 2 and run.lease_owner == owner
        assert checkpoint is not None and checkpoint.seq == 2
        assert checkpoint.state == {"id": run_id, "n": 2}
        run, checkpoint = persistence.claim_run(run_id, owner, 60.0)  # ours: taken again
        assert checkpoint is not None and (run.lease_owner, checkpoint.seq) == (owner, 2)
    finally:
        persistence.delete_run(run_id)
        persistence.close()


def test_a_claim_of_a_damaged_run_row_raises_and_takes_no_lease(postgres_url: str) -> None:
    """The one-statement claim takes the lease before it checks the row it read: a row
    that fails the check raises the error naming the run and leaves the lease as it was
    (free), as the transaction form would."""
    import asyncpg

    from flowkit.exceptions import FlowkitError

    persistence = SQLAlchemyFlowPersistence(postgres_url)
    run_id = f"claim-bad-{uuid.uuid4().hex}"
    owner = f"elsewhere:1:1:{uuid.uuid4().hex[:8]}"
    persistence.save_checkpoint(run_id, "one", {"id": run_id, "n": 1}, expected_seq=0)

    async def raw(sql: str) -> Any:
        connection = await asyncpg.connect(_dsn(postgres_url))
        try:
            return await connection.fetchval(sql, run_id)
        finally:
            await connection.close()

    try:
        asyncio.run(raw("UPDATE flowkit_runs SET info = '{not json' WHERE run_id = $1"))
        with pytest.raises(FlowkitError, match=re.escape(run_id)):
            persistence.claim_run(run_id, owner, 60.0)
        lease = asyncio.run(raw("SELECT lease_owner FROM flowkit_runs WHERE run_id = $1"))
        assert lease is None
    finally:
        asyncio.run(raw("DELETE FROM flowkit_runs WHERE run_id = $1"))
        asyncio.run(raw("DELETE FROM flowkit_checkpoints WHERE run_id = $1"))
        persistence.close()
