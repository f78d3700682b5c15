"""Scaling on Celery: completed runs per second for 1, 2 and 4 worker processes.

Each worker is a ``celery worker --pool=solo`` process (one run at a time) on one
RabbitMQ queue; all of them store runs in one PostgreSQL database. The flow has 10
sync steps, each ``state.counter += 1``, with a checkpoint committed after every step
(``CeleryFlows(persistence=...)`` persists every method): 11 commits per run plus the
lease. For each worker count: start the workers, wait until each says it is ready,
enqueue RUNS runs, and time from the first enqueue until the store shows every run
completed (polled every 0.1 s). Median of ROUNDS rounds; a fresh flow name and queue
per round.

Also reported per worker count, to say what limits the curve: the machine's CPU busy
fraction during the timed window (``/proc/stat``, all processes: workers, PostgreSQL,
RabbitMQ and whatever else runs) and the workers' own CPU seconds per run.

Needs RabbitMQ at 127.0.0.1:5672 and PostgreSQL (``$FLOWKIT_BENCH_POSTGRES_URL``,
default the ``test`` database); says "not available" and reports nothing without them.

Run: ``python bench/celery_scaling.py`` (``--quick``: fewer runs, one round).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import Row, emit

HERE = Path(__file__).resolve().parent

QUICK = "--quick" in sys.argv
RUNS = 60 if QUICK else 120
ROUNDS = 1 if QUICK else 3
WORKER_COUNTS = (1, 2, 4)


def _up(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid``."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_round(workers: int, tmp: Path) -> dict[str, float]:
    from _celery_app import PG_URL, make_app

    from flowkit.persistence import SQLAlchemyFlowPersistence

    queue = f"flowkit-bench-{uuid.uuid4().hex[:8]}"
    flow_name = f"ten-{uuid.uuid4().hex[:8]}"
    app, flows = make_app(queue, flow_name)
    env = dict(
        os.environ,
        FLOWKIT_BENCH_QUEUE=queue,
        FLOWKIT_BENCH_FLOW=flow_name,
        PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    )
    logs = [tmp / f"{queue}-{i}.log" for i in range(workers)]
    procs = []
    for i, log in enumerate(logs):
        with open(log, "wb") as out:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable, "-m", "celery", "-A", "_celery_app", "worker",
                        "--pool=solo", "-Q", queue, "-n", f"b{i}@%h", "--loglevel=INFO",
                        "--without-heartbeat", "--without-gossip", "--without-mingle",
                    ],
                    cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
    store = SQLAlchemyFlowPersistence(PG_URL)
    try:
        deadline = time.monotonic() + 120
        while not all("ready." in log.read_text(errors="replace") for log in logs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit("workers did not start:\n" + logs[0].read_text())
            time.sleep(0.1)
        cls = next(iter(flows.flows.values()))
        # Warm-up, not timed: a worker's first run opens its PostgreSQL pool and liveness
        # session (~0.3 s), which would otherwise weigh on the short timed window.
        warm = 3 * workers
        for _ in range(warm):
            flows.enqueue(cls)
        while len(store.list_runs(flow_name=flow_name, status="completed", limit=warm)) < warm:
            if time.monotonic() > deadline:
                raise SystemExit("warm-up runs did not complete")
            time.sleep(0.05)
        cpu0 = sum(_proc_cpu(p.pid) for p in procs)
        busy0, total0 = _cpu_busy()
        t0 = time.perf_counter()
        for _ in range(RUNS):
            flows.enqueue(cls)
        done = warm + RUNS
        while len(store.list_runs(flow_name=flow_name, status="completed", limit=done)) < done:
            if time.perf_counter() - t0 > 600:
                raise SystemExit("runs did not complete in 600 s")
            time.sleep(0.1)
        elapsed = time.perf_counter() - t0
        busy1, total1 = _cpu_busy()
        cpu = sum(_proc_cpu(p.pid) for p in procs) - cpu0
        return {
            "runs_per_s": RUNS / elapsed,
            "machine_busy": (busy1 - busy0) / max(1, total1 - total0),
            "worker_cpu_ms_per_run": 1000 * cpu / RUNS,
        }
    finally:
        store.close()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue)


def main() -> None:
    if not (_up(5672) and _up(5432)):
        print("not available: RabbitMQ (5672) and PostgreSQL (5432) must be up")
        emit("celery_scaling.py", [])
        return
    results: dict[int, list[dict[str, float]]] = {n: [] for n in WORKER_COUNTS}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(ROUNDS):
            for n in WORKER_COUNTS:  # interleaved, so machine noise lands on every count
                results[n].append(one_round(n, Path(tmp)))
    base = median(r["runs_per_s"] for r in results[1])
    rows = []
    for n in WORKER_COUNTS:
        rate = median(r["runs_per_s"] for r in results[n])
        busy = median(r["machine_busy"] for r in results[n])
        cpu = median(r["worker_cpu_ms_per_run"] for r in results[n])
        rows.append(
            Row(
                name=f"celery {n} worker{'s' if n > 1 else ''} (runs/s)",
                flowkit_ns=1e9 / rate,
                note=(
                    f"{rate:.1f} runs/s = {rate / base:.2f}x 1 worker; machine CPU "
                    f"{100 * busy:.0f}% busy; workers {cpu:.0f} ms CPU/run; rounds: "
                    + ", ".join(f"{r['runs_per_s']:.1f}" for r in results[n])
                ),
                extra={"runs_per_s": rate, "speedup": rate / base, "rounds": results[n]},
            )
        )
    meta: dict[str, Any] = {"runs": RUNS, "rounds": ROUNDS, "cpus": os.cpu_count()}
    emit("celery_scaling.py", rows, meta)


if __name__ == "__main__":
    main()
