"""Blocking reads of the built-in SQLite backend, answered on the caller's thread.

``load_checkpoint``, ``load_state``, ``get_run``, ``history`` and ``list_runs`` called in
their plain (blocking) form run on the calling thread, on read-only connections of the
process (no event loop run, no thread woken). These tests hold them to the rules of every
read: they see what any connection or process committed, never wait for a writer, never
write, report damaged rows, give the right answer to many threads at once, and leave no
connection open after ``close()`` (nor share one with a forked child).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from flowkit.exceptions import CorruptCheckpointError
from flowkit.persistence import SQLiteFlowPersistence

# Far below the 30 s SQLite busy timeout a read would hit if it waited for the writer,
# far above what a read takes on a loaded machine.
PROMPT = 10
BIG = "x" * 200_000  # stored as a blob: the checkpoint is read in a transaction

linux_only = pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir(), reason="counts open files through /proc"
)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "flows.db"
    store = SQLiteFlowPersistence(path)
    store.save_checkpoint("r1", "a", {"id": "r1", "n": 1}, expected_seq=0)
    store.save_checkpoint("big", "a", {"id": "big", "doc": BIG}, expected_seq=0)
    store.close()
    return path


@pytest.fixture
def store(db_path: Path) -> Iterator[SQLiteFlowPersistence]:
    backend = SQLiteFlowPersistence(db_path)
    yield backend
    backend.close()


def _reads(store: SQLiteFlowPersistence, run_id: str = "r1") -> tuple[Any, ...]:
    latest = store.load_checkpoint(run_id)
    run = store.get_run(run_id)
    return (
        None if latest is None else (latest.seq, latest.state),
        store.load_state(run_id),
        None if run is None else run.last_seq,
        [c.seq for c in store.history(run_id)],
        sorted(r.run_id for r in store.list_runs()),
    )


def _promptly(call: Callable[[], Any]) -> Any:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result(timeout=PROMPT)


def _open_files(*paths: Path) -> int:
    """How many of this process's open file descriptors point at ``paths``."""
    wanted = {str(p) for p in paths}
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own descriptor)
            continue
        count += target in wanted
    return count


