"""Scaling on Celery: completed runs per second for 1, 2 and 4 worker processes, next to
the same statements sent by bare asyncpg processes.

Each worker is a ``celery worker --pool=threads --concurrency=1`` process (one run at a
time; not ``--pool=solo``, which on RabbitMQ now and then sits idle for up to 10 s between
two tasks with messages waiting, see bench/README.md) at log level WARNING; all of them
store runs in one PostgreSQL database. The flow has 10 sync steps, each
``state.counter += 1``, with a checkpoint committed after every step
(``CeleryFlows(persistence=...)`` persists every method): 11 commits per run plus the
liveness lock. For each worker count: start the workers on a warm-up queue, wait until
each says it is ready, run 3 untimed warm-up runs per worker, enqueue RUNS runs into a
queue no worker consumes yet, tell the workers to consume it (``add_consumer``) and time
from there until the last run's final checkpoint (its ``updated_at`` in the store; the
driver polls a count every 0.1 s to know when to look). The driver's enqueues are thus
outside the timed window. Median of ROUNDS rounds; a fresh flow name and queues per
round; each round is also printed as it ends.

Before each Celery round, the same number of bare asyncpg processes (``--no-bare`` skips
them) make RUNS runs' worth of the statements a flowkit run sends, copied from the
server's statement log of a kickoff, back to back on two connections each, with no flowkit
and no Celery: what the database and the machine give these statements with 1, 2 and 4
sessions -- the ceiling the hardware sets on the Celery curve.

Also reported per round, to say what limits the curve: the load average, the machine's
CPU busy fraction during the timed window (``/proc/stat``, all processes) and CPU
milliseconds per run of the workers (or bare clients), of the PostgreSQL backends
connected to the bench database, of RabbitMQ (``beam.smp``, shared with anything else
using it) and of this driver (``/proc/<pid>/stat`` deltas); and so the cores the runs got
and the cores everything else on the machine took. CPU per run moves much less with the
machine's load than runs/s do.

``--trace``: the workers also record, per task, when the message was received, the
task's start and end, its CPU, and each statement sent to PostgreSQL (``_celery_app.py``),
and a sampler polls ``pg_stat_activity``/``pg_locks`` every 20 ms; the round's line then
says where a task's time goes and what the sessions waited on. Tracing costs CPU: use it
to explain, not to quote runs/s.

Needs RabbitMQ at 127.0.0.1:5672 and PostgreSQL (``$FLOWKIT_BENCH_POSTGRES_URL``,
default the ``test`` database); says "not available" and reports nothing without them.

Run: ``python bench/celery_scaling.py`` (``--quick``: fewer runs, one round).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from statistics import fmean, median
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import Row, emit

HERE = Path(__file__).resolve().parent

QUICK = "--quick" in sys.argv
RUNS = 100 if QUICK else 300
ROUNDS = 1 if QUICK else 3
TRACE = "--trace" in sys.argv
NO_BARE = "--no-bare" in sys.argv
CPUS = os.cpu_count() or 1
WORKER_COUNTS = (1, 2, 4)
#: The workers' log level: at INFO, Celery and flowkit log 4 lines per run.
LOG_LEVEL = "WARNING"
#: How each worker process is started (besides -A, -Q, -n and the log level).
WORKER_OPTIONS = [
    "--pool=threads", "--concurrency=1",
    "--without-heartbeat", "--without-gossip", "--without-mingle",
]  # fmt: skip


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
    """CPU seconds (user + system) used so far by process ``pid`` (0 if it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _runq_wait(pids: Any) -> float:
    """Seconds the threads of processes ``pids`` have spent so far ready to run but waiting
    for a core (``/proc/<pid>/task/<tid>/schedstat``, second field; threads gone since are
    not counted)."""
    waited = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    waited += int((task / "schedstat").read_text().split()[1])
    return waited / 1e9


def _named(*names: str) -> dict[int, str]:
    """pid -> command name of the processes called one of ``names`` (any user)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if comm in names:
                found[int(entry.name)] = comm
    return found


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Sampler:
    """Samples pg_stat_activity and pg_locks of the bench database every 20 ms on its own
    thread and connection (``--trace``): what the workers' sessions wait on."""

    def __init__(self, url: str) -> None:
        self.dsn = url.replace("postgresql+asyncpg://", "postgresql://")
        self.waits: Counter[str] = Counter()
        self.ungranted: Counter[str] = Counter()
        self.samples = 0
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._loop()), daemon=True)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    async def _loop(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.dsn)
        try:
            while not self._stop.is_set():
                rows = await conn.fetch(
                    "SELECT pid, state, wait_event_type, wait_event, left(query, 40) AS q "
                    "FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                )
                locks = await conn.fetch(
                    "SELECT locktype, mode FROM pg_locks l JOIN pg_stat_activity a "
                    "ON a.pid = l.pid WHERE NOT l.granted AND a.datname = current_database()"
                )
                self.samples += 1
                for row in rows:
                    self.pids.add(row["pid"])
                    if row["state"] == "active":
                        what = f"{row['wait_event_type'] or 'CPU'}:{row['wait_event'] or '-'}"
                        self.waits[f"{what} ({row['q'].split()[0] if row['q'] else ''})"] += 1
                for lock in locks:
                    self.ungranted[f"{lock['locktype']} {lock['mode']}"] += 1
                await asyncio.sleep(0.02)
        finally:
            await conn.close()


def _traces(directory: Path, done_after: float) -> list[dict[str, Any]]:
    tasks = []
    for path in directory.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            task = json.loads(line)
            task["worker"] = path.stem
            if task["start"] >= done_after:
                tasks.append(task)
    return tasks


def _summarise(tasks: list[dict[str, Any]]) -> dict[str, float]:
    """Where a task's time goes, in ms per task (medians and means over ``tasks``)."""
    if not tasks:
        return {}
    by_worker: dict[str, list[dict[str, Any]]] = {}
    for task in sorted(tasks, key=lambda t: t["start"]):
        by_worker.setdefault(task["worker"], []).append(task)
    gaps = [
        1000 * (b["start"] - a["end"])
        for seq in by_worker.values()
        for a, b in itertools.pairwise(seq)
    ]
    queued = [1000 * (t["start"] - t["received"]) for t in tasks if t["received"]]
    wall = [1000 * (t["end"] - t["start"]) for t in tasks]
    sql = [1000 * sum(d for _, _, d in t["sql"]) for t in tasks]
    first = [1000 * (t["sql"][0][1] - t["start"]) for t in tasks if t["sql"]]
    last = [1000 * (t["end"] - max(s[1] + s[2] for s in t["sql"])) for t in tasks if t["sql"]]
    kinds: Counter[str] = Counter(kind for t in tasks for kind, _, _ in t["sql"])
    return {
        "task_ms": median(wall),
        "task_ms_mean": fmean(wall),
        "sql_ms": fmean(sql),
        "other_ms": fmean(wall) - fmean(sql),
        "cpu_ms": 1000 * fmean(t["cpu"] for t in tasks),
        "start_to_first_sql_ms": median(first) if first else 0.0,
        "last_sql_to_end_ms": median(last) if last else 0.0,
        "received_to_start_ms": median(queued) if queued else 0.0,
        "between_tasks_ms": median(gaps) if gaps else 0.0,
        "between_tasks_ms_mean": fmean(gaps) if gaps else 0.0,
        "statements": sum(kinds.values()) / len(tasks),
    }


def one_round(workers: int, tmp: Path, trace: bool = False) -> dict[str, Any]:
    from _celery_app import PG_URL, make_app

    from flowkit.persistence import SQLAlchemyFlowPersistence

    queue = f"flowkit-bench-{uuid.uuid4().hex[:8]}"
    warm_queue = f"{queue}-warm"
    flow_name = f"ten-{uuid.uuid4().hex[:8]}"
    app, flows = make_app(queue, flow_name)
    trace_dir = tmp / f"trace-{queue}"
    env = dict(
        os.environ,
        FLOWKIT_BENCH_QUEUE=queue,
        FLOWKIT_BENCH_FLOW=flow_name,
        PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    )
    if trace:
        trace_dir.mkdir()
        env["FLOWKIT_BENCH_TRACE"] = str(trace_dir)
    ready_dir = tmp / f"ready-{queue}"
    ready_dir.mkdir()
    env["FLOWKIT_BENCH_READY"] = str(ready_dir)
    logs = [tmp / f"{queue}-{i}.log" for i in range(workers)]
    procs = []
    for i, log in enumerate(logs):
        with open(log, "wb") as out:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable, "-m", "celery", "-A", "_celery_app", "worker",
                        *WORKER_OPTIONS, "-Q", warm_queue, "-n", f"b{i}@{queue}",
                        f"--loglevel={LOG_LEVEL}",
                    ],
                    cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
    store = SQLAlchemyFlowPersistence(PG_URL)
    try:
        deadline = time.monotonic() + 120
        while len(list(ready_dir.iterdir())) < workers:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit("workers did not start:\n" + logs[0].read_text())
            time.sleep(0.1)
        cls = next(iter(flows.flows.values()))
        # Warm-up, not timed, on a queue of its own: a worker's first run opens its
        # PostgreSQL pool and liveness session (~0.3 s).
        warm = 3 * workers
        for _ in range(warm):
            flows.enqueue(cls, queue=warm_queue)
        counter = _Completed(PG_URL, flow_name)
        while counter.count()[0] < warm:
            if time.monotonic() > deadline:
                raise SystemExit("warm-up runs did not complete")
            time.sleep(0.05)
        # The timed runs wait in a queue no worker consumes yet: enqueueing (the
        # driver's CPU) is not in the timed window, and every worker starts on a full
        # queue at once when told to consume it.
        t0 = time.perf_counter()
        slowest = 0.0
        for _ in range(RUNS):
            sent = time.perf_counter()
            flows.enqueue(cls)
            slowest = max(slowest, time.perf_counter() - sent)
        enqueued = time.perf_counter() - t0
        done = warm + RUNS
        sampler = _Sampler(PG_URL) if trace else contextlib.nullcontext()
        with sampler:
            others0 = {pid: _proc_cpu(pid) for pid in _named("postgres", "beam.smp")}
            backends0 = _bench_backends(PG_URL)
            waits0 = {pid: _runq_wait([pid]) for pid in backends0}
            wait0 = _runq_wait(p.pid for p in procs)
            cpu0 = sum(_proc_cpu(p.pid) for p in procs)
            self0 = _self_cpu()
            busy0, total0 = _cpu_busy()
            load0 = os.getloadavg()[0]
            started = time.time()
            t0 = time.perf_counter()
            app.control.add_consumer(
                queue, destination=[f"b{i}@{queue}" for i in range(workers)], reply=False
            )
            while (completed := counter.count())[0] < done:
                if time.perf_counter() - t0 > 600:
                    raise SystemExit("runs did not complete in 600 s")
                time.sleep(0.1)
            busy1, total1 = _cpu_busy()
            cpu = sum(_proc_cpu(p.pid) for p in procs) - cpu0
            wait = _runq_wait(p.pid for p in procs) - wait0
            pg_wait = sum(_runq_wait([pid]) - w for pid, w in waits0.items())
            driver = _self_cpu() - self0
            others1 = _named("postgres", "beam.smp")
            deltas = {pid: _proc_cpu(pid) - others0.get(pid, 0.0) for pid in others1}
        counter.close()
        # The last run's final checkpoint time, not when the poll saw it (the poll's
        # 0.1 s step would be 3-10 % of a round).
        elapsed = completed[1] - started
        finished = store.list_runs(flow_name=flow_name, status="completed", limit=done)
        latency = [(r.updated_at - r.created_at).total_seconds() for r in finished]
        backends = _bench_backends(PG_URL)
        pg_all = sum(d for pid, d in deltas.items() if others1[pid] == "postgres")
        result: dict[str, Any] = {
            "runs_per_s": RUNS / elapsed,
            "run_ms": 1000 * median(latency),
            "enqueue_s": enqueued,
            "slowest_enqueue_s": slowest,
            "load": load0,
            "machine_busy": (busy1 - busy0) / max(1, total1 - total0),
            "worker_cpu_ms_per_run": 1000 * cpu / RUNS,
            "pg_cpu_ms_per_run": 1000 * sum(deltas.get(pid, 0.0) for pid in backends) / RUNS,
            "pg_all_cpu_ms_per_run": 1000 * pg_all / RUNS,
            "broker_cpu_ms_per_run": 1000
            * sum(d for pid, d in deltas.items() if others1[pid] == "beam.smp")
            / RUNS,
            "driver_cpu_ms_per_run": 1000 * driver / RUNS,
            "worker_runq_ms_per_run": 1000 * wait / RUNS,
            "pg_runq_ms_per_run": 1000 * pg_wait / RUNS,
        }
        if trace:
            assert isinstance(sampler, _Sampler)
            result["trace"] = _summarise(_traces(trace_dir, started))
            n = max(1, sampler.samples)
            result["pg_active"] = {k: v / n for k, v in sampler.waits.most_common(8)}
            result["pg_ungranted_locks"] = {k: v / n for k, v in sampler.ungranted.items()}
        return result
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
            conn.default_channel.queue_delete(warm_queue)


