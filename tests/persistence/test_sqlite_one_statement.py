"""SQLite's one-statement writes: ``begin_run`` of a new run, every step, ``end_run``
(``flowkit_writes`` in ``_schema``). Each is one autocommit statement, fenced by the
database, atomic under SIGKILL, and refused ones write nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from flowkit import Flow, FlowState, listen, start
from flowkit.exceptions import (
    ConcurrentUpdateError,
    LeaseLostError,
    RunLockedError,
    RunNotFoundError,
)
from flowkit.persistence import InMemoryFlowPersistence, RunRecord, SQLiteFlowPersistence


def _rows(db_path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db_path)) as connection:
        return connection.execute(sql, params).fetchall()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "runs.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SQLiteFlowPersistence]:
    backend = SQLiteFlowPersistence(db_path)
    yield backend
    backend.close()


# -- round trips ---------------------------------------------------------------------


class Counted(FlowState):
    counter: int = 0
    big: str = ""


class FiveSteps(Flow[Counted]):
    @start()
    def s0(self) -> None:
        self.state.counter += 1

    @listen(s0)
    def s1(self) -> None:
        self.state.counter += 1

    @listen(s1)
    def s2(self) -> None:
        self.state.counter += 1

    @listen(s2)
    def s3(self) -> None:
        self.state.counter += 1

    @listen(s3)
    def s4(self) -> int:
        self.state.counter += 1
        return self.state.counter


@pytest.fixture
def driver_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every call flowkit makes to aiosqlite's worker thread (the real connection's
    methods, counted on their way through)."""
    calls: list[str] = []
    for name in ("execute_fetchall", "executemany", "execute", "commit", "rollback"):
        original = getattr(aiosqlite.Connection, name)

        def counted(self: Any, *args: Any, _original: Any = original, _name: str = name) -> Any:
            calls.append(args[0] if args and isinstance(args[0], str) else _name)
            return _original(self, *args)

        monkeypatch.setattr(aiosqlite.Connection, name, counted)
    return calls


@pytest.mark.parametrize("big", ["", "x" * 5000])
def test_a_persisted_kickoff_is_one_statement_per_checkpoint(
    store: SQLiteFlowPersistence, driver_calls: list[str], big: str
) -> None:
    """A 5-step kickoff makes 6 calls to aiosqlite's worker: begin_run, 4 saves and
    end_run, one autocommit statement each (a big field's blob included); there were
    4 + 4 + 6 before begin_run and end_run became one statement each."""
    flow_cls = FiveSteps
    flow_cls(persistence=store).kickoff()  # the connection and schema are set up once
    driver_calls.clear()
    flow = flow_cls(persistence=store)
    assert flow.kickoff(inputs={"big": big}) == 5
    assert len(driver_calls) == 6, driver_calls
    assert "BEGIN" not in " ".join(driver_calls)
    run = store.get_run(flow.state.id)
    assert run is not None
    assert (run.status, run.last_seq, run.lease_owner, run.lease_expires_at) == (
        "completed",
        6,
        None,
        None,
    )
    assert [c.seq for c in store.history(flow.state.id)] == [1, 2, 3, 4, 5, 6]
    assert store.load_state(flow.state.id) == flow.state.model_dump(mode="json")


# -- fencing and refusals --------------------------------------------------------------


def _begin(store: SQLiteFlowPersistence, run_id: str, owner: str, **extra: Any) -> None:
    store.begin_run(
        run_id,
        "F",
        owner=owner,
        ttl=60,
        method_name="kickoff",
        state={"id": run_id, "n": 0, **extra},
        expected_seq=0,
    )


def _run_row(db_path: Path, run_id: str) -> list[tuple[Any, ...]]:
    return _rows(
        db_path,
        "SELECT status, last_seq, lease_owner, lease_expires_at, updated_at FROM flowkit_runs "
        "WHERE run_id = ?",
        (run_id,),
    )


def test_begin_run_of_an_existing_id_writes_nothing_then_decides(
    store: SQLiteFlowPersistence, db_path: Path
) -> None:
    """The one-statement begin of a taken id is refused whole (no second run row, no
    checkpoint); the transaction then applies begin_run's rules: a live holder's lease
    refuses it, a stale expected_seq too."""
    _begin(store, "r", "holder")
    before = _run_row(db_path, "r")
    with pytest.raises(RunLockedError):
        _begin(store, "r", "intruder")
    assert _run_row(db_path, "r") == before
    assert _rows(db_path, "SELECT seq FROM flowkit_checkpoints WHERE run_id = 'r'") == [(1,)]


