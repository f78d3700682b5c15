"""Waiting on the store, and the invariants the Celery tests check."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from worker_flows import METHODS


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


def committed_tokens(backend: Any, run_id: str) -> dict[str, set[str]]:
    """Method -> every token that any stored checkpoint of the run holds."""
    found: dict[str, set[str]] = defaultdict(set)
    for cp in backend.history(run_id):
        for entry in cp.state.get("commits", []):
            method, _, token = entry.partition(":")
            found[method].add(token)
    return found


def check_exactly_once(
    backend: Any, run_ids: list[str], log: list[list[str]], killed: set[int]
) -> None:
    """Every run completed with each method committed once; a logged execution that was
    not committed happened in a process that was SIGKILLed."""
    executions = {(r, m, t): int(pid) for r, m, t, pid in log}
    committed: set[tuple[str, str, str]] = set()
    for run_id in run_ids:
        run = backend.get_run(run_id)
        assert run is not None and run.status == "completed", (run_id, run)
        tokens = committed_tokens(backend, run_id)
        for method in METHODS:
            assert len(tokens[method]) == 1, f"{run_id}: {method} committed {tokens[method]}"
            committed.add((run_id, method, next(iter(tokens[method]))))
        final = backend.load_state(run_id)
        assert sorted(e.partition(":")[0] for e in final["commits"]) == sorted(METHODS)
    assert committed <= set(executions), "a committed token was never logged"
    cut_off = [key for key in executions if key not in committed]
    for key in cut_off:
        pid = executions[key]
        assert pid in killed, f"{key} ran in live pid {pid} and was not committed"
    print(f"{len(executions)} executions, {len(cut_off)} cut off by kills, {len(killed)} kills")
