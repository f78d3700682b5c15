"""The file backend after a SIGKILL in the middle of a save: nothing of it is visible, and
resume finishes the run (SPEC 5; issue 9). Kill -9 then immediate resume on the file
backend is test_crash_resume.py's test_kill_then_immediate_resume_takes_the_dead_owners_lease."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import PROC
from flows import backend

STEPS = [f"s{i}" for i in range(1, 7)]

# Kicks SixSteps off on the file backend and dies with SIGKILL while committing the
# checkpoint after s3 (seq 4: kickoff is 1): its file is written, run.json is not.
_DIE_IN_S3_COMMIT = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
import flows
import flowkit.persistence._file as file_backend

real_write_run = file_backend.write_run

def write_run(run_dir, run):
    if run.last_seq == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    real_write_run(run_dir, run)

file_backend.write_run = write_run
store = flows.backend(sys.argv[2])
flows.SixSteps(persistence=store, lease_ttl=30).kickoff(inputs={"id": sys.argv[3]})
"""


@pytest.fixture
def file_spec(tmp_path: Path) -> str:
    return f"file:{tmp_path / 'runs'}"


@pytest.mark.slow
def test_kill_between_checkpoint_file_and_run_json_then_resume(
    proc, file_spec: str, run_id: str
) -> None:  # type: ignore[no-untyped-def]
    """A process killed after writing checkpoint 4's file but before run.json: history,
    load and prune see checkpoints 1-3 only; resume re-runs s3 (its commit never
    happened) and finishes with every step counted once in the state."""
    done = subprocess.run(
        [sys.executable, "-c", _DIE_IN_S3_COMMIT, str(PROC.parent), file_spec, run_id],
        capture_output=True,
        text=True,
        env=proc.env,
        timeout=120,
    )
    assert done.returncode == -9, done.stderr
    store = backend(file_spec)
    assert (store._run_dir(run_id) / "000000000004.json").exists()  # the orphan
    assert [c.seq for c in store.history(run_id)] == [1, 2, 3]
    assert store.load_checkpoint(run_id, 4) is None
    assert store.load_state(run_id)["done"] == ["s1", "s2"]
    assert store.prune(run_id, keep_last=1) == 2
    assert [c.seq for c in store.history(run_id)] == [3]

    proc.env["FLOWKIT_TEST_TTL"] = "30"
    assert proc.run(file_spec, "SixSteps", "resume", run_id) == {"result": 21}
    assert Counter(proc.steps()) == Counter({s: (2 if s == "s3" else 1) for s in STEPS})
    stored = store.load_state(run_id)
    assert stored is not None and (stored["done"], stored["total"]) == (STEPS, 21)
    seqs = [c.seq for c in store.history(run_id)]
    assert seqs == list(range(3, seqs[-1] + 1))