def test_a_stale_owners_end_run_is_refused_by_the_database(
    store: SQLiteFlowPersistence, db_path: Path
) -> None:
    """After a takeover the former owner's end_run (its final checkpoint, status and
    lease release in one statement) is refused, writes nothing and leaves the new
    owner's lease; a stale seq is refused too."""
    _begin(store, "r", "old", big="y" * 4000)
    # the lease expires, a new owner takes the run and saves
    with contextlib.closing(sqlite3.connect(db_path)) as connection, connection:
        connection.execute("UPDATE flowkit_runs SET lease_expires_at = 1 WHERE run_id = 'r'")
    store.acquire_lease("r", "new", 60)
    store.save_checkpoint("r", "step", {"id": "r", "n": 1}, expected_seq=1, lease_owner="new")
    before = _run_row(db_path, "r")
    blobs = _rows(db_path, "SELECT hash FROM flowkit_blobs WHERE run_id = 'r'")
    for seq in (1, 2):  # its own stale seq, and the current one
        with pytest.raises(RunLockedError):
            store.end_run(
                "r", "last", {"id": "r", "n": 9, "big": "z" * 4000}, owner="old", expected_seq=seq
            )
    with pytest.raises(ConcurrentUpdateError):
        store.end_run("r", "last", {"id": "r", "n": 9}, owner="new", expected_seq=1)
    assert _run_row(db_path, "r") == before
    assert _rows(db_path, "SELECT hash FROM flowkit_blobs WHERE run_id = 'r'") == blobs
    assert [c.seq for c in store.history("r")] == [1, 2]
    # the new owner ends it; then nobody can append
    store.end_run("r", "last", {"id": "r", "n": 2}, owner="new", expected_seq=2)
    run = store.get_run("r")
    assert run is not None
    assert (run.status, run.last_seq, run.lease_owner) == ("completed", 3, None)
    with pytest.raises(LeaseLostError):
        store.end_run("r", "again", {"id": "r"}, owner="new", expected_seq=3)
    with pytest.raises(LeaseLostError):
        store.save_checkpoint("r", "again", {"id": "r"}, expected_seq=3, lease_owner="old")


def test_a_step_with_a_new_big_field_is_one_fenced_statement(
    store: SQLiteFlowPersistence, db_path: Path, driver_calls: list[str]
) -> None:
    """A save whose big field changed writes its blob and checkpoint in one statement;
    refused (stale owner), it writes neither."""
    _begin(store, "r", "me", big="a" * 4000)
    driver_calls.clear()
    saved = store.save_checkpoint(
        "r", "s", {"id": "r", "big": "b" * 4000}, expected_seq=1, lease_owner="me"
    )
    assert saved.seq == 2 and len(driver_calls) == 1, driver_calls
    assert len(_rows(db_path, "SELECT hash FROM flowkit_blobs WHERE run_id = 'r'")) == 2
    with pytest.raises(RunLockedError):
        store.save_checkpoint(
            "r", "s", {"id": "r", "big": "c" * 4000}, expected_seq=2, lease_owner="other"
        )
    assert len(_rows(db_path, "SELECT hash FROM flowkit_blobs WHERE run_id = 'r'")) == 2
    assert store.load_state("r") == {"id": "r", "big": "b" * 4000}


def test_update_run_fenced_by_its_owner(store: SQLiteFlowPersistence, db_path: Path) -> None:
    """update_run(lease_owner=...) changes the run only while that owner holds the lease:
    a stale owner is refused and nothing changes."""
    _begin(store, "r", "old")
    assert store.update_run("r", status="failed", lease_owner="old").status == "failed"
    with pytest.raises(RunLockedError):
        store.update_run("r", status="completed", lease_owner="intruder")
    with contextlib.closing(sqlite3.connect(db_path)) as connection, connection:
        connection.execute("UPDATE flowkit_runs SET lease_expires_at = 1 WHERE run_id = 'r'")
    store.acquire_lease("r", "new", 60)
    before = _run_row(db_path, "r")
    with pytest.raises(RunLockedError):
        store.update_run("r", status="completed", info={"x": 1}, lease_owner="old")
    store.release_lease("r", "new")
    with pytest.raises(LeaseLostError):
        store.update_run("r", status="completed", lease_owner="old")
    assert _run_row(db_path, "r")[0][:2] == before[0][:2]
    with pytest.raises(RunNotFoundError):
        store.update_run("missing", status="failed", lease_owner="old")


