"""Blocking (derived sync) calls: where they run, and what Ctrl-C leaves behind.

The built-in SQLite backend's operations work from any event loop, so a blocking call
from a thread without a running loop runs on that thread's own reusable loop (no portal
thread); a user-defined async backend keeps every blocking call on one loop, the portal's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from flowkit.persistence import Checkpoint, FlowPersistence, SQLiteFlowPersistence


def _in_subprocess(tmp_path: Path, code: str, *args: str) -> dict[str, Any]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    done = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_sqlite_blocking_calls_from_a_plain_thread_use_no_portal(tmp_path: Path) -> None:
    """Saves and loads from the main thread and from another thread, none with a running
    loop, give the right answers without starting the shared sync portal thread."""
    result = _in_subprocess(
        tmp_path,
        """
        import json, sys, threading
        from flowkit.persistence import SQLiteFlowPersistence

        store = SQLiteFlowPersistence(sys.argv[1])
        store.save_checkpoint("r", "a", {"n": 1}, expected_seq=0)
        got = [store.load_checkpoint("r").state]

        def other():
            store.save_checkpoint("r", "b", {"n": 2}, expected_seq=1)
            got.append(store.load_state("r"))

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        got.append([c.seq for c in store.history("r")])
        names = [t.name for t in threading.enumerate()]
        store.close()
        print(json.dumps({"got": got, "threads": names}))
        """,
        str(tmp_path / "runs.db"),
    )
    assert result["got"] == [{"n": 1}, {"n": 2}, [1, 2]]
    assert "flowkit-persistence-sync" not in result["threads"], result["threads"]


def test_sqlite_blocking_load_from_a_thread_with_a_running_loop(tmp_path: Path) -> None:
    """A blocking load called from inside a running loop (a notebook cell, a sync helper
    in an async handler) works, and so does the plain thread's next call."""
    store = SQLiteFlowPersistence(tmp_path / "runs.db")
    try:
        store.save_checkpoint("r", "a", {"n": 1}, expected_seq=0)

        async def inside() -> Checkpoint | None:
            return store.load_checkpoint("r")

        inner = asyncio.run(inside())
        assert inner is not None and inner.state == {"n": 1}
        assert store.load_state("r") == {"n": 1}
        assert store.load_checkpoint("missing") is None
        assert store.load_checkpoint("r", 7) is None
    finally:
        store.close()


class LoopBound(FlowPersistence):
    """A user-defined async backend holding a resource made on the first loop it sees
    (as an asyncpg connection is): using it from another loop is an error."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.states: dict[str, dict[str, Any]] = {}
        self.loops: list[int] = []

    def _check_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self.loop is None:
            self.loop = loop
        elif loop is not self.loop:
            raise RuntimeError("the connection belongs to another loop")
        self.loops.append(id(loop))

    async def asave_state(
        self, flow_uuid: str, method_name: str, state_data: dict[str, Any]
    ) -> None:
        self._check_loop()
        self.states[flow_uuid] = dict(state_data)

    async def aload_state(self, flow_uuid: str) -> dict[str, Any] | None:
        self._check_loop()
        return self.states.get(flow_uuid)


class SQLiteWithLoopBoundCache(SQLiteFlowPersistence):
    """A subclass of the built-in SQLite backend that defines an async operation itself
    (and may hold loop-bound resources in it)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.loops: set[int] = set()

    async def aload_checkpoint(self, run_id: str, seq: int | None = None) -> Checkpoint | None:
        self.loops.add(id(asyncio.get_running_loop()))
        return await super().aload_checkpoint(run_id, seq)


class LoopBoundHistory:
    """A mixin bringing an async operation of its own."""

    async def ahistory(self, run_id: str) -> list[Checkpoint]:
        asyncio.get_running_loop()
        return []


class SQLiteWithMixin(LoopBoundHistory, SQLiteFlowPersistence):
    pass


class PlainSQLiteSubclass(SQLiteFlowPersistence):
    def describe(self) -> str:
        return "no async operation of its own"


