"""Persisted runs: flowkit + SQLite vs LangGraph + its SQLite saver vs raw sqlite3.

Cases (each contender writes to its own fresh database file in one temporary folder,
all files in WAL mode with ``synchronous=FULL``, so every commit is an fsync):

* ``persist10``     a 10-step flow (each step ``state.counter += 1``) with
  ``@persist(SQLiteFlowPersistence(path))`` on the class: a checkpoint is committed after
  every step. LangGraph: the same 10-node graph compiled with ``SqliteSaver`` and invoked
  with ``durability="sync"`` (every superstep's checkpoint is written before the next
  one starts). Raw: ``sqlite3`` doing 10 inserts of the same small state JSON, one
  commit each, on one open connection -- the floor for "a durable commit per step".
* ``persist10-200k`` the same flows whose state also holds a 200 KB string that no
  step changes.
* ``persist10-2000str`` the same 200 KB held as a list of 2,000 strings that no step
  changes, against LangGraph with the same list and against flowkit with the same bytes
  as one string (both flowkit flows in the same interleaved rounds).

Every kickoff / invoke is a new run (a new flow object, a new thread id). Timings are
per whole run.

Run: ``python bench/persist.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import tempfile
import types
import uuid
from pathlib import Path
from typing import Any, TypedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import Row, emit, measure, peer_version

from flowkit import Flow, FlowState, listen, persist, start

STEPS = 10
BIG = 200 * 1024
ITEMS = 2000
PEER = "langgraph+SqliteSaver"


def _sqlite_backend() -> Any:
    """flowkit's SQLite backend class, or None while it is not available."""
    try:
        from flowkit.persistence import SQLiteFlowPersistence
    except (ImportError, AttributeError):
        return None
    return SQLiteFlowPersistence


# -- flowkit -------------------------------------------------------------------------


class Counter(FlowState):
    counter: int = 0


class BigCounter(FlowState):
    blob: str = ""
    counter: int = 0


class ListCounter(FlowState):
    items: list[str] = []
    counter: int = 0


def _persisted_flow(state: type[FlowState], backend: Any, name: str) -> type[Flow[Any]]:
    def make(i: int) -> Any:
        def step(self: Any) -> int:
            self.state.counter += 1
            return self.state.counter

        step.__name__ = step.__qualname__ = f"s{i}"
        return start()(step) if i == 0 else listen(f"s{i - 1}")(step)

    methods = {f"s{i}": make(i) for i in range(STEPS)}
    cls = types.new_class(name, (Flow[state],), {}, lambda ns: ns.update(methods))  # type: ignore[valid-type]
    return persist(backend)(cls)


# -- LangGraph -----------------------------------------------------------------------


class LGCounter(TypedDict):
    counter: int


class LGBigCounter(TypedDict):
    blob: str
    counter: int


class LGListCounter(TypedDict):
    items: list[str]
    counter: int