# -- SIGKILL around and inside the one-statement begin and end ----------------------

SCRIPT = """
import json
import os
import signal
import sys

from flowkit import Flow, FlowState, listen, start
from flowkit.persistence import SQLiteFlowPersistence

db, run_id, point, log, action = sys.argv[1:6]


def die():
    os.kill(os.getpid(), signal.SIGKILL)


class Dies(SQLiteFlowPersistence):
    async def abegin_run(self, *args, **kwargs):
        if point == "before-begin":
            die()
        result = await super().abegin_run(*args, **kwargs)
        if point == "after-begin":
            die()
        return result

    async def aend_run(self, *args, **kwargs):
        if point == "before-end":
            die()
        result = await super().aend_run(*args, **kwargs)
        if point == "after-end":
            die()
        return result


class Four(Flow[FlowState]):
    def note(self, name):
        with open(log, "a") as f:
            f.write(name + "\\n")

    @start()
    def a(self):
        self.note("a")

    @listen(a)
    def b(self):
        self.note("b")

    @listen(b)
    def c(self):
        self.note("c")

    @listen(c)
    def d(self):
        self.note("d")
        return "done"


backend = Dies(db)
if point in ("in-begin", "in-end"):
    # SIGKILL from aiosqlite's thread while SQLite runs the one statement's trigger
    # (after its first inner statement, before the statement commits).
    backend.init_db()
    database = backend._database()
    kind = "'start'" if point == "in-begin" else "'end'"
    seen = []

    def trace(sql):
        if "flowkit_writes" in sql and kind in sql:
            seen.append(sql)
            if len(seen) == 3:
                die()

    database.portal.run(database._sqlite_driver.set_trace_callback(trace))
flow = Four(persistence=backend, lease_ttl=60)
if action == "kickoff":
    print(json.dumps(flow.kickoff(inputs={"id": run_id})))
else:
    print(json.dumps(flow.resume(run_id)))
"""


def _script(tmp_path: Path, db_path: Path, run_id: str, point: str, action: str) -> Any:
    script = tmp_path / "four.py"
    script.write_text(textwrap.dedent(SCRIPT))
    return subprocess.run(
        [sys.executable, str(script), str(db_path), run_id, point, str(tmp_path / "log"), action],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )


def _ran(tmp_path: Path) -> Counter[str]:
    log = tmp_path / "log"
    return Counter(log.read_text().split()) if log.exists() else Counter()


@pytest.mark.parametrize("point", ["before-begin", "in-begin"])
def test_sigkill_before_the_begin_statement_commits_leaves_nothing(
    tmp_path: Path, db_path: Path, point: str
) -> None:
    """Killed before or inside the one-statement begin: no run row, no checkpoint (the
    statement is atomic); kicking the same id off again runs every method once."""
    killed = _script(tmp_path, db_path, "run-1", point, "kickoff")
    assert killed.returncode == -9, killed.stderr
    if db_path.exists():
        assert _rows(db_path, "SELECT COUNT(*) FROM flowkit_runs") == [(0,)]
        assert _rows(db_path, "SELECT COUNT(*) FROM flowkit_checkpoints") == [(0,)]
    again = _script(tmp_path, db_path, "run-1", "none", "kickoff")
    assert json.loads(again.stdout) == "done", again.stderr
    assert _ran(tmp_path) == Counter("abcd")


def test_sigkill_after_the_begin_statement_then_resume_at_once(
    tmp_path: Path, db_path: Path
) -> None:
    """Killed right after begin_run committed: the run exists, leased by the dead
    process; resume in a new process takes it over at once and runs each method once."""
    killed = _script(tmp_path, db_path, "run-1", "after-begin", "kickoff")
    assert killed.returncode == -9, killed.stderr
    assert _rows(db_path, "SELECT status, last_seq FROM flowkit_runs") == [("running", 1)]
    assert _rows(db_path, "SELECT lease_owner IS NOT NULL FROM flowkit_runs") == [(1,)]
    resumed = _script(tmp_path, db_path, "run-1", "none", "resume")
    assert json.loads(resumed.stdout) == "done", resumed.stderr
    assert _ran(tmp_path) == Counter("abcd")


