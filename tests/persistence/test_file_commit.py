"""FileFlowPersistence's commit point: a process SIGKILLed in the middle of a save leaves
nothing visible, and what it left on disk is cleaned up by the run's next claim or save.

The crashing writers are real subprocesses killing themselves with SIGKILL at a chosen
point of a save (their own copy of a file-writing function is wrapped to do so), or
killed by the test at random moments.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowkit.persistence import FileFlowPersistence
from flowkit.persistence._rules import new_owner

RUN_ID = "crashy"

# Saves checkpoints 1..N of RUN_ID (a big field per step, so each has its own blob) and
# dies with SIGKILL after checkpoint N's file is written, before run.json points at it.
_DIE_BEFORE_RUN_JSON = """
import os, signal, sys
import flowkit.persistence._file as file_backend
from flowkit.persistence import FileFlowPersistence

directory, run_id, die_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
real_write_run = file_backend.write_run

def write_run(run_dir, run):
    if run.last_seq == die_at:
        os.kill(os.getpid(), signal.SIGKILL)
    real_write_run(run_dir, run)

file_backend.write_run = write_run
store = FileFlowPersistence(directory)
for n in range(1, die_at + 1):
    state = {"id": run_id, "n": n, "big": f"step {n} " + "x" * 3000}
    store.save_checkpoint(run_id, "step", state, expected_seq=n - 1, flow_name="F")
"""

# Dies inside the rename of run.json for checkpoint N: run.json's temporary file and
# checkpoint N's file are left behind.
_DIE_IN_RUN_JSON_RENAME = """
import os, signal, sys
from flowkit.persistence import FileFlowPersistence

directory, run_id, die_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
real_replace = os.replace
commits = 0

def replace(source, target):
    global commits
    if str(target).endswith("run.json"):
        commits += 1
        if commits == die_at:
            os.kill(os.getpid(), signal.SIGKILL)
    real_replace(source, target)

os.replace = replace
store = FileFlowPersistence(directory)
for n in range(1, die_at + 1):
    store.save_checkpoint(run_id, "step", {"id": run_id, "n": n}, expected_seq=n - 1)
"""

# Saves checkpoints forever (with compare-and-set) until killed.
_SAVE_FOREVER = """
import sys
from flowkit.persistence import FileFlowPersistence

directory, run_id = sys.argv[1], sys.argv[2]
store = FileFlowPersistence(directory)
run = store.get_run(run_id)
seq = run.last_seq if run is not None else 0
print("ready", flush=True)
while True:
    seq += 1
    state = {"id": run_id, "n": seq, "big": f"step {seq} " + "y" * 3000}
    store.save_checkpoint(run_id, "step", state, expected_seq=seq - 1, flow_name="F")