def _lg_graph(state: type, path: Path) -> tuple[Any, Any]:
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph

    conn = sqlite3.connect(str(path), check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()  # WAL, as SqliteSaver always does
    conn.execute("PRAGMA synchronous = FULL")  # the same durability as the others
    builder = StateGraph(state)
    for i in range(STEPS):

        def node(s: Any) -> dict[str, int]:
            return {"counter": s["counter"] + 1}

        builder.add_node(f"s{i}", node)
        builder.add_edge(START if i == 0 else f"s{i - 1}", f"s{i}")
    builder.add_edge(f"s{STEPS - 1}", END)
    return builder.compile(checkpointer=saver), conn


def _lg_invoke(graph: Any, inputs: dict[str, Any]) -> Any:
    config = {"configurable": {"thread_id": uuid.uuid4().hex}}
    return graph.invoke(inputs, config, durability="sync")


# -- raw sqlite3 ----------------------------------------------------------------------


def _raw_sqlite(path: Path, blob: str = "") -> tuple[Any, sqlite3.Connection]:
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE checkpoints (run_id TEXT, seq INTEGER, method TEXT, state TEXT, "
        "PRIMARY KEY (run_id, seq))"
    )

    def run() -> None:
        run_id = str(uuid.uuid4())
        state: dict[str, Any] = {"id": run_id, "counter": 0}
        if blob:
            state["blob"] = blob
        for i in range(STEPS):
            state["counter"] += 1
            conn.execute("BEGIN")
            conn.execute(
                "INSERT INTO checkpoints VALUES (?, ?, ?, ?)",
                (run_id, i + 1, f"s{i}", json.dumps(state)),
            )
            conn.execute("COMMIT")

    return run, conn


# -- below the engine: the storage layer alone, and aiosqlite alone ------------------


def _storage_only(backend: Any, state: dict[str, Any], meta: dict[str, Any]) -> Any:
    """The 11 backend calls a persisted 10-step kickoff makes (begin_run, 9 saves,
    end_run), awaited directly on a plain asyncio loop: flowkit's storage cost on the
    async path, without the engine."""
    import asyncio

    loop = asyncio.new_event_loop()

    async def calls() -> None:
        run_id = str(uuid.uuid4())
        await backend.abegin_run(
            run_id,
            "Storage",
            owner="bench",
            ttl=30.0,
            method_name="kickoff",
            state=state,
            meta=meta,
            expected_seq=0,
        )
        for seq in range(1, STEPS):
            await backend.asave_checkpoint(
                run_id, f"s{seq}", state, expected_seq=seq, meta=meta, lease_owner="bench"
            )
        await backend.aend_run(
            run_id,
            f"s{STEPS}",
            state,
            owner="bench",
            expected_seq=STEPS,
            meta=meta,
            status="completed",
        )

    return lambda: loop.run_until_complete(calls()), loop.close


def _aiosqlite_floor(path: Path) -> tuple[Any, Any]:
    """aiosqlite alone, through its public API, doing what one durable commit per step
    costs with one statement per commit: 11 autocommit INSERTs of a checkpoint row (a
    trigger bumps the run row), each one call to its worker thread, awaited one after
    the other: the floor for one durable commit per step through aiosqlite."""
    import asyncio

    import aiosqlite

    loop = asyncio.new_event_loop()
    db = loop.run_until_complete(aiosqlite.connect(str(path), isolation_level=None))

    async def setup() -> None:
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = FULL")
        await db.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, last_seq INTEGER)")
        await db.execute(
            "CREATE TABLE checkpoints (run_id TEXT, seq INTEGER, state TEXT, "
            "PRIMARY KEY (run_id, seq))"
        )
        await db.execute(
            "CREATE TRIGGER advance AFTER INSERT ON checkpoints BEGIN "
            "UPDATE runs SET last_seq = NEW.seq WHERE run_id = NEW.run_id; END"
        )

    loop.run_until_complete(setup())

    async def calls() -> None:
        run_id = str(uuid.uuid4())
        await db.execute_fetchall("INSERT INTO runs VALUES (?, 0)", (run_id,))
        for seq in range(STEPS + 1):
            text = json.dumps({"id": run_id, "counter": seq})
            await db.execute_fetchall(
                "INSERT INTO checkpoints SELECT run_id, last_seq + 1, ? FROM runs "
                "WHERE run_id = ? AND last_seq = ?",
                (text, run_id, seq),
            )

    def close() -> None:
        loop.run_until_complete(db.close())
        loop.close()

    return lambda: loop.run_until_complete(calls()), close


# -- cases ----------------------------------------------------------------------------