@pytest.mark.parametrize("point", ["before-end", "in-end"])
def test_sigkill_before_the_end_statement_commits_then_resume(
    tmp_path: Path, db_path: Path, point: str
) -> None:
    """Killed before or inside the one-statement end: the last checkpoint, the status
    and the lease release are all absent (atomic); resume re-runs only the last method,
    whose checkpoint was not committed; the committed ones never run again."""
    killed = _script(tmp_path, db_path, "run-1", point, "kickoff")
    assert killed.returncode == -9, killed.stderr
    assert _rows(db_path, "SELECT status, last_seq, lease_owner IS NOT NULL FROM flowkit_runs") == [
        ("running", 4, 1)
    ]
    assert _rows(db_path, "SELECT MAX(seq) FROM flowkit_checkpoints") == [(4,)]
    resumed = _script(tmp_path, db_path, "run-1", "none", "resume")
    assert json.loads(resumed.stdout) == "done", resumed.stderr
    assert _ran(tmp_path) == Counter({"a": 1, "b": 1, "c": 1, "d": 2})
    assert _rows(db_path, "SELECT status, last_seq, lease_owner FROM flowkit_runs") == [
        ("completed", 5, None)
    ]


def test_sigkill_after_the_end_statement_leaves_a_finished_run(
    tmp_path: Path, db_path: Path
) -> None:
    """Killed right after end_run committed: the run is completed with its lease given
    back; resuming it runs nothing again."""
    killed = _script(tmp_path, db_path, "run-1", "after-end", "kickoff")
    assert killed.returncode == -9, killed.stderr
    assert _rows(db_path, "SELECT status, last_seq, lease_owner FROM flowkit_runs") == [
        ("completed", 5, None)
    ]
    _script(tmp_path, db_path, "run-1", "none", "resume")
    assert _ran(tmp_path) == Counter("abcd")


def test_connection_objects_are_temporary(store: SQLiteFlowPersistence, db_path: Path) -> None:
    """flowkit_writes and its triggers belong to each connection (TEMP), not to the
    stored schema: the file holds only the tables, indexes and schema-3 trigger."""
    store.save_state("r", "m", {"id": "r"})
    names = {name for (name,) in _rows(db_path, "SELECT name FROM sqlite_master")}
    assert not {n for n in names if n.startswith("flowkit_writes")}

    async def temp_objects() -> set[str]:
        database = store._database()
        rows = await database._sqlite_driver.execute_fetchall("SELECT name FROM sqlite_temp_master")
        return {row[0] for row in rows}

    assert "flowkit_writes" in store._database().portal.run(temp_objects())


# -- update_run fencing and backends written before it -------------------------------


class OldUpdate(InMemoryFlowPersistence):
    """A backend whose update_run predates ``lease_owner``."""

    def update_run(  # type: ignore[override]
        self,
        run_id: str,
        *,
        status: str | None = None,
        fingerprint: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> RunRecord:
        return super().update_run(run_id, status=status, fingerprint=fingerprint, info=info)


class Breaks(Flow[FlowState]):
    @start()
    def first(self) -> None:
        pass

    @listen(first)
    def second(self) -> None:
        raise RuntimeError("boom")


def test_a_backend_without_fenced_update_run_keeps_working() -> None:
    """Its update_run is never given lease_owner: ``fenced_update_run`` is False (from
    its signature), the async form drops ``lease_owner=None``, and a failing run is
    still marked failed (the engine renews the lease first, as before)."""
    assert SQLiteFlowPersistence.fenced_update_run and InMemoryFlowPersistence.fenced_update_run
    assert not OldUpdate.fenced_update_run
    backend = OldUpdate()
    flow = Breaks(persistence=backend)
    with pytest.raises(RuntimeError, match="boom"):
        flow.kickoff()
    run = backend.get_run(flow.state.id)
    assert run is not None and (run.status, run.lease_owner) == ("failed", None)
    assert asyncio.run(backend.aupdate_run(flow.state.id, status="completed")).status == (
        "completed"
    )


def test_a_failing_run_is_marked_failed_through_the_fenced_update(
    store: SQLiteFlowPersistence,
) -> None:
    """On a built-in backend a method that raises marks the run failed in one fenced
    update_run (no renew before it), and the lease is given back."""
    flow = Breaks(persistence=store)
    with pytest.raises(RuntimeError, match="boom"):
        flow.kickoff()
    run = store.get_run(flow.state.id)
    assert run is not None and (run.status, run.lease_owner) == ("failed", None)
    assert run.info.get("error", {}).get("type") == "RuntimeError"