def test_only_the_built_in_sqlite_and_asyncpg_operations_are_taken_to_work_on_any_loop(
    tmp_path: Path,
) -> None:
    """The flags follow the async operations: kept by a subclass that adds none, dropped
    by one that defines or mixes one in; on for SQLite and for PostgreSQL through asyncpg
    (a blocking call runs on the caller's thread's loop, on a connection that thread
    owns), off for other URLs (reads answered on the caller's thread: only for a SQLite
    file)."""
    from flowkit.persistence import SQLAlchemyFlowPersistence

    assert SQLiteFlowPersistence(tmp_path / "a.db")._any_loop
    assert PlainSQLiteSubclass(tmp_path / "a.db")._any_loop
    assert not SQLiteWithLoopBoundCache(tmp_path / "a.db")._any_loop
    assert not SQLiteWithMixin(tmp_path / "a.db")._any_loop
    assert SQLAlchemyFlowPersistence("postgresql+asyncpg://u@localhost/db")._any_loop
    assert not SQLAlchemyFlowPersistence("postgresql+psycopg://u@localhost/db")._any_loop
    assert not SQLAlchemyFlowPersistence("mysql+asyncmy://u@localhost/db")._any_loop
    assert not LoopBound()._any_loop
    # Reads answered on the caller's thread: the same rule, and only for a SQLite file.
    reads = {"load_checkpoint", "load_state", "get_run", "history", "list_runs"}
    assert SQLiteFlowPersistence(tmp_path / "a.db")._inline_ops == reads
    assert PlainSQLiteSubclass(tmp_path / "a.db")._inline_ops == reads
    assert not SQLiteWithLoopBoundCache(tmp_path / "a.db")._inline_ops
    assert not SQLiteWithMixin(tmp_path / "a.db")._inline_ops
    assert not SQLiteFlowPersistence(":memory:")._inline_ops
    assert not SQLAlchemyFlowPersistence("postgresql+asyncpg://u@localhost/db")._inline_ops
    assert not LoopBound()._inline_ops


def _from_everywhere(call: Any) -> None:
    """``call()`` from this thread, another thread, and inside a running loop."""
    call()
    thread = threading.Thread(target=call)
    thread.start()
    thread.join()

    async def inside() -> None:
        call()

    asyncio.run(inside())


def test_a_user_defined_async_backend_sees_one_loop() -> None:
    """Every blocking call of a user-defined async backend runs on one loop, whatever
    thread makes it and whether that thread runs a loop."""
    backend = LoopBound()
    failures: list[BaseException] = []

    def call() -> None:
        try:
            backend.save_state("r", "a", {"n": len(backend.loops)})
            backend.load_state("r")
        except BaseException as exc:  # collected, checked below
            failures.append(exc)

    _from_everywhere(call)
    assert failures == []
    assert len(backend.loops) == 6 and len(set(backend.loops)) == 1


def test_a_subclass_defining_an_async_operation_keeps_one_loop(tmp_path: Path) -> None:
    """A subclass of SQLiteFlowPersistence that defines an async operation itself is not
    assumed to work from any loop: its blocking calls all run on the portal's loop."""
    store = SQLiteWithLoopBoundCache(tmp_path / "runs.db")
    try:
        store.save_checkpoint("r", "a", {"n": 1}, expected_seq=0)
        _from_everywhere(lambda: store.load_checkpoint("r"))
        assert len(store.loops) == 1
        assert store.load_state("r") == {"n": 1}
    finally:
        store.close()


def _statements(store: SQLiteFlowPersistence, call: Any) -> list[str]:
    """The SQL statements SQLite runs for ``call()`` on the store's aiosqlite connection."""
    store.init_db()
    database = store._database()
    seen: list[str] = []
    database.portal.run(database._sqlite_driver.set_trace_callback(seen.append))
    try:
        call()
    finally:
        database.portal.run(database._sqlite_driver.set_trace_callback(None))
    return [" ".join(sql.split()[:2]).upper() for sql in seen]