def bench_small(folder: Path, have_peer: bool, backend_cls: Any, quick: bool) -> list[Row]:
    contenders: dict[str, Any] = {}
    closers: list[Any] = []
    trips = None
    if backend_cls is not None:
        backend = backend_cls(folder / "flowkit-small.db")
        closers.append(backend.close)
        flow_cls = _persisted_flow(Counter, backend, "Persisted10")
        assert flow_cls().kickoff() == STEPS
        contenders["flowkit"] = lambda: flow_cls().kickoff()
        trips = _worker_calls(lambda: flow_cls().kickoff())
        sample = backend.load_checkpoint(backend.list_runs(limit=1)[0].run_id)
        storage, close_loop = _storage_only(backend, sample.state, sample.meta)
        closers.append(close_loop)
        contenders["storage"] = storage
    floor, close_floor = _aiosqlite_floor(folder / "aiosqlite-small.db")
    closers.append(close_floor)
    contenders["aiosqlite"] = floor
    if have_peer:
        graph, conn = _lg_graph(LGCounter, folder / "langgraph-small.db")
        closers.append(conn.close)
        assert _lg_invoke(graph, {"counter": 0})["counter"] == STEPS
        contenders["peer"] = lambda: _lg_invoke(graph, {"counter": 0})
    raw, raw_conn = _raw_sqlite(folder / "raw-small.db")
    closers.append(raw_conn.close)
    contenders["raw"] = raw
    try:
        t = measure(contenders, batch=3, rounds=3 if quick else 21, warmup=1)
    finally:
        for close in closers:
            close()
    fk = t.get("flowkit")
    note = "" if backend_cls is not None else "flowkit SQLiteFlowPersistence not available yet"
    rows = [
        Row(
            f"persist{STEPS} kickoff (sqlite)",
            fk,
            t.get("peer"),
            PEER if have_peer else "",
            0.35 if have_peer else None,
            note
            or f"raw sqlite3 ({STEPS} commits) {t['raw'] / 1e6:.2f} ms; "
            f"{trips} calls to aiosqlite's thread per kickoff",
            {"raw_ns": t["raw"], "worker_calls": trips},
        ),
        Row(
            f"persist{STEPS} storage layer alone",
            t.get("storage"),
            t.get("peer"),
            PEER if have_peer else "",
            None,
            "the kickoff's 11 backend calls (begin_run, 9 saves, end_run) awaited directly "
            "on a plain asyncio loop, no engine",
        ),
        Row(
            f"persist{STEPS} aiosqlite floor",
            t["aiosqlite"],
            t.get("peer"),
            PEER if have_peer else "",
            None,
            f"aiosqlite alone, public API: a run row and {STEPS + 1} autocommit guarded "
            "INSERTs (a trigger bumps the run), one worker-thread call each",
        ),
        Row(
            f"persist{STEPS} vs raw sqlite3",
            fk,
            t["raw"],
            f"raw sqlite3, {STEPS} commits",
            3.0,
        ),
    ]
    return rows


