"""Several OS processes on one SQLite file or one run folder: nothing lost, ever."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flowkit.persistence import FileFlowPersistence, FlowPersistence, SQLiteFlowPersistence

WORKER = Path(__file__).with_name("_workers.py")
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _open(kind: str, location: Path) -> FlowPersistence:
    if kind == "sqlite":
        return SQLiteFlowPersistence(location)
    return FileFlowPersistence(location)


def _spawn(*args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *map(str, args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait(processes: list[subprocess.Popen[str]]) -> list[str]:
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        outputs.append(out)
    return outputs


@pytest.mark.parametrize("kind", ["sqlite", "file"])
def test_processes_writing_different_runs_lose_nothing(kind: str, tmp_path: Path) -> None:
    """Four processes writing their own runs into one store concurrently: every
    checkpoint of every run is there, numbered without gaps."""
    location = tmp_path / ("flows.db" if kind == "sqlite" else "runs")
    workers, runs, saves = 4, 3, 8
    _wait([_spawn("write", kind, location, worker, runs, saves) for worker in range(workers)])
    store = _open(kind, location)
    try:
        listed = store.list_runs(flow_name="Multi", limit=1000)
        assert len(listed) == workers * runs
        for run in listed:
            assert [c.seq for c in store.history(run.run_id)] == list(range(1, saves + 1))
            assert store.load_state(run.run_id) == {"id": run.run_id, "n": saves - 1}
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["sqlite", "file"])
def test_processes_doing_cas_on_one_run_lose_no_update(kind: str, tmp_path: Path) -> None:
    """Two processes incrementing one run's counter with load + compare-and-set: the
    final counter equals the number of increments (no lost update) and last_seq too."""
    location = tmp_path / ("flows.db" if kind == "sqlite" else "runs")
    store = _open(kind, location)
    store.save_checkpoint("shared", "start", {"id": "shared", "counter": 0}, expected_seq=0)
    times = 40
    _wait([_spawn("increment", kind, location, "shared", times) for _ in range(2)])
    try:
        state = store.load_state("shared")
        assert state is not None and state["counter"] == 2 * times
        run = store.get_run("shared")
        assert run is not None and run.last_seq == 2 * times + 1
    finally:
        store.close()
