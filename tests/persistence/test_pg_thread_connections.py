"""PostgreSQL through asyncpg: a sync caller's operations run on a connection its own
thread owns (``_sql_pg_connections.ThreadConnections``), on that thread's loop, with no
hop to the database's portal thread. Observed from the server (``pg_stat_activity``,
each backend tagged with its own ``application_name``), never through flowkit's private
attributes. Ctrl-C in the middle of a kickoff is ``tests/durable/test_crash_resume.py``'s."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from typing import Any

import pytest

from flowkit import Flow, FlowState, listen, start
from flowkit.persistence import SQLAlchemyFlowPersistence

pytestmark = pytest.mark.postgres

# The statement a persisted kickoff ends with (end_run: save and give the lease back).
END_RUN = "WITH r AS (UPDATE flowkit_runs SET last_seq = last_seq + 1%lease_owner = NULL%"


class Counter(FlowState):
    n: int = 0


class Three(Flow[Counter], name="three-steps"):
    @start()
    def one(self) -> None:
        self.state.n += 1

    @listen(one)
    def two(self) -> None:
        self.state.n += 1

    @listen(two)
    def three(self) -> int:
        self.state.n += 1
        return self.state.n


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _sessions(url: str, tag: str, like: str = "%") -> list[int]:
    """Backend pids of the sessions tagged ``tag`` whose last statement is like ``like``."""
    import asyncpg

    async def ask() -> list[int]:
        connection = await asyncpg.connect(_dsn(url))
        try:
            rows = await connection.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 "
                "AND query LIKE $2 ORDER BY pid",
                tag,
                like,
            )
        finally:
            await connection.close()
        return [row["pid"] for row in rows]

    return asyncio.run(ask())


def _until(condition: Any, seconds: float = 15.0) -> bool:
    """Poll ``condition()`` until it holds (the server ends a session a moment after
    its client said goodbye); False if it never did."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def _backend(url: str, tag: str, **engine_kwargs: Any) -> SQLAlchemyFlowPersistence:
    return SQLAlchemyFlowPersistence(
        url,
        engine_kwargs={"connect_args": {"server_settings": {"application_name": tag}}}
        | engine_kwargs,
    )


def _kickoff(persistence: SQLAlchemyFlowPersistence) -> int:
    result: int = Three(persistence=persistence).kickoff()
    return result


class _Parked:
    """Threads that each run ``work`` once, one after another, then stay alive until
    released (their connections, if they own one, stay open meanwhile)."""

    def __init__(self, count: int, work: Any) -> None:
        self.results: list[Any] = []
        self._turn = threading.Lock()
        self._release = threading.Event()
        self._done = threading.Semaphore(0)
        self._threads = [threading.Thread(target=self._run, args=(work,)) for _ in range(count)]
        for thread in self._threads:
            thread.start()
        for _ in self._threads:
            self._done.acquire()

    def _run(self, work: Any) -> None:
        with self._turn:
            try:
                self.results.append(work())
            except BaseException as exc:
                self.results.append(exc)
        self._done.release()
        self._release.wait()

    def end(self) -> None:
        self._release.set()
        for thread in self._threads:
            thread.join()


def test_each_sync_kickoff_thread_uses_a_connection_of_its_own(postgres_url: str) -> None:
    """Three threads kick off one after another (never at once): each ends its run on a
    server session of its own (one more session whose last statement is end_run per
    thread), where the portal's pool would have served them all on one; a thread's next
    kickoff stays on its session, and so does its blocking read."""
    tag = f"fk-{uuid.uuid4().hex[:12]}"
    persistence = _backend(postgres_url, tag)

    def ended() -> set[int]:
        return set(_sessions(postgres_url, tag, END_RUN))

    def work() -> tuple[int, int]:
        before = ended()
        result = _kickoff(persistence)
        after = ended()
        own = after - before
        assert len(own) == 1, (before, after)  # a session of its own
        assert _kickoff(persistence) == 3 and ended() == after  # the same one again
        flow = Three(persistence=persistence)
        flow.kickoff()
        stored = persistence.load_state(flow.state.id)
        assert stored is not None and stored["n"] == 3
        assert ended() == before  # the read ran on its session (its last statement now)
        assert _kickoff(persistence) == 3 and ended() == after
        return result, len(after)

    parked = _Parked(3, work)
    try:
        assert parked.results == [(3, 1), (3, 2), (3, 3)], parked.results
    finally:
        parked.end()
        persistence.close()


