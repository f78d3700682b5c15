"""Timing helpers shared by the bench scripts (not a bench script itself).

Every case measures flowkit and its peer in the same process, interleaved: each round
times one batch of each contender in turn (the order rotates every round), so machine
noise lands on all of them alike. A batch is timed as a whole with ``perf_counter_ns``
and divided by its size; the reported number is the median over rounds. The garbage
collector is collected before and disabled during every batch.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from statistics import median
from typing import Any

__all__ = [
    "Row",
    "emit",
    "fmt_ns",
    "measure",
    "measure_async",
    "peer_version",
    "print_table",
]

#: Environment variable through which ``bench/run.py`` asks a script for its rows.
JSON_ENV = "FLOWKIT_BENCH_JSON"


@dataclass
class Row:
    """One line of the results table. Times are medians in nanoseconds per operation."""

    name: str
    flowkit_ns: float | None
    peer_ns: float | None = None
    peer: str = ""
    #: the target is "flowkit / peer < target" (or vs. another baseline, see ``note``)
    target: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.flowkit_ns is None or not self.peer_ns:
            return None
        return self.flowkit_ns / self.peer_ns

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "-"
        if self.ratio is None:
            return "n/a"
        return "pass" if self.ratio < self.target else "FAIL"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        data["verdict"] = self.verdict
        return data


def _batch(func: Callable[[], Any], n: int) -> tuple[float, float]:
    """Wall and CPU (every thread of the process) ns per call of ``n`` calls."""
    gc.collect()
    gc.disable()
    try:
        c0 = time.process_time_ns()
        t0 = time.perf_counter_ns()
        for _ in range(n):
            func()
        return (time.perf_counter_ns() - t0) / n, (time.process_time_ns() - c0) / n
    finally:
        gc.enable()


def measure(
    contenders: dict[str, Callable[[], Any]],
    *,
    batch: int,
    rounds: int,
    warmup: int = 3,
    cpu: dict[str, float] | None = None,
) -> dict[str, float]:
    """Median ns per call of each contender, interleaved batch by batch. ``cpu``, if
    given, receives the median CPU time per call (``time.process_time``: all threads of
    the process), which a loaded machine disturbs less than wall time."""
    names = list(contenders)
    for name in names:
        for _ in range(warmup):
            _batch(contenders[name], batch)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            samples[name].append(_batch(contenders[name], batch))
    return _medians(samples, cpu)


def _medians(
    samples: dict[str, list[tuple[float, float]]], cpu: dict[str, float] | None
) -> dict[str, float]:
    if cpu is not None:
        cpu.update({name: median(c for _, c in values) for name, values in samples.items()})
    return {name: median(w for w, _ in values) for name, values in samples.items()}


async def _abatch(func: Callable[[], Awaitable[Any]], n: int) -> tuple[float, float]:
    gc.collect()
    gc.disable()
    try:
        c0 = time.process_time_ns()
        t0 = time.perf_counter_ns()
        for _ in range(n):
            await func()
        return (time.perf_counter_ns() - t0) / n, (time.process_time_ns() - c0) / n
    finally:
        gc.enable()


async def measure_async(
    contenders: dict[str, Callable[[], Awaitable[Any]]],
    *,
    batch: int,
    rounds: int,
    warmup: int = 3,
    cpu: dict[str, float] | None = None,
) -> dict[str, float]:
    """Like :func:`measure`, for coroutine functions, all on the running event loop."""
    names = list(contenders)
    for name in names:
        for _ in range(warmup):
            await _abatch(contenders[name], batch)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            samples[name].append(await _abatch(contenders[name], batch))
    return _medians(samples, cpu)


def run_async(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def peer_version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def fmt_ns(ns: float | None) -> str:
    if ns is None:
        return "-"
    if ns >= 1e9:
        return f"{ns / 1e9:.2f} s"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.1f} us"
    return f"{ns:.0f} ns"


def print_table(rows: list[Row], file: Any = None) -> None:
    out = file or sys.stdout
    header = ("case", "flowkit", "peer", "ratio", "target", "vs target", "peer is")
    lines = [
        (
            r.name,
            fmt_ns(r.flowkit_ns),
            fmt_ns(r.peer_ns),
            "-" if r.ratio is None else f"{r.ratio:.3f}x",
            "-" if r.target is None else f"< {r.target}x",
            r.verdict,
            r.peer or "-",
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)), file=out)
    notes = [r for r in rows if r.note]
    if notes:
        print(file=out)
        for r in notes:
            print(f"  {r.name}: {r.note}", file=out)


def emit(script: str, rows: list[Row], meta: dict[str, Any] | None = None) -> None:
    """Print the table, and hand the rows to ``bench/run.py`` when it asked for them."""
    print_table(rows)
    target = os.environ.get(JSON_ENV)
    if target:
        with open(target, "w", encoding="utf-8") as fh:
            json.dump(
                {"script": script, "meta": meta or {}, "rows": [r.as_dict() for r in rows]},
                fh,
                indent=2,
            )