class _Completed:
    """How many runs of one flow have completed, and when the last one did, from the
    store's table on a connection of its own (cheaper than list_runs every 0.1 s)."""

    def __init__(self, url: str, flow_name: str) -> None:
        import asyncpg

        self.flow_name = flow_name
        self.loop = asyncio.new_event_loop()
        self.conn = self.loop.run_until_complete(
            asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        )

    def count(self) -> tuple[int, float]:
        row = self.loop.run_until_complete(
            self.conn.fetchrow(
                "SELECT count(*) AS n, max(updated_at) AS last FROM flowkit_runs "
                "WHERE flow_name = $1 AND status = 'completed'",
                self.flow_name,
            )
        )
        return int(row["n"]), float(row["last"] or 0.0)

    def close(self) -> None:
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()


def _bench_backends(url: str) -> set[int]:
    """pids of the PostgreSQL backends connected to the bench database now."""
    import asyncpg

    async def ask() -> set[int]:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()
        return {row["pid"] for row in rows}

    return asyncio.run(ask())


# --- the bare-asyncpg ceiling -------------------------------------------------------

#: The statements of one persisted 10-step run on PostgreSQL, as flowkit sends them
#: (read from the server's statement log of a kickoff): a liveness lock on a second
#: session, the run created with its first checkpoint, 9 checkpoints, the last one
#: ending the run and releasing its lease, the unlock. 11 commits (each statement is
#: autocommitted) plus the 2 liveness round trips.
_BEGIN = (
    "WITH r AS (INSERT INTO flowkit_runs (run_id, flow_name, status, created_at, updated_at, "
    "last_seq, parent_run_id, parent_seq, fingerprint, info, lease_owner, lease_expires_at) "
    "VALUES ($1, $2, 'running', $3, $3, 1, NULL, NULL, $4, $5, $6, $7) ON CONFLICT (run_id) "
    "DO NOTHING RETURNING run_id) INSERT INTO flowkit_checkpoints (run_id, seq, method_name, "
    "state, meta, blobs, created_at) SELECT run_id, 1, $8, $9, $10, $11, $3 FROM r RETURNING seq"
)
_SAVE = (
    "WITH r AS (UPDATE flowkit_runs SET last_seq = last_seq + 1, updated_at = $1, status = $2, "
    "flow_name = COALESCE(flow_name, $3){release} WHERE run_id = $4 AND last_seq = $5 AND "
    "lease_owner = $6 RETURNING run_id, last_seq) INSERT INTO flowkit_checkpoints (run_id, seq, "
    "method_name, state, meta, blobs, created_at) SELECT run_id, last_seq, $7, $8, $9, $10, $1 "
    "FROM r RETURNING seq"
)


