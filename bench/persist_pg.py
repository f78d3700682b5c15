"""Persisted runs on PostgreSQL: flowkit vs LangGraph's PostgresSaver vs bare asyncpg.

Needs a PostgreSQL server: ``$FLOWKIT_BENCH_POSTGRES_URL`` (default
``postgresql+asyncpg://postgres@127.0.0.1:5432/bench_pg``); the database must exist and
is shared by the contenders (flowkit's ``flowkit_*`` tables, LangGraph's own). Without a
server the script says so and reports nothing.

Cases:

* ``persist10 (postgresql)`` a 10-step flow (each step ``state.counter += 1``) with
  ``@persist(SQLAlchemyFlowPersistence(url))`` on the class, ``Flow().kickoff()`` (a
  checkpoint committed after every step, each kickoff a new run) vs the same 10-node
  LangGraph graph compiled with ``PostgresSaver`` (psycopg, autocommit connection) and
  invoked with ``durability="sync"`` and a new ``thread_id``. Also: 11 bare asyncpg
  commits (one INSERT each) -- the floor for one durable commit per step.
* ``persist10 vs the same statements through asyncpg`` the statements flowkit sends for
  one kickoff (recorded with SQLAlchemy's cursor and transaction events, on every
  connection flowkit uses: the pool's and the liveness session's), replayed through bare
  asyncpg connections with the same transaction boundaries, in the same order, with a new
  run id per replay: what flowkit adds on top of its own SQL.
* ``reload @N`` the latest checkpoint of a run with N = 10, 1,000 and 10,000 checkpoints:
  flowkit's ``load_checkpoint(run_id)`` (and ``aload_checkpoint`` awaited on a plain loop)
  vs LangGraph's ``graph.get_state(config)`` on a thread with the same number of
  checkpoints, on PostgreSQL and on SQLite (``SQLiteFlowPersistence`` vs ``SqliteSaver``).
  Each history starts as one real 10-step run; rows are then added up to N by copying its
  first checkpoint row in SQL (one statement; flowkit: seqs below the latest, LangGraph:
  checkpoint ids sorting below the latest), so the latest checkpoint is a real one and
  the table and index hold N rows for the run.
* ``concurrent N`` N kickoffs of the persisted 10-step flow gathered on one event loop
  (``kickoff_async``), N = 1, 10, 100, 1000: runs per second (ratio: time per run
  against N = 1, so below 1 means throughput rose).

Run: ``python bench/persist_pg.py`` (``--quick`` for a smoke run; ``--only reload`` (or
``kickoff``, ``concurrent``, comma-separated) for some of the cases).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import time
import types
import uuid
from pathlib import Path
from typing import Any, TypedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import Row, emit, measure, peer_version

from flowkit import Flow, FlowState, listen, persist, start

STEPS = 10
DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/bench_pg"
PEER = "langgraph+PostgresSaver"
SQLITE_PEER = "langgraph+SqliteSaver"
HISTORIES = (10, 1_000, 10_000)
CONCURRENCY = (1, 10, 100, 1000)


def _url() -> str:
    return os.environ.get("FLOWKIT_BENCH_POSTGRES_URL", DEFAULT_URL)


def _dsn(url: str) -> str:
    """The libpq/asyncpg form of the SQLAlchemy URL."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _reachable(url: str) -> str | None:
    """None if the server answers, else why not."""
    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(_dsn(url), timeout=5)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# -- flowkit ---------------------------------------------------------------------------


class Counter(FlowState):
    counter: int = 0


def _persisted_flow(backend: Any, name: str) -> type[Flow[Any]]:
    def make(i: int) -> Any:
        def step(self: Any) -> int:
            self.state.counter += 1
            return self.state.counter

        step.__name__ = step.__qualname__ = f"s{i}"
        return start()(step) if i == 0 else listen(f"s{i - 1}")(step)

    methods = {f"s{i}": make(i) for i in range(STEPS)}
    cls = types.new_class(name, (Flow[Counter],), {}, lambda ns: ns.update(methods))
    return persist(backend)(cls)


def _pg_backend(url: str) -> Any:
    from flowkit.persistence import SQLAlchemyFlowPersistence

    return SQLAlchemyFlowPersistence(url)