def _read_statements(store: SQLiteFlowPersistence, call: Any) -> list[str]:
    """The SQL statements SQLite runs for ``call()`` on the store's read-only connection
    (the one a blocking read on this thread takes, once one is open)."""
    store.load_state("r")  # opens it
    readers = store._database()._readers
    assert readers is not None
    [connection] = readers._idle
    seen: list[str] = []
    connection.set_trace_callback(seen.append)
    try:
        call()
    finally:
        connection.set_trace_callback(None)
    return [" ".join(sql.split()[:2]).upper() for sql in seen]


def test_loading_the_latest_checkpoint_is_one_statement(tmp_path: Path) -> None:
    """The latest checkpoint (and a given seq) is read by one statement in autocommit;
    one with blob-stored fields is read with its blobs in one transaction: awaited (on
    aiosqlite's connection) and blocking (on a read-only connection, this thread)."""
    store = SQLiteFlowPersistence(tmp_path / "runs.db")
    try:
        store.save_checkpoint("r", "a", {"n": 1}, expected_seq=0)
        big = {"text": "x" * 200_000}
        store.save_checkpoint("b", "a", big, expected_seq=0)

        def check(statements: Any, load: Any) -> None:
            assert statements(store, lambda: load("r")) == ["SELECT R.LAST_SEQ,"]
            assert statements(store, lambda: load("r", 1)) == ["SELECT SEQ,"]
            with_blobs = statements(store, lambda: load("b"))
            assert with_blobs[0] == "SELECT R.LAST_SEQ,"  # tried alone first
            assert with_blobs[1] == "BEGIN" and with_blobs[-1] == "COMMIT", with_blobs
            assert len(with_blobs) == 5
            loaded = load("b")
            assert loaded is not None and loaded.state == big

        check(_statements, lambda *a: asyncio.run(store.aload_checkpoint(*a)))
        check(_read_statements, store.load_checkpoint)
    finally:
        store.close()