async def _bare_worker(url: str, flow_name: str, runs: int, warm: int) -> None:
    """One process of the bare-asyncpg baseline (``--bare-worker``): the same statements
    as a flowkit run, on two asyncpg connections, nothing else. Prints "ready" after the
    warm-up, waits for a line on stdin, makes ``runs`` runs back to back, and prints its
    CPU seconds over them as JSON."""
    import asyncpg

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    liveness = await asyncpg.connect(dsn)
    begin = await conn.prepare(_BEGIN)
    save = await conn.prepare(_SAVE.format(release=""))
    end = await conn.prepare(_SAVE.format(release=", lease_owner = NULL, lease_expires_at = NULL"))
    lock = await liveness.prepare("SELECT pg_try_advisory_lock($1)")
    unlock = await liveness.prepare("SELECT pg_advisory_unlock($1)")
    info = json.dumps({"definition": {"flow": flow_name, "methods": {
        f"s{i}": {"start": i == 1, "router": False, "condition": f"s{i - 1}" if i > 1 else None}
        for i in range(1, 11)
    }}}, separators=(",", ":"))  # fmt: skip

    def meta(step: int) -> str:
        pending = [] if step == 10 else [{"id": step + 1, "method": f"s{step + 1}"}]
        calls = {f"s{i}": 1 for i in range(1, min(step + 1, 10) + 1)}
        last = {"method": f"s{step}", "output": None}
        position = {"pending": pending, "calls": calls, "and": {}, "last": last}
        return json.dumps({"position": position, "state_version": 1})

    async def one_run() -> None:
        run_id = str(uuid.uuid4())
        owner = f"bare:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        key = hash(owner) & 0x7FFFFFFFFFFFFFFF
        await lock.fetchval(key)
        now = time.time()
        state = f'{{"id":"{run_id}","counter":%d}}'
        await begin.fetchval(
            run_id, flow_name, now, "fp", info, owner, now + 30, "kickoff",
            state % 0, meta(0), None,
        )  # fmt: skip
        for step in range(1, 11):
            statement = end if step == 10 else save
            status = "completed" if step == 10 else "running"
            seq = await statement.fetchval(
                time.time(), status, None, run_id, step, owner, f"s{step}",
                state % step, meta(step), None,
            )  # fmt: skip
            if seq != step + 1:
                raise SystemExit(f"bare run {run_id}: checkpoint {step} not written")
        await unlock.fetchval(key)

    for _ in range(warm):
        await one_run()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    cpu0 = _self_cpu()
    for _ in range(runs):
        await one_run()
    print(json.dumps({"cpu": _self_cpu() - cpu0}), flush=True)
    # Stay connected until told to go, so the driver can read the backends' CPU.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await conn.close()
    await liveness.close()