def test_threads_beyond_pool_size_still_work(postgres_url: str) -> None:
    """With pool_size 2, eight threads kicking off at once all finish, each run stored
    whole: the threads that get no connection of their own take the portal's pool."""
    tag = f"fk-{uuid.uuid4().hex[:12]}"
    persistence = _backend(postgres_url, tag, pool_size=2, max_overflow=2)
    barrier = threading.Barrier(8)
    flows: list[Three] = []
    errors: list[BaseException] = []

    def work() -> None:
        barrier.wait()
        try:
            for _ in range(3):
                flow = Three(persistence=persistence)
                flows.append(flow)
                assert flow.kickoff() == 3
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert not errors, errors
        for flow in flows:
            run = persistence.get_run(flow.state.id)
            assert run is not None and run.status == "completed" and run.lease_owner is None
        assert len(_sessions(postgres_url, tag, END_RUN)) <= 2 + 4  # threads' + pool's
    finally:
        persistence.close()


def test_a_thread_that_ends_gives_its_connection_back(postgres_url: str) -> None:
    """Once a thread that kicked off has ended, the server session it owned ends too
    (closed on that thread's loop by flowkit's closer thread)."""
    tag = f"fk-{uuid.uuid4().hex[:12]}"
    persistence = _backend(postgres_url, tag)
    try:
        results: list[int] = []
        thread = threading.Thread(target=lambda: results.append(_kickoff(persistence)))
        thread.start()
        thread.join()
        assert results == [3]
        assert _until(lambda: not _sessions(postgres_url, tag, END_RUN))
        assert _kickoff(persistence) == 3  # the backend still works
    finally:
        persistence.close()


def test_close_ends_every_threads_connection(postgres_url: str) -> None:
    """close() of the backend ends the sessions of threads still alive (each closed on its
    own thread's loop) and the portal's: no session of the backend is left."""
    tag = f"fk-{uuid.uuid4().hex[:12]}"
    persistence = _backend(postgres_url, tag)
    parked = _Parked(3, lambda: _kickoff(persistence))
    try:
        assert parked.results == [3, 3, 3]
        assert len(_sessions(postgres_url, tag, END_RUN)) == 3
        persistence.close()
        assert _until(lambda: not _sessions(postgres_url, tag))
    finally:
        parked.end()
        persistence.close()


def test_a_forked_child_uses_connections_of_its_own(postgres_url: str, tmp_path: Any) -> None:
    """After os.fork() the child kicks off and reads on connections of its own, never its
    parent's (two processes on one session would garble it): both go on working, the
    parent after the child has exited too."""
    script = textwrap.dedent(
        """
        import json, os, sys
        sys.path.insert(0, sys.argv[3])
        from test_pg_thread_connections import Three, _backend

        store = _backend(sys.argv[1], "fk-fork")

        def work():
            flow = Three(persistence=store)
            flow.kickoff()
            return store.load_state(flow.state.id)["n"]

        out = {"before": work()}
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                with open(sys.argv[2], "w") as fh:
                    json.dump([work(), work()], fh)
            except BaseException:
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        out["child_status"] = status
        out["child"] = json.load(open(sys.argv[2])) if os.path.exists(sys.argv[2]) else None
        out["after"] = [work(), work()]
        store.close()
        print(json.dumps(out))
        """
    )
    here = str(__import__("pathlib").Path(__file__).parent)
    done = subprocess.run(
        [sys.executable, "-c", script, postgres_url, str(tmp_path / "child.json"), here],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"before": 3, "child_status": 0, "child": [3, 3], "after": [3, 3]}, out
