"""Micro-benchmark: 10 committed checkpoints on an SQLite file.

Compares SQLiteFlowPersistence.save_checkpoint (sync and async) with raw sqlite3 doing 10
single-row INSERT transactions at the same durability (WAL, synchronous=FULL). Prints
the best-of-N milliseconds for each. Run: ``python bench/persistence_micro.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from flowkit.persistence import SQLiteFlowPersistence

STATE = {"id": "x", "question": "What is flowkit?", "answers": ["a", "b"], "n": 0}
SAVES = 10


def bench_raw(path: Path, repeats: int) -> list[float]:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute(
        "CREATE TABLE checkpoints (run_id TEXT, seq INTEGER, state TEXT, PRIMARY KEY (run_id, seq))"
    )
    times = []
    for _ in range(repeats):
        run_id = uuid.uuid4().hex
        started = time.perf_counter()
        for seq in range(1, SAVES + 1):
            connection.execute("BEGIN")
            connection.execute(
                "INSERT INTO checkpoints VALUES (?, ?, ?)", (run_id, seq, '{"id": "x"}')
            )
            connection.execute("COMMIT")
        times.append(time.perf_counter() - started)
    connection.close()
    return times


def bench_sync(store: SQLiteFlowPersistence, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        run_id = uuid.uuid4().hex
        started = time.perf_counter()
        for seq in range(SAVES):
            store.save_checkpoint(run_id, "step", {**STATE, "n": seq}, expected_seq=seq)
        times.append(time.perf_counter() - started)
    return times


def bench_async(store: SQLiteFlowPersistence, repeats: int) -> list[float]:
    async def run() -> list[float]:
        times = []
        for _ in range(repeats):
            run_id = uuid.uuid4().hex
            started = time.perf_counter()
            for seq in range(SAVES):
                await store.asave_checkpoint(run_id, "step", {**STATE, "n": seq}, expected_seq=seq)
            times.append(time.perf_counter() - started)
        return times

    return asyncio.run(run())


def report(name: str, times: list[float], baseline: float | None) -> float:
    best = min(times) * 1000
    median = statistics.median(times) * 1000
    ratio = f"  ({best / baseline:.1f}x raw)" if baseline else ""
    print(f"{name:<34} best {best:6.2f} ms   median {median:6.2f} ms{ratio}")
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        store = SQLiteFlowPersistence(Path(folder) / "flowkit.db")
        store.init_db()
        store.save_checkpoint("warm-up", "step", STATE, expected_seq=None)
        benches: list[tuple[str, Callable[[], list[float]]]] = [
            (
                "raw sqlite3, 10 INSERT commits",
                lambda: bench_raw(Path(folder) / "raw.db", args.repeats),
            ),
            ("save_checkpoint x10 (sync)", lambda: bench_sync(store, args.repeats)),
            ("asave_checkpoint x10 (async)", lambda: bench_async(store, args.repeats)),
        ]
        baseline = None
        for name, bench in benches:
            best = report(name, bench(), baseline)
            baseline = baseline or best
        store.close()


if __name__ == "__main__":
    main()