def bare_round(processes: int, runs: int) -> dict[str, Any]:
    """``runs`` runs of the bare-asyncpg baseline shared by ``processes`` processes, each
    making its share back to back: the rate the database and the machine allow for these
    statements with that many sessions, without flowkit or Celery."""
    from _celery_app import PG_URL

    flow_name = f"bare-{uuid.uuid4().hex[:8]}"
    share = [runs // processes + (i < runs % processes) for i in range(processes)]
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--bare-worker", PG_URL, flow_name, str(n), "3"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        for n in share
    ]  # fmt: skip
    try:
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise SystemExit("a bare-asyncpg worker did not start")
        backends = _bench_backends(PG_URL)
        pg0 = {pid: _proc_cpu(pid) for pid in backends}
        waits0 = {pid: _runq_wait([pid]) for pid in [*backends, *(p.pid for p in procs)]}
        busy0, total0 = _cpu_busy()
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        reports = []
        for p in procs:
            assert p.stdout is not None
            reports.append(json.loads(p.stdout.readline()))
        elapsed = time.perf_counter() - t0
        busy1, total1 = _cpu_busy()
        pg = sum(_proc_cpu(pid) - cpu for pid, cpu in pg0.items())
        waits = {pid: _runq_wait([pid]) - w for pid, w in waits0.items()}
    finally:
        for p in procs:
            with contextlib.suppress(OSError):
                assert p.stdin is not None
                p.stdin.write("bye\n")
                p.stdin.close()
        for p in procs:
            p.wait(timeout=60)
    cpu = sum(r["cpu"] for r in reports)
    return {
        "runs_per_s": runs / elapsed,
        "load": load0,
        "machine_busy": (busy1 - busy0) / max(1, total1 - total0),
        "client_cpu_ms_per_run": 1000 * cpu / runs,
        "pg_cpu_ms_per_run": 1000 * pg / runs,
        "client_runq_ms_per_run": 1000 * sum(waits[p.pid] for p in procs) / runs,
        "pg_runq_ms_per_run": 1000 * sum(waits[pid] for pid in backends) / runs,
    }


