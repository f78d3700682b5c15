"""Waiting on the store, and the invariants the Celery tests check."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from worker_flows import METHODS, SEQUENTIAL


def wait_for(what: str, check: Callable[[], bool], timeout: float, cluster: Any) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what}\n{cluster.logs()[-6000:]}"
            )
        time.sleep(0.2)


def statuses(backend: Any, flow_name: str) -> dict[str, str]:
    runs = backend.list_runs(flow_name=flow_name, limit=10_000)
    return {run.run_id: run.status for run in runs}


def commit_times(backend: Any, run_id: str) -> dict[str, list[float]]:
    """Method -> when each checkpoint that committed it was written (interrupt
    checkpoints, which commit nothing, left out)."""
    found: dict[str, list[float]] = defaultdict(list)
    for cp in backend.history(run_id):
        if "interrupt" not in cp.meta:
            found[cp.method_name].append(cp.created_at.timestamp())
    return found


def check_exactly_once(
    backend: Any, run_ids: list[str], log: list[list[str]], killed: set[int]
) -> None:
    """Every run completed; each method was committed once; no execution of a method
    started after its commit; an execution that did not commit ran in a killed process."""
    started: dict[tuple[str, str], list[tuple[float, int]]] = defaultdict(list)
    for run_id, method, at, pid in log:
        started[(run_id, method)].append((float(at), int(pid)))
    repeats = 0
    for run_id in run_ids:
        run = backend.get_run(run_id)
        assert run is not None and run.status == "completed", (run_id, run)
        commits = commit_times(backend, run_id)
        for method in METHODS:
            assert len(commits[method]) == 1, f"{run_id}: {method} committed {commits[method]}"
            committed_at = commits[method][0]
            runs = started[(run_id, method)]
            assert runs, f"{run_id}: {method} committed but never logged"
            late = [(at, pid) for at, pid in runs if at > committed_at]
            assert not late, f"{run_id}: {method} ran again after its commit: {late}"
            live = [pid for _at, pid in runs if pid not in killed]
            assert len(live) <= 1, f"{run_id}: {method} ran in live workers {live}"
            repeats += len(runs) - 1
        final = backend.load_state(run_id)
        assert sorted(final["commits"]) == sorted(SEQUENTIAL), (run_id, final["commits"])
    print(f"{len(log)} executions, {repeats} repeated after kills, {len(killed)} kills")