"""


def _crash(script: str, directory: Path, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", script, str(directory), RUN_ID, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stderr)


@pytest.fixture
def crashed(tmp_path: Path) -> FileFlowPersistence:
    """A run whose save of checkpoint 3 was killed between its two writes."""
    _crash(_DIE_BEFORE_RUN_JSON, tmp_path, "3")
    store = FileFlowPersistence(tmp_path)
    run_dir = store._run_dir(RUN_ID)
    assert (run_dir / "000000000003.json").exists()  # the orphan is really there
    assert store.get_run(RUN_ID).last_seq == 2  # type: ignore[union-attr]
    return store


def _files(store: FileFlowPersistence) -> set[str]:
    run_dir = store._run_dir(RUN_ID)
    return set(os.listdir(run_dir)) | {f"blobs/{n}" for n in os.listdir(run_dir / "blobs")}


def test_orphan_checkpoint_is_not_in_history(crashed: FileFlowPersistence) -> None:
    """history() lists only the committed checkpoints, not the orphan of the crash."""
    assert [c.seq for c in crashed.history(RUN_ID)] == [1, 2]


def test_orphan_checkpoint_cannot_be_loaded(crashed: FileFlowPersistence) -> None:
    """load_state and load_checkpoint return the last committed checkpoint; the orphan's
    seq does not exist."""
    assert crashed.load_state(RUN_ID)["n"] == 2  # type: ignore[index]
    latest = crashed.load_checkpoint(RUN_ID)
    assert latest is not None and latest.seq == 2
    assert crashed.load_checkpoint(RUN_ID, 3) is None


def test_prune_after_crash_keeps_the_committed_latest(crashed: FileFlowPersistence) -> None:
    """prune(keep_last=1) deletes checkpoint 1 and keeps committed checkpoint 2 (never the
    orphan), removes the orphan and its blob, and the run still loads."""
    assert crashed.prune(RUN_ID, keep_last=1) == 1
    assert [c.seq for c in crashed.history(RUN_ID)] == [2]
    assert crashed.load_state(RUN_ID) == {
        "id": RUN_ID,
        "n": 2,
        "big": "step 2 " + "x" * 3000,
    }
    files = _files(crashed)
    assert "000000000003.json" not in files
    assert len([name for name in files if name.startswith("blobs/")]) == 1


def test_next_save_replaces_the_orphan(crashed: FileFlowPersistence) -> None:
    """The next save (expecting seq 2) stores checkpoint 3 in place of the orphan."""
    saved = crashed.save_checkpoint(RUN_ID, "again", {"id": RUN_ID, "n": 30}, expected_seq=2)
    assert saved.seq == 3
    assert crashed.load_checkpoint(RUN_ID, 3).state == {"id": RUN_ID, "n": 30}  # type: ignore[union-attr]
    assert [c.method_name for c in crashed.history(RUN_ID)] == ["step", "step", "again"]


def test_claim_after_crash_returns_committed_latest_and_cleans_up(
    crashed: FileFlowPersistence,
) -> None:
    """claim_run returns checkpoint 2 as the latest and deletes the orphan file."""
    run, latest = crashed.claim_run(RUN_ID, new_owner(), 30)
    assert (run.last_seq, latest.seq if latest else None) == (2, 2)
    assert "000000000003.json" not in _files(crashed)


def test_claim_removes_temporary_files_of_a_crashed_commit(tmp_path: Path) -> None:
    """A writer killed inside run.json's rename leaves run.json's temporary file and the
    checkpoint file; neither is visible, and claim_run removes both."""
    _crash(_DIE_IN_RUN_JSON_RENAME, tmp_path, "3")
    store = FileFlowPersistence(tmp_path)
    run_dir = store._run_dir(RUN_ID)
    leftovers = [name for name in os.listdir(run_dir) if name.endswith(".tmp")]
    assert leftovers and (run_dir / "000000000003.json").exists()
    assert [c.seq for c in store.history(RUN_ID)] == [1, 2]
    run, latest = store.claim_run(RUN_ID, new_owner(), 30)
    assert latest is not None and (run.last_seq, latest.state["n"]) == (2, 2)
    assert sorted(os.listdir(run_dir)) == [
        ".lock",
        "000000000001.json",
        "000000000002.json",
        "run.json",
    ]


@pytest.mark.slow
def test_writer_killed_at_random_moments_leaves_a_consistent_run(tmp_path: Path) -> None:
    """A writer SIGKILLed at random moments, eight times over: every time, history is
    the contiguous committed seqs 1..last_seq with the right states, the latest loads,
    nothing beyond last_seq is visible; then prune(keep_last=1) leaves a loadable run."""
    rng = random.Random(20261203)
    store = FileFlowPersistence(tmp_path)
    for _ in range(8):
        child = subprocess.Popen(
            [sys.executable, "-c", _SAVE_FOREVER, str(tmp_path), RUN_ID],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.02, 0.3))
        finally:
            child.kill()
            child.wait()
            assert child.stdout is not None
            child.stdout.close()
        run = store.get_run(RUN_ID)
        if run is None:  # killed before its first commit
            assert store.history(RUN_ID) == []
            continue
        history = store.history(RUN_ID)
        assert [c.seq for c in history] == list(range(1, run.last_seq + 1))
        assert all(c.state["n"] == c.seq for c in history)
        assert all(c.state["big"] == f"step {c.seq} " + "y" * 3000 for c in history)
        assert store.load_checkpoint(RUN_ID).seq == run.last_seq  # type: ignore[union-attr]
        assert store.load_checkpoint(RUN_ID, run.last_seq + 1) is None
    run = store.get_run(RUN_ID)
    assert run is not None and run.last_seq > 0
    store.prune(RUN_ID, keep_last=1)
    assert [c.seq for c in store.history(RUN_ID)] == [run.last_seq]
    assert store.load_state(RUN_ID)["n"] == run.last_seq  # type: ignore[index]


async def test_awaitable_claim_is_the_native_one(crashed: FileFlowPersistence) -> None:
    """await aclaim_run runs the backend's own claim (not the base class's composition of
    acquire_lease + loads): it also deletes the orphan file."""
    run, latest = await crashed.aclaim_run(RUN_ID, new_owner(), 30)
    assert (run.last_seq, latest.seq if latest else None) == (2, 2)
    assert "000000000003.json" not in _files(crashed)