def _total_cpu(r: dict[str, Any]) -> float:
    """CPU ms per run of everything the runs need: the workers, their PostgreSQL
    backends and the broker (the driver's enqueues and polling are reported apart)."""
    return float(r["worker_cpu_ms_per_run"] + r["pg_cpu_ms_per_run"] + r["broker_cpu_ms_per_run"])


def _describe(n: int, r: dict[str, Any]) -> str:
    line = (
        f"{n} worker(s): {r['runs_per_s']:5.1f} runs/s, a run {r['run_ms']:.1f} ms from first to "
        f"last statement (enqueued in {r['enqueue_s']:.2f} s, "
        f"slowest {1000 * r['slowest_enqueue_s']:.0f} ms), load {r['load']:.1f}, machine "
        f"{100 * r['machine_busy']:.0f}% busy; CPU ms/run: workers "
        f"{r['worker_cpu_ms_per_run']:.1f} + PostgreSQL backends {r['pg_cpu_ms_per_run']:.1f} "
        f"+ broker {r['broker_cpu_ms_per_run']:.1f} = {_total_cpu(r):.1f} (all postgres "
        f"{r['pg_all_cpu_ms_per_run']:.1f}, driver {r['driver_cpu_ms_per_run']:.1f}); the "
        f"runs got {r['runs_per_s'] * _total_cpu(r) / 1000:.2f} cores, everything else "
        f"{max(0.0, r['machine_busy'] * CPUS - r['runs_per_s'] * _total_cpu(r) / 1000):.2f}"
        f"; waiting for a core, ms/run: workers {r['worker_runq_ms_per_run']:.1f}, PostgreSQL "
        f"backends {r['pg_runq_ms_per_run']:.1f}"
    )
    if "trace" in r:
        t = r["trace"]
        line += (
            f"\n    per task (ms): {t['task_ms']:.1f} median, {t['task_ms_mean']:.1f} mean = "
            f"statements (each autocommitted) {t['sql_ms']:.1f} + other {t['other_ms']:.1f}"
            f"; worker CPU {t['cpu_ms']:.1f}; start->1st sql {t['start_to_first_sql_ms']:.2f}"
            f", last sql->end {t['last_sql_to_end_ms']:.2f}; received->start "
            f"{t['received_to_start_ms']:.2f}; end->next start {t['between_tasks_ms']:.2f} "
            f"median, {t['between_tasks_ms_mean']:.2f} mean; {t['statements']:.1f} "
            "statements/task"
            f"\n    pg active sessions per sample: "
            + ", ".join(f"{k} {v:.2f}" for k, v in r["pg_active"].items())
            + f"; ungranted locks per sample: {r['pg_ungranted_locks'] or 0}"
        )
    return line