# -- LangGraph -------------------------------------------------------------------------


class LGCounter(TypedDict):
    counter: int


def _lg_builder() -> Any:
    from langgraph.graph import END, START, StateGraph

    builder = StateGraph(LGCounter)
    for i in range(STEPS):

        def node(s: Any) -> dict[str, int]:
            return {"counter": s["counter"] + 1}

        builder.add_node(f"s{i}", node)
        builder.add_edge(START if i == 0 else f"s{i - 1}", f"s{i}")
    builder.add_edge(f"s{STEPS - 1}", END)
    return builder


def _lg_pg_graph(url: str) -> tuple[Any, Any]:
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg import Connection
    from psycopg.rows import dict_row

    conn = Connection.connect(_dsn(url), autocommit=True, prepare_threshold=0, row_factory=dict_row)
    saver = PostgresSaver(conn)  # type: ignore[arg-type]
    saver.setup()
    return _lg_builder().compile(checkpointer=saver), conn


def _lg_sqlite_graph(path: Path) -> tuple[Any, Any]:
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(str(path), check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()
    conn.execute("PRAGMA synchronous = FULL")
    return _lg_builder().compile(checkpointer=saver), conn


def _lg_invoke(graph: Any, thread_id: str | None = None) -> Any:
    config = {"configurable": {"thread_id": thread_id or uuid.uuid4().hex}}
    return graph.invoke({"counter": 0}, config, durability="sync")


# -- bare asyncpg ----------------------------------------------------------------------


class _Loop:
    """One event loop on this thread for the asyncpg contenders."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.loop.close()


def _asyncpg_floor(loop: _Loop, url: str) -> tuple[Any, Any]:
    """11 autocommit INSERTs of a small checkpoint row on one bare asyncpg connection:
    one durable commit per step and nothing else."""
    import asyncpg

    conn = loop.run(asyncpg.connect(_dsn(url)))
    loop.run(
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_raw_checkpoints (run_id TEXT, seq BIGINT, "
            "state TEXT, PRIMARY KEY (run_id, seq))"
        )
    )

    async def calls() -> None:
        run_id = str(uuid.uuid4())
        for seq in range(STEPS + 1):
            await conn.execute(
                "INSERT INTO bench_raw_checkpoints VALUES ($1, $2, $3)",
                run_id,
                seq,
                json.dumps({"id": run_id, "counter": seq}),
            )

    def close() -> None:
        loop.run(conn.execute("TRUNCATE bench_raw_checkpoints"))
        loop.run(conn.close())

    return lambda: loop.run(calls()), close


class Recorder:
    """Records every query flowkit sends to PostgreSQL, in order, at asyncpg's level
    (whether SQLAlchemy or flowkit itself drives the connection): the statement, its
    parameters and the connection, BEGIN and COMMIT included. While installed it wraps
    asyncpg's public ``Connection`` methods (``execute``, ``fetch``, ``fetchval``, ``executemany``,
    and the ``fetch`` of the statements ``prepare`` returns, which SQLAlchemy uses)."""

    def __init__(self) -> None:
        self.on = False
        self.items: list[tuple[Any, ...]] = []

    def install(self) -> Any:
        from asyncpg.connection import Connection

        recorder = self
        originals = {
            name: getattr(Connection, name)
            for name in ("execute", "fetch", "fetchval", "executemany", "prepare")
        }

        def note(conn: Any, query: str, args: Any, many: bool) -> None:
            if recorder.on:
                recorder.items.append(("q", id(conn), query, tuple(args), many))

        async def execute(self: Any, query: str, *args: Any, **kw: Any) -> Any:
            note(self, query, args, False)
            return await originals["execute"](self, query, *args, **kw)

        async def fetch(self: Any, query: str, *args: Any, **kw: Any) -> Any:
            note(self, query, args, False)
            return await originals["fetch"](self, query, *args, **kw)

        async def fetchval(self: Any, query: str, *args: Any, **kw: Any) -> Any:
            note(self, query, args, False)
            return await originals["fetchval"](self, query, *args, **kw)

        async def executemany(self: Any, command: str, args: Any, **kw: Any) -> Any:
            note(self, command, args, True)
            return await originals["executemany"](self, command, args, **kw)

        class Prepared:
            def __init__(self, conn: Any, query: str, stmt: Any) -> None:
                self._conn, self._query, self._stmt = conn, query, stmt

            def __getattr__(self, name: str) -> Any:
                return getattr(self._stmt, name)

            async def fetch(self, *args: Any, **kw: Any) -> Any:
                note(self._conn, self._query, args, False)
                return await self._stmt.fetch(*args, **kw)

        async def prepare(self: Any, query: str, *args: Any, **kw: Any) -> Any:
            return Prepared(self, query, await originals["prepare"](self, query, *args, **kw))

        patched = {
            "execute": execute,
            "fetch": fetch,
            "fetchval": fetchval,
            "executemany": executemany,
            "prepare": prepare,
        }
        for name, fn in patched.items():
            setattr(Connection, name, fn)

        def remove() -> None:
            for name, fn in originals.items():
                setattr(Connection, name, fn)

        return remove

    def summary(self) -> str:
        queries = [item[2].strip().rstrip(";").upper() for item in self.items]
        txns = sum(1 for q in queries if q.startswith("BEGIN"))
        stmts = sum(1 for q in queries if not q.startswith(("BEGIN", "COMMIT", "ROLLBACK")))
        conns = len({item[1] for item in self.items})
        return f"{stmts} statements, {txns} explicit transactions, {conns} connections"


def _replay(loop: _Loop, url: str, items: list[tuple[Any, ...]], run_id: str) -> tuple[Any, Any]:
    """The recorded queries through bare asyncpg: one connection per recorded one, in
    the recorded order (BEGIN and COMMIT included), a new run id per replay."""
    import asyncpg

    keys = sorted({item[1] for item in items})
    conns = {key: loop.run(asyncpg.connect(_dsn(url))) for key in keys}

    def swap(params: Any, new: str) -> list[Any]:
        return [new if p == run_id else p for p in params]

    async def calls() -> None:
        new = str(uuid.uuid4())
        for _, key, sql, params, many in items:
            conn = conns[key]
            if many:
                await conn.executemany(sql, [swap(p, new) for p in params])
            elif params:
                await conn.fetch(sql, *swap(params, new))
            else:
                await conn.execute(sql)

    def close() -> None:
        for conn in conns.values():
            loop.run(conn.close())

    return lambda: loop.run(calls()), close


# -- cases -----------------------------------------------------------------------------


def bench_kickoff(url: str, have_peer: bool, quick: bool) -> list[Row]:
    contenders: dict[str, Any] = {}
    closers: list[Any] = []
    # Installed before the backend opens its connections (SQLAlchemy's asyncpg layer
    # keeps the statements it prepares).
    recorder = Recorder()
    remove = recorder.install()
    backend = _pg_backend(url)
    closers.append(backend.close)
    flow_cls = _persisted_flow(backend, "PgPersisted10")
    assert flow_cls().kickoff() == STEPS
    contenders["flowkit"] = lambda: flow_cls().kickoff()

    # Record one kickoff's statements (after a warm-up, so no schema check or first
    # connection is in it).
    recorder.on = True
    flow = flow_cls()
    flow.kickoff()
    recorder.on = False
    remove()
    loop = _Loop()
    closers.append(loop.close)
    replay, close_replay = _replay(loop, url, recorder.items, flow.flow_id)
    closers.insert(0, close_replay)
    replay()
    contenders["replay"] = replay

    floor, close_floor = _asyncpg_floor(loop, url)
    closers.insert(0, close_floor)
    contenders["asyncpg"] = floor
    if have_peer:
        graph, conn = _lg_pg_graph(url)
        closers.insert(0, conn.close)
        assert _lg_invoke(graph)["counter"] == STEPS
        contenders["peer"] = lambda: _lg_invoke(graph)
    try:
        t = measure(contenders, batch=3, rounds=3 if quick else 21, warmup=1)
    finally:
        for close in closers:
            close()
    fk = t["flowkit"]
    return [
        Row(
            f"persist{STEPS} kickoff (postgresql)",
            fk,
            t.get("peer"),
            PEER if have_peer else "",
            0.35 if have_peer else None,
            f"bare asyncpg, {STEPS + 1} autocommit INSERTs: {t['asyncpg'] / 1e6:.2f} ms "
            f"(flowkit {fk / t['asyncpg']:.2f}x of it)",
            {"asyncpg_floor_ns": t["asyncpg"]},
        ),
        Row(
            f"persist{STEPS} vs the same statements through asyncpg",
            fk,
            t["replay"],
            "bare asyncpg replay",
            1.5,
            f"one kickoff recorded: {recorder.summary()}",
            {"recorded": recorder.summary()},
        ),
    ]


def _flowkit_history(backend: Any, flow_cls: Any, n: int, copy_sql: Any) -> str:
    """A real 10-step run whose history is then padded to ``n`` checkpoints."""
    flow = flow_cls()
    flow.kickoff()
    run_id = flow.flow_id
    if n > STEPS + 1:
        copy_sql(run_id, n - (STEPS + 1))
    got = backend.load_checkpoint(run_id)
    assert got is not None and got.state["counter"] == STEPS, got
    return run_id


def _pg_pad_flowkit(loop: _Loop, url: str) -> Any:
    """Insert ``extra`` copies of checkpoint 1 under seqs below the latest: the latest
    moves up by ``extra`` and keeps its content."""
    import asyncpg

    async def pad(run_id: str, extra: int) -> None:
        conn = await asyncpg.connect(_dsn(url))
        try:
            async with conn.transaction():
                last = await conn.fetchval(
                    "SELECT last_seq FROM flowkit_runs WHERE run_id = $1 FOR UPDATE", run_id
                )
                # shift the real checkpoints up, then fill the gap below them
                await conn.execute(
                    "UPDATE flowkit_checkpoints SET seq = seq + $2 WHERE run_id = $1 AND seq > 1",
                    run_id,
                    extra,
                )
                await conn.execute(
                    "INSERT INTO flowkit_checkpoints (run_id, seq, method_name, state, meta, "
                    "blobs, created_at) SELECT run_id, 1 + g, method_name, state, meta, blobs, "
                    "created_at FROM flowkit_checkpoints, generate_series(1, $2) g "
                    "WHERE run_id = $1 AND seq = 1",
                    run_id,
                    extra,
                )
                await conn.execute(
                    "UPDATE flowkit_runs SET last_seq = $2 WHERE run_id = $1", run_id, last + extra
                )
        finally:
            await conn.close()

    return lambda run_id, extra: loop.run(pad(run_id, extra))


def _sqlite_pad_flowkit(path: Path) -> Any:
    def pad(run_id: str, extra: int) -> None:
        conn = sqlite3.connect(str(path), isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            (last,) = conn.execute(
                "SELECT last_seq FROM flowkit_runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            # highest first, so the primary key never collides while shifting
            for seq in range(last, 1, -1):
                conn.execute(
                    "UPDATE flowkit_checkpoints SET seq = ? WHERE run_id = ? AND seq = ?",
                    (seq + extra, run_id, seq),
                )
            conn.execute(
                "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?) "
                "INSERT INTO flowkit_checkpoints (run_id, seq, method_name, state, meta, blobs, "
                "created_at) SELECT run_id, 1 + n, method_name, state, meta, blobs, created_at "
                "FROM flowkit_checkpoints, g WHERE run_id = ? AND seq = 1",
                (extra, run_id),
            )
            conn.execute(
                "UPDATE flowkit_runs SET last_seq = ? WHERE run_id = ?", (last + extra, run_id)
            )
            conn.execute("COMMIT")
        finally:
            conn.close()

    return pad


# LangGraph: checkpoint ids are time-ordered uuids ("1f..."); copies get ids "0..." that
# sort below every real one, so the latest stays the real last checkpoint.
_LG_PAD_PG = (
    "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, "
    "type, checkpoint, metadata) SELECT thread_id, checkpoint_ns, "
    "'0' || lpad(g::text, 35, '0'), parent_checkpoint_id, type, checkpoint, metadata "
    "FROM (SELECT * FROM checkpoints WHERE thread_id = $1 ORDER BY checkpoint_id LIMIT 1) c, "
    "generate_series(1, $2) g"
)
_LG_PAD_SQLITE = (
    "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?) "
    "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, "
    "type, checkpoint, metadata) SELECT thread_id, checkpoint_ns, "
    "'0' || substr('000000000000000000000000000000000000' || n, -35), parent_checkpoint_id, "
    "type, checkpoint, metadata FROM (SELECT * FROM checkpoints WHERE thread_id = ? "
    "ORDER BY checkpoint_id LIMIT 1), g"
)


def _lg_history(graph: Any, n: int, pad: Any) -> Any:
    """A thread of one real run (11 checkpoints: the input and 10 steps), padded to n."""
    thread = uuid.uuid4().hex
    _lg_invoke(graph, thread)
    if n > STEPS + 1:
        pad(thread, n - (STEPS + 1))
    config = {"configurable": {"thread_id": thread}}
    assert graph.get_state(config).values["counter"] == STEPS
    return config


def bench_reload(url: str, have_pg_peer: bool, have_sqlite_peer: bool, quick: bool) -> list[Row]:
    from flowkit.persistence import SQLiteFlowPersistence

    sizes = HISTORIES if not quick else (10, 1_000)
    loop = _Loop()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="flowkit-bench-pg-") as tmp:
        folder = Path(tmp)
        pg = _pg_backend(url)
        sq_path = folder / "flowkit-reload.db"
        sq = SQLiteFlowPersistence(sq_path)
        pg_flow = _persisted_flow(pg, "PgReload")
        sq_flow = _persisted_flow(sq, "SqliteReload")
        closers: list[Any] = [pg.close, sq.close]
        contenders: dict[str, Any] = {}
        pg_pad = _pg_pad_flowkit(loop, url)
        sq_pad = _sqlite_pad_flowkit(sq_path)
        lg_pg = lg_sq = None
        if have_pg_peer:
            lg_pg, conn = _lg_pg_graph(url)
            closers.append(conn.close)

            def lg_pg_pad(thread: str, extra: int) -> None:
                conn.execute(_LG_PAD_PG.replace("$1", "%s").replace("$2", "%s"), (thread, extra))

        if have_sqlite_peer:
            lg_sq, sconn = _lg_sqlite_graph(folder / "langgraph-reload.db")
            closers.append(sconn.close)

            def lg_sq_pad(thread: str, extra: int) -> None:
                with sconn:
                    sconn.execute(_LG_PAD_SQLITE, (extra, thread))

        aloop = asyncio.new_event_loop()
        closers.append(aloop.close)
        for n in sizes:
            pg_run = _flowkit_history(pg, pg_flow, n, pg_pad)
            sq_run = _flowkit_history(sq, sq_flow, n, sq_pad)
            contenders[f"pg{n}"] = lambda r=pg_run: pg.load_checkpoint(r)
            contenders[f"pg-async{n}"] = lambda r=pg_run: aloop.run_until_complete(
                pg.aload_checkpoint(r)
            )
            contenders[f"sq{n}"] = lambda r=sq_run: sq.load_checkpoint(r)
            if lg_pg is not None:
                cfg = _lg_history(lg_pg, n, lg_pg_pad)
                contenders[f"lgpg{n}"] = lambda c=cfg: lg_pg.get_state(c)
            if lg_sq is not None:
                cfg = _lg_history(lg_sq, n, lg_sq_pad)
                contenders[f"lgsq{n}"] = lambda c=cfg: lg_sq.get_state(c)
        try:
            t = measure(contenders, batch=20, rounds=3 if quick else 15, warmup=1)
        finally:
            for close in closers:
                close()
            loop.close()
    for n in sizes:
        flat_pg = t[f"pg{n}"] / t[f"pg{sizes[0]}"]
        flat_sq = t[f"sq{n}"] / t[f"sq{sizes[0]}"]
        rows.append(
            Row(
                f"reload latest @{n} (postgresql)",
                t[f"pg{n}"],
                t.get(f"lgpg{n}"),
                PEER if have_pg_peer else "",
                1.0 if have_pg_peer else None,
                f"aload_checkpoint on a plain loop {t[f'pg-async{n}'] / 1e3:.0f} us; "
                f"{flat_pg:.2f}x the time @{sizes[0]}",
                {"async_ns": t[f"pg-async{n}"]},
            )
        )
        rows.append(
            Row(
                f"reload latest @{n} (sqlite)",
                t[f"sq{n}"],
                t.get(f"lgsq{n}"),
                SQLITE_PEER if have_sqlite_peer else "",
                1.0 if have_sqlite_peer else None,
                f"{flat_sq:.2f}x the time @{sizes[0]}",
            )
        )
    return rows


def bench_concurrent(url: str, quick: bool) -> list[Row]:
    """N kickoff_async gathered on one loop; rounds interleave the Ns."""
    backend = _pg_backend(url)
    flow_cls = _persisted_flow(backend, "PgConcurrent")
    loop = asyncio.new_event_loop()
    ns = CONCURRENCY if not quick else (1, 10, 100)

    async def batch(n: int) -> float:
        t0 = time.perf_counter()
        done = await asyncio.gather(*(flow_cls().kickoff_async() for _ in range(n)))
        elapsed = time.perf_counter() - t0
        assert all(d == STEPS for d in done)
        return elapsed

    samples: dict[int, list[float]] = {n: [] for n in ns}
    errors: list[str] = []
    try:
        for n in ns:  # warm-up: the pool's connections get opened
            loop.run_until_complete(batch(n))
        for r in range(2 if quick else 3):
            order = list(ns[r % len(ns) :] + ns[: r % len(ns)])
            for n in order:
                try:
                    samples[n].append(loop.run_until_complete(batch(n)))
                except Exception as exc:
                    errors.append(f"N={n}: {type(exc).__name__}: {str(exc)[:200]}")
    finally:
        backend.close()
        loop.close()
    from statistics import median

    per_run = {n: median(s) / n * 1e9 for n, s in samples.items() if s}
    rows = []
    for n in ns:
        if n not in per_run:
            rows.append(Row(f"concurrent {n} runs (postgresql)", None, note="; ".join(errors)))
            continue
        rate = 1e9 / per_run[n]
        rows.append(
            Row(
                f"concurrent {n} runs (postgresql)",
                per_run[n],
                per_run.get(1),
                "the same, N = 1",
                None,
                f"{rate:.0f} runs/s (rounds: "
                + ", ".join(f"{n / s:.0f}" for s in samples[n])
                + ")"
                + (f"; errors: {'; '.join(errors)}" if errors and n == ns[-1] else ""),
                {"runs_per_s": rate},
            )
        )
    return rows


CASES = ("kickoff", "reload", "concurrent")


def run(quick: bool = False, only: tuple[str, ...] = CASES) -> list[Row]:
    url = _url()
    why = _reachable(url)
    if why is not None:
        print(f"PostgreSQL not reachable at {url} ({why}): nothing measured")
        return []
    have_peer = (
        peer_version("langgraph-checkpoint-postgres") is not None
        and peer_version("psycopg") is not None
    )
    if not have_peer:
        print(f"peer not installed: {PEER} (flowkit and bare asyncpg numbers only)")
    have_sqlite_peer = peer_version("langgraph-checkpoint-sqlite") is not None
    if not have_sqlite_peer:
        print(f"peer not installed: {SQLITE_PEER} (flowkit reload on SQLite alone)")
    rows: list[Row] = []
    if "kickoff" in only:
        rows += bench_kickoff(url, have_peer, quick)
    if "reload" in only:
        rows += bench_reload(url, have_peer, have_sqlite_peer, quick)
    if "concurrent" in only:
        rows += bench_concurrent(url, quick)
    return rows


def main() -> None:
    quick = "--quick" in sys.argv
    only = CASES
    if "--only" in sys.argv[:-1]:
        only = tuple(sys.argv[sys.argv.index("--only") + 1].split(","))
        unknown = set(only) - set(CASES)
        if unknown:
            sys.exit(f"--only: unknown case(s) {sorted(unknown)}; choose from {CASES}")
    rows = run(quick, only)
    if not rows:  # no server: said so, nothing to report (bench/run.py shows the line)
        return
    emit(
        "persist_pg",
        rows,
        {
            "peer": PEER,
            "peer_version": peer_version("langgraph-checkpoint-postgres"),
            "langgraph_version": peer_version("langgraph"),
            "url": _url().split("@")[-1],
            "quick": quick,
            "only": list(only),
        },
    )


if __name__ == "__main__":
    main()