def _database_files(db_path: Path) -> tuple[Path, ...]:
    return (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm"))


def test_a_blocking_read_sees_what_another_process_committed(
    store: SQLiteFlowPersistence, db_path: Path, tmp_path: Path
) -> None:
    """After another process appended a checkpoint and started a run, the next blocking
    reads (on connections opened before that) return them."""
    assert _reads(store)[0] == (1, {"id": "r1", "n": 1})
    script = tmp_path / "writer.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            from flowkit.persistence import SQLiteFlowPersistence

            other = SQLiteFlowPersistence(sys.argv[1])
            other.save_checkpoint("r1", "b", {"id": "r1", "n": 2}, expected_seq=1)
            other.save_state("r2", "a", {"id": "r2"})
            other.close()
            """
        )
    )
    subprocess.run([sys.executable, str(script), str(db_path)], check=True, timeout=120)
    assert _reads(store) == (
        (2, {"id": "r1", "n": 2}),
        {"id": "r1", "n": 2},
        2,
        [1, 2],
        ["big", "r1", "r2"],
    )


def test_a_blocking_read_sees_this_process_s_own_writes(store: SQLiteFlowPersistence) -> None:
    """A save (through the backend's writing connection) is seen by the next blocking
    read, from this thread and from another one."""
    store.load_checkpoint("r1")  # a read connection is open before the write
    store.save_checkpoint("r1", "b", {"id": "r1", "n": 2}, expected_seq=1)
    assert _reads(store)[:4] == ((2, {"id": "r1", "n": 2}), {"id": "r1", "n": 2}, 2, [1, 2])
    assert _promptly(lambda: _reads(store)[2]) == 2


def test_blocking_reads_do_not_wait_for_a_writer_nor_see_its_uncommitted_rows(
    store: SQLiteFlowPersistence, db_path: Path
) -> None:
    """While another connection holds the write lock with a new checkpoint not yet
    committed, every blocking read answers at once with what was committed; once the
    writer commits, the next reads see the new checkpoint."""
    before = _reads(store)
    writer = sqlite3.connect(db_path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute(
            "INSERT INTO flowkit_checkpoints (run_id, seq, method_name, state, meta, blobs, "
            "created_at) SELECT run_id, 2, 'b', ?, meta, blobs, created_at "
            "FROM flowkit_checkpoints WHERE run_id = 'r1' AND seq = 1",
            (json.dumps({"id": "r1", "n": 2}),),
        )
        writer.execute("UPDATE flowkit_runs SET last_seq = 2 WHERE run_id = 'r1'")
        assert _promptly(lambda: _reads(store)) == before
        fresh = SQLiteFlowPersistence(db_path)
        try:
            assert _promptly(lambda: _reads(fresh)) == before
        finally:
            fresh.close()
        writer.execute("COMMIT")
    finally:
        if writer.in_transaction:
            writer.execute("ROLLBACK")
        writer.close()
    assert _reads(store)[:4] == ((2, {"id": "r1", "n": 2}), {"id": "r1", "n": 2}, 2, [1, 2])


def test_blocking_reads_never_write_the_file(db_path: Path) -> None:
    """A process that only reads leaves the database file's bytes as they were."""
    with closing(sqlite3.connect(db_path)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = db_path.read_bytes()
    reader = SQLiteFlowPersistence(db_path)
    try:
        assert _reads(reader)[0] == (1, {"id": "r1", "n": 1})
        assert reader.load_state("big") == {"id": "big", "doc": BIG}
    finally:
        reader.close()
    assert db_path.read_bytes() == before


def test_a_read_only_process_starts_no_thread(db_path: Path, tmp_path: Path) -> None:
    """Blocking reads in a process that never writes run on its main thread: no portal
    thread and no aiosqlite worker is started."""
    script = tmp_path / "reader.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, sys, threading
            from flowkit.persistence import SQLiteFlowPersistence

            store = SQLiteFlowPersistence(sys.argv[1])
            got = [
                store.load_checkpoint("r1").seq,
                store.load_state("big")["doc"] == "x" * 200_000,
                store.get_run("r1").last_seq,
                len(store.history("r1")),
                len(store.list_runs()),
            ]
            threads = [t.name for t in threading.enumerate()]
            store.close()
            print(json.dumps({"got": got, "threads": threads}))
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script), str(db_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"got": [1, True, 1, 1, 2], "threads": ["MainThread"]}


def test_a_damaged_row_is_reported_and_the_reads_go_on(
    store: SQLiteFlowPersistence, db_path: Path
) -> None:
    """A blocking read of a damaged checkpoint raises CorruptCheckpointError naming the
    run and seq (a blob-stored one too, read in a transaction); the next reads of
    healthy runs answer, and no read transaction is left open."""
    assert _reads(store)[0] == (1, {"id": "r1", "n": 1})
    with closing(sqlite3.connect(db_path)) as connection, connection:
        connection.execute("UPDATE flowkit_checkpoints SET state = '{bad' WHERE run_id = 'r1'")
        connection.execute("UPDATE flowkit_blobs SET data = '{bad' WHERE run_id = 'big'")
    for read in (lambda: store.load_checkpoint("r1"), lambda: store.load_state("big")):
        with pytest.raises(CorruptCheckpointError, match=r"seq 1 of run '(r1|big)'") as info:
            read()
        assert info.value.seq == 1
    store.save_state("r2", "a", {"id": "r2"})
    assert store.load_state("r2") == {"id": "r2"}
    _no_reader_holds_a_snapshot(db_path)


def _no_reader_holds_a_snapshot(db_path: Path) -> None:
    """A full WAL checkpoint succeeds at once only when no connection is inside a read
    transaction (an open snapshot would keep it busy)."""
    with closing(sqlite3.connect(db_path, timeout=0)) as connection:
        busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0


@pytest.mark.parametrize("run_id", ["r1", "big"])
def test_an_interrupted_blocking_read_leaves_nothing_open(
    store: SQLiteFlowPersistence, db_path: Path, run_id: str
) -> None:
    """KeyboardInterrupt raised inside a blocking read after its statements ran (while
    decoding the row; for a blob-stored checkpoint, inside its read transaction) leaves
    no snapshot open, and the next reads answer."""
    from flowkit.persistence import _rows

    store.load_checkpoint(run_id)
    target = _rows.checkpoint_from_row.__code__

    def interrupt(frame: Any, event: str, arg: Any) -> Any:
        if event == "call" and frame.f_code is target:
            sys.settrace(None)
            raise KeyboardInterrupt
        return None

    sys.settrace(interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            store.load_checkpoint(run_id)
    finally:
        sys.settrace(None)
    _no_reader_holds_a_snapshot(db_path)
    latest = store.load_checkpoint(run_id)
    assert latest is not None and latest.seq == 1


def test_many_threads_reading_at_once_get_their_own_answers(
    store: SQLiteFlowPersistence,
) -> None:
    """Twelve threads reading their own runs while another thread appends to a run they
    all read: every answer is right, and the appended run's seqs never go back."""
    for i in range(12):
        store.save_checkpoint(f"t{i}", "a", {"id": f"t{i}", "i": i}, expected_seq=0)
    store.save_checkpoint("w", "a", {"id": "w", "n": 1}, expected_seq=0)
    failures: list[BaseException] = []
    start = threading.Barrier(13)

    def reader(i: int) -> None:
        try:
            start.wait()
            last = 0
            for _ in range(100):
                mine = store.load_checkpoint(f"t{i}")
                assert mine is not None and mine.state == {"id": f"t{i}", "i": i}
                seen = store.load_checkpoint("w")
                assert seen is not None and seen.state == {"id": "w", "n": seen.seq}
                assert seen.seq >= last
                last = seen.seq
        except BaseException as exc:  # collected, checked below
            failures.append(exc)

    def writer() -> None:
        try:
            start.wait()
            for seq in range(2, 41):
                store.save_checkpoint("w", "step", {"id": "w", "n": seq}, expected_seq=seq - 1)
        except BaseException as exc:  # collected, checked below
            failures.append(exc)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(12)]
    threads.append(threading.Thread(target=writer))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    latest = store.load_checkpoint("w")
    assert latest is not None and latest.seq == 40


@linux_only
def test_close_leaves_no_connection_open(db_path: Path) -> None:
    """After reads from several threads at once, close() leaves no file descriptor open
    on the database, its WAL or its shared-memory file; a later read reopens."""
    files = _database_files(db_path)
    before = _open_files(*files)
    store = SQLiteFlowPersistence(db_path)
    start = threading.Barrier(6)

    def reads() -> None:
        start.wait()
        for _ in range(20):
            _reads(store)

    threads = [threading.Thread(target=reads) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _open_files(*files) > before
    store.close()
    assert _open_files(*files) == before
    assert store.load_state("r1") == {"id": "r1", "n": 1}
    store.close()
    assert _open_files(*files) == before


@linux_only
def test_backends_sharing_a_file_close_its_connections_with_the_last(db_path: Path) -> None:
    """Two backends for one file share its read connections: closing one leaves the
    other reading; closing the second closes them."""
    files = _database_files(db_path)
    before = _open_files(*files)
    first, second = SQLiteFlowPersistence(db_path), SQLiteFlowPersistence(db_path)
    assert first.load_state("r1") == second.load_state("r1") == {"id": "r1", "n": 1}
    first.close()
    assert second.load_state("r1") == {"id": "r1", "n": 1}
    second.close()
    assert _open_files(*files) == before


@linux_only
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_forked_child_reads_on_connections_of_its_own(
    store: SQLiteFlowPersistence, db_path: Path
) -> None:
    """A child forked after the backend read opens its own read connection (one more
    open file on the database than it inherited), reads right, and leaves the parent's
    connections working."""
    files = _database_files(db_path)
    assert store.load_checkpoint("r1") is not None
    inherited = _open_files(*files)
    readable, writable = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running the parent's cleanup
        code = 1
        try:
            latest = store.load_checkpoint("r1")
            report = {
                "seq": None if latest is None else latest.seq,
                "runs": sorted(r.run_id for r in store.list_runs()),
                "opened": _open_files(*files) - inherited,
            }
            os.write(writable, json.dumps(report).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(writable)
    with os.fdopen(readable) as pipe:
        report = json.loads(pipe.read() or "null")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert report is not None and report["seq"] == 1 and report["runs"] == ["big", "r1"]
    assert report["opened"] >= 1
    assert _reads(store)[0] == (1, {"id": "r1", "n": 1})


def test_a_relative_path_means_one_file_to_reads_and_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backend given a relative path keeps using the file it first used after the
    working folder changes: blocking reads, awaited reads and writes alike."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(first)
    store = SQLiteFlowPersistence("flows.db")
    try:
        store.save_state("r1", "a", {"id": "r1"})
        monkeypatch.chdir(second)
        assert store.load_state("r1") == {"id": "r1"}
        store.save_checkpoint("r1", "b", {"id": "r1", "n": 2}, expected_seq=1)
        assert _reads(store)[:4] == ((2, {"id": "r1", "n": 2}), {"id": "r1", "n": 2}, 2, [1, 2])
    finally:
        store.close()
    assert (first / "flows.db").exists() and not (second / "flows.db").exists()


def test_a_path_with_uri_characters_reads_its_own_file(tmp_path: Path) -> None:
    """Characters that mean something in a file: URI (?, #, %, spaces) in the folder and
    file names: the blocking reads open that very file, read-only."""
    path = tmp_path / "odd ?#%20 folder" / "runs ?#%.db"
    store = SQLiteFlowPersistence(path)
    try:
        assert store.load_state("r1") is None  # nothing there yet: nothing created
        assert not path.parent.exists()
        store.save_state("r1", "a", {"id": "r1"})
        assert _reads(store)[:4] == ((1, {"id": "r1"}), {"id": "r1"}, 1, [1])
    finally:
        store.close()
    assert sorted(p.name for p in path.parent.iterdir()) == ["runs ?#%.db"]