def _describe_bare(n: int, r: dict[str, Any]) -> str:
    cpu = r["client_cpu_ms_per_run"] + r["pg_cpu_ms_per_run"]
    return (
        f"bare asyncpg, {n} process(es): {r['runs_per_s']:5.1f} runs/s, load {r['load']:.1f}, "
        f"machine {100 * r['machine_busy']:.0f}% busy; CPU ms/run: client "
        f"{r['client_cpu_ms_per_run']:.1f} + PostgreSQL backends {r['pg_cpu_ms_per_run']:.1f} = "
        f"{cpu:.1f}; the runs got {r['runs_per_s'] * cpu / 1000:.2f} cores, everything else "
        f"{max(0.0, r['machine_busy'] * CPUS - r['runs_per_s'] * cpu / 1000):.2f}; waiting "
        f"for a core, ms/run: clients {r['client_runq_ms_per_run']:.1f}, PostgreSQL backends "
        f"{r['pg_runq_ms_per_run']:.1f}"
    )


def main() -> None:
    if not (_up(5672) and _up(5432)):
        print("not available: RabbitMQ (5672) and PostgreSQL (5432) must be up")
        emit("celery_scaling.py", [])
        return
    results: dict[int, list[dict[str, Any]]] = {n: [] for n in WORKER_COUNTS}
    bare: dict[int, list[dict[str, Any]]] = {n: [] for n in WORKER_COUNTS}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(ROUNDS):
            for n in WORKER_COUNTS:  # interleaved, so machine noise lands on every count
                if not NO_BARE:
                    bare[n].append(bare_round(n, RUNS))
                    print(_describe_bare(n, bare[n][-1]), file=sys.stderr, flush=True)
                results[n].append(one_round(n, Path(tmp), trace=TRACE))
                print(_describe(n, results[n][-1]), file=sys.stderr, flush=True)
    base = median(r["runs_per_s"] for r in results[1])
    rows = []
    if not NO_BARE:
        bare_base = median(r["runs_per_s"] for r in bare[1])
        for n in WORKER_COUNTS:
            rate = median(r["runs_per_s"] for r in bare[n])
            rows.append(
                Row(
                    name=f"bare asyncpg, {n} process{'es' if n > 1 else ''} (runs/s)",
                    flowkit_ns=1e9 / rate,
                    note=(
                        f"{rate:.1f} runs/s = {rate / bare_base:.2f}x 1 process; CPU/run: "
                        f"client {median(r['client_cpu_ms_per_run'] for r in bare[n]):.1f} ms"
                        f" + PostgreSQL {median(r['pg_cpu_ms_per_run'] for r in bare[n]):.1f}"
                        " ms; rounds: " + ", ".join(f"{r['runs_per_s']:.1f}" for r in bare[n])
                    ),
                    extra={"runs_per_s": rate, "speedup": rate / bare_base, "rounds": bare[n]},
                )
            )
    for n in WORKER_COUNTS:
        rate = median(r["runs_per_s"] for r in results[n])
        busy = median(r["machine_busy"] for r in results[n])
        cpu = median(r["worker_cpu_ms_per_run"] for r in results[n])
        total = median(_total_cpu(r) for r in results[n])
        rows.append(
            Row(
                name=f"celery {n} worker{'s' if n > 1 else ''} (runs/s)",
                flowkit_ns=1e9 / rate,
                note=(
                    f"{rate:.1f} runs/s = {rate / base:.2f}x 1 worker; machine CPU "
                    f"{100 * busy:.0f}% busy; CPU/run: workers {cpu:.0f} ms, with "
                    f"PostgreSQL and broker {total:.0f} ms (x runs/s = "
                    f"{rate * total / 1000:.2f} cores); rounds: "
                    + ", ".join(f"{r['runs_per_s']:.1f}" for r in results[n])
                ),
                extra={"runs_per_s": rate, "speedup": rate / base, "rounds": results[n]},
            )
        )
    meta: dict[str, Any] = {"runs": RUNS, "rounds": ROUNDS, "cpus": os.cpu_count()}
    emit("celery_scaling.py", rows, meta)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--bare-worker"]:
        url, name, runs, warm = sys.argv[2:6]
        asyncio.run(_bare_worker(url, name, int(runs), int(warm)))
    else:
        main()