def bench_big(folder: Path, have_peer: bool, backend_cls: Any, quick: bool) -> list[Row]:
    blob = "x" * BIG
    contenders: dict[str, Any] = {}
    closers: list[Any] = []
    if backend_cls is not None:
        backend = backend_cls(folder / "flowkit-big.db")
        closers.append(backend.close)
        flow_cls = _persisted_flow(BigCounter, backend, "Persisted10Big")
        assert flow_cls().kickoff({"blob": blob}) == STEPS
        contenders["flowkit"] = lambda: flow_cls().kickoff({"blob": blob})
    if have_peer:
        graph, conn = _lg_graph(LGBigCounter, folder / "langgraph-big.db")
        closers.append(conn.close)
        assert _lg_invoke(graph, {"blob": blob, "counter": 0})["counter"] == STEPS
        contenders["peer"] = lambda: _lg_invoke(graph, {"blob": blob, "counter": 0})
    raw, raw_conn = _raw_sqlite(folder / "raw-big.db", blob)
    closers.append(raw_conn.close)
    contenders["raw"] = raw
    try:
        t = measure(contenders, batch=2, rounds=3 if quick else 15, warmup=1)  # see `runs`
    finally:
        for close in closers:
            close()
    runs = 1 + 2 * (1 + (3 if quick else 15))  # the checking run, then warm-up + timed batches
    sizes = {p.name: _db_bytes(p) // runs for p in sorted(folder.glob("*-big.db"))}
    return [
        Row(
            f"persist{STEPS}-200k kickoff (sqlite)",
            t.get("flowkit"),
            t.get("peer"),
            PEER if have_peer else "",
            0.5 if have_peer else None,
            f"raw sqlite3 storing the full 200 KB state at every step {t['raw'] / 1e6:.2f} ms; "
            "database bytes per run: "
            + ", ".join(
                f"{name.split('-')[0]} {size / 1024:.0f} KB" for name, size in sizes.items()
            ),
            {"raw_ns": t["raw"], "db_bytes_per_run": sizes},
        )
    ]


def bench_list(folder: Path, have_peer: bool, backend_cls: Any, quick: bool) -> list[Row]:
    """200 KB as 2,000 distinct strings in a list no step changes, vs LangGraph holding
    the same list, and vs flowkit holding the same bytes as one string."""
    size = BIG // ITEMS
    items = [f"{i:06d}" + "x" * (size - 6) for i in range(ITEMS)]
    joined = "".join(items)
    contenders: dict[str, Any] = {}
    closers: list[Any] = []
    if backend_cls is not None:
        backend = backend_cls(folder / "flowkit-list.db")
        closers.append(backend.close)
        list_flow = _persisted_flow(ListCounter, backend, "Persisted10List")
        str_flow = _persisted_flow(BigCounter, backend, "Persisted10Str")
        assert list_flow().kickoff({"items": items}) == STEPS
        assert str_flow().kickoff({"blob": joined}) == STEPS
        contenders["flowkit"] = lambda: list_flow().kickoff({"items": items})
        contenders["flowkit_str"] = lambda: str_flow().kickoff({"blob": joined})
    if have_peer:
        graph, conn = _lg_graph(LGListCounter, folder / "langgraph-list.db")
        closers.append(conn.close)
        assert _lg_invoke(graph, {"items": items, "counter": 0})["counter"] == STEPS
        contenders["peer"] = lambda: _lg_invoke(graph, {"items": items, "counter": 0})
    try:
        t = measure(contenders, batch=2, rounds=3 if quick else 15, warmup=1)
    finally:
        for close in closers:
            close()
    return [
        Row(
            f"persist{STEPS}-{ITEMS}str kickoff (sqlite)",
            t.get("flowkit"),
            t.get("peer"),
            PEER if have_peer else "",
            0.3 if have_peer else None,
            f"a {ITEMS}-string list ({BIG // 1024} KB) that no step changes",
        ),
        Row(
            f"persist{STEPS}-{ITEMS}str vs the same bytes as one string",
            t.get("flowkit"),
            t.get("flowkit_str"),
            "flowkit, one 200 KB str",
            1.2,
            "both flowkit flows in the same interleaved rounds",
        ),
    ]


def _worker_calls(kickoff: Any) -> int | None:
    """How many calls to aiosqlite's worker thread one ``kickoff()`` makes (each is a
    round trip: the statement queued to the thread, its result back through the
    loop), counted by wrapping the public methods flowkit uses; None without
    aiosqlite."""
    try:
        import aiosqlite
    except ImportError:
        return None
    names = ("execute_fetchall", "executemany", "execute", "commit", "rollback")
    originals = {name: getattr(aiosqlite.Connection, name) for name in names}
    calls = 0

    def counting(original: Any) -> Any:
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            return original(self, *args, **kwargs)

        return call

    for name, original in originals.items():
        setattr(aiosqlite.Connection, name, counting(original))
    try:
        kickoff()
    finally:
        for name, original in originals.items():
            setattr(aiosqlite.Connection, name, original)
    return calls


def _db_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def run(quick: bool = False) -> list[Row]:
    have_peer = peer_version("langgraph-checkpoint-sqlite") is not None
    if not have_peer:
        print(f"peer not installed: {PEER} (flowkit and raw sqlite3 numbers only)")
    backend_cls = _sqlite_backend()
    if backend_cls is None:
        print("flowkit.persistence.SQLiteFlowPersistence is not available: raw/peer only")
    with tempfile.TemporaryDirectory(prefix="flowkit-bench-") as tmp:
        folder = Path(tmp)
        return (
            bench_small(folder, have_peer, backend_cls, quick)
            + bench_big(folder, have_peer, backend_cls, quick)
            + bench_list(folder, have_peer, backend_cls, quick)
        )


def main() -> None:
    quick = "--quick" in sys.argv
    rows = run(quick)
    emit(
        "persist",
        rows,
        {
            "peer": PEER,
            "peer_version": peer_version("langgraph-checkpoint-sqlite"),
            "langgraph_version": peer_version("langgraph"),
            "quick": quick,
        },
    )


if __name__ == "__main__":
    main()
