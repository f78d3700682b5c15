"""Workers die mid-run; every run still completes, each method committed once (SPEC 5).

Three ``celery worker`` processes share one RabbitMQ queue and one PostgreSQL store. The
test enqueues RUNS runs of a flow with a parallel branch and an interrupt, answers each
interrupt as it appears, and meanwhile SIGKILLs a worker that holds a run's lease (so
the kill lands mid-run), KILLS times, restarting it each time. Then: every run
completed, no method was committed twice (tokens in the stored history), every logged
execution that was not committed ran in a killed process, nothing was lost.

``FLOWKIT_SOAK_RUNS`` / ``FLOWKIT_SOAK_KILLS`` make it longer (``nox -s soak-workers``).
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import pytest
from helpers import check_exactly_once, statuses
from worker_app import PG_URL

from flowkit.persistence import SQLAlchemyFlowPersistence

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

RUNS = int(os.environ.get("FLOWKIT_SOAK_RUNS", "100"))
KILLS = int(os.environ.get("FLOWKIT_SOAK_KILLS", "5"))
WORKERS = 3
TIMEOUT = 60 + RUNS * 1.5


def _lease_pid(owner: str | None) -> int | None:
    parts = (owner or "").split(":")  # host:pid:start:token
    return int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else None


def test_killed_workers_lose_no_run_and_repeat_no_committed_method(cluster_factory: Any) -> None:
    """SIGKILL workers holding runs, restart them: all runs complete exactly once."""
    rng = random.Random(os.environ.get("FLOWKIT_SOAK_SEED"))
    # Leases far longer than the test: a killed worker's runs are taken over because its
    # process is gone, never because a lease ran out.
    cluster = cluster_factory(ttl=300.0, step_seconds=0.03)
    for slot in range(WORKERS):
        cluster.start(slot)
    store = SQLAlchemyFlowPersistence(PG_URL)
    try:
        flow = next(iter(cluster.flows.flows.values()))
        ids = [cluster.flows.enqueue(flow) for _ in range(RUNS)]
        answered: set[str] = set()
        kills: list[tuple[int, str]] = []  # (pid, run it was executing)
        last_kill = time.monotonic()
        deadline = time.monotonic() + TIMEOUT
        while True:
            runs = store.list_runs(flow_name=cluster.flow_name, limit=10_000)
            status = {r.run_id: r.status for r in runs}
            if len(status) == len(ids) and set(status.values()) == {"completed"}:
                if len(kills) >= KILLS:
                    break
                # a fast machine finished every run before all kills landed: more runs
                ids += [cluster.flows.enqueue(flow) for _ in range(RUNS // 4 or 1)]
                deadline += (RUNS // 4 or 1) * 1.5
                continue
            assert time.monotonic() < deadline, (
                f"runs not all completed after {TIMEOUT} s: "
                f"{sorted(status.values()).count('completed')} of {len(ids)}; "
                f"{len(kills)} kills\n{cluster.logs()[-8000:]}"
            )
            for run_id, st in status.items():
                if st == "interrupted" and run_id not in answered:
                    cluster.flows.enqueue_resume(run_id, "yes")
                    answered.add(run_id)
            if len(kills) < KILLS and time.monotonic() - last_kill > 1.0:
                by_pid = {w.pid: slot for slot, w in cluster.workers.items() if w.poll() is None}
                busy = [
                    (pid, r.run_id)
                    for r in runs
                    if r.status == "running" and (pid := _lease_pid(r.lease_owner)) in by_pid
                ]
                if busy:
                    pid, run_id = rng.choice(busy)
                    cluster.kill(by_pid[pid])
                    cluster.start(by_pid[pid])
                    kills.append((pid, run_id))
                    last_kill = time.monotonic()
            time.sleep(0.1)
        assert len(kills) == KILLS, f"only {len(kills)} kills landed while runs were running"
        assert statuses(store, cluster.flow_name) == dict.fromkeys(ids, "completed")
        assert answered == set(ids)
        check_exactly_once(store, ids, cluster.log_lines(), cluster.killed_pids)
    finally:
        store.close()