CTRL_C = """
import asyncio, json, os, signal, sys, threading
from flowkit.persistence import SQLiteFlowPersistence

store = SQLiteFlowPersistence(sys.argv[1])
store.save_checkpoint("r", "a", {"n": 1}, expected_seq=0)
database = store._database()
armed = []
main = threading.main_thread().ident

def trace(sql):  # on aiosqlite's thread: Ctrl-C while the caller waits for SQLite
    if armed and armed[0] in sql:
        armed.clear()
        signal.pthread_kill(main, signal.SIGINT)

database.portal.run(database._sqlite_driver.set_trace_callback(trace))
loop = asyncio.new_event_loop()
outcome = {}
for name, marker, call in (
    # (a blocking read runs on this thread: tests/persistence/test_sqlite_blocking_reads.py)
    ("awaited read", "SELECT", lambda: loop.run_until_complete(store.aload_checkpoint("r"))),
    ("write", "INSERT", lambda: store.save_checkpoint("r", "b", {"n": 2}, expected_seq=1)),
    (
        "big write",
        "INSERT",
        lambda: store.save_checkpoint("r", "c", {"n": 3, "big": "y" * 300_000}, expected_seq=2),
    ),
):
    armed.append(marker)
    try:
        call()
        outcome[name] = "finished"
    except KeyboardInterrupt:
        outcome[name] = "interrupted"
    if name == "write" and outcome[name] == "interrupted":
        # the one-statement save committed or not: either way the next one follows it
        latest = store.load_checkpoint("r").seq
        if latest == 1:
            store.save_checkpoint("r", "b", {"n": 2}, expected_seq=1)
database.portal.run(database._sqlite_driver.set_trace_callback(None))
latest = store.load_checkpoint("r")
outcome["latest"] = [latest.seq, latest.state.get("n")]
outcome["next"] = store.save_checkpoint("r", "d", {"n": 4}, expected_seq=latest.seq).seq
outcome["loaded"] = store.load_state("r")
store.close()
loop.close()
print(json.dumps(outcome))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="pthread_kill and SIGINT")
def test_ctrl_c_during_a_blocking_call_leaves_nothing_half_done(tmp_path: Path) -> None:
    """Ctrl-C while an awaited read or a blocking write waits for SQLite raises
    KeyboardInterrupt; the store stays usable and each write is wholly there or wholly
    absent."""
    db = tmp_path / "runs.db"
    outcome = _in_subprocess(tmp_path, CTRL_C, str(db))
    assert outcome["awaited read"] == "interrupted"
    assert outcome["write"] == "interrupted"
    assert outcome["big write"] == "interrupted"
    seq, n = outcome["latest"]
    assert (seq, n) in ((2, 2), (3, 3)), outcome  # the big write: all of it or none
    assert outcome["next"] == seq + 1
    assert outcome["loaded"] == {"n": 4}
    with contextlib.closing(sqlite3.connect(db)) as raw:
        seqs = [row[0] for row in raw.execute("SELECT seq FROM flowkit_checkpoints ORDER BY seq")]
        (last,) = raw.execute("SELECT last_seq FROM flowkit_runs WHERE run_id = 'r'").fetchone()
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert seqs == list(range(1, seq + 2)) and last == seq + 1


def test_blocking_calls_from_many_threads_share_the_connection(tmp_path: Path) -> None:
    """Threads without loops, each saving and loading its own run through one store,
    and one thread inside a running loop, all get their own answers back."""
    store = SQLiteFlowPersistence(tmp_path / "runs.db")
    failures: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            for seq in range(1, 21):
                store.save_checkpoint(name, "step", {"n": seq}, expected_seq=seq - 1)
                loaded = store.load_checkpoint(name)
                assert loaded is not None and (loaded.seq, loaded.state) == (seq, {"n": seq})
        except BaseException as exc:  # collected, checked below
            failures.append(exc)

    async def inside_a_loop() -> None:
        worker("in-loop")

    threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(6)]
    threads.append(threading.Thread(target=lambda: asyncio.run(inside_a_loop())))
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        assert sorted(run.run_id for run in store.list_runs()) == sorted(
            ["in-loop", *(f"t{i}" for i in range(6))]
        )
    finally:
        store.close()


@pytest.mark.parametrize("server", ["postgres", "mysql"])
def test_server_blocking_calls_go_straight_to_the_database_portal(
    tmp_path: Path, server: str, request: pytest.FixtureRequest
) -> None:
    """PostgreSQL and MariaDB: blocking calls from the main thread, another thread and a
    thread inside a running loop give the right answers, and none of them goes through
    the shared sync portal (one thread hop, to the database's own portal); after close()
    a new call reopens the database."""
    url = request.getfixturevalue(f"{server}_url")
    run_id = f"home-{uuid.uuid4().hex}"
    result = _in_subprocess(
        tmp_path,
        """
        import asyncio, json, sys, threading
        from flowkit.persistence import SQLAlchemyFlowPersistence

        store = SQLAlchemyFlowPersistence(sys.argv[1])
        run_id = sys.argv[2]
        store.save_checkpoint(run_id, "a", {"n": 1}, expected_seq=0)
        got = [store.load_checkpoint(run_id).state]

        def other():
            store.save_checkpoint(run_id, "b", {"n": 2}, expected_seq=1)
            got.append(store.load_state(run_id))

        async def inside_a_loop():
            got.append(store.load_checkpoint(run_id).seq)

        for target in (other, lambda: asyncio.run(inside_a_loop())):
            thread = threading.Thread(target=target)
            thread.start()
            thread.join()
        names = [t.name for t in threading.enumerate()]
        store.close()
        got.append([c.seq for c in store.history(run_id)])  # reopened after close()
        store.delete_run(run_id)
        store.close()
        print(json.dumps({"got": got, "threads": names}))
        """,
        url,
        run_id,
    )
    assert result["got"] == [{"n": 1}, {"n": 2}, 2, [1, 2]]
    assert "flowkit-persistence-sync" not in result["threads"], result["threads"]
