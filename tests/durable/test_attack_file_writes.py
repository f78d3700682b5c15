"""Attack: SIGKILL at every step of the file backend's write sequence.

A child process saves checkpoint 3 of a run (with a new big field, so a blob is written
too) and kills itself with SIGKILL just before its k-th file-system call (fsync, rename,
replace, unlink, link, mkdir), for every k the save makes. The real backend does the
work; only the moment of death is chosen. After each kill the run must read as it was
before the save or as it is after it, never in between: history contiguous and equal to
``last_seq``, the latest checkpoint loadable with its whole big field, and the next save
with the compare-and-set it implies succeeds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from flowkit.persistence import FileFlowPersistence

CHILD = r"""
import os, signal, sys
from flowkit.persistence import FileFlowPersistence

directory, run_id, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = FileFlowPersistence(directory)
calls = 0


def deadly(name):
    real = getattr(os, name)

    def call(*args, **kwargs):
        global calls
        calls += 1
        if calls == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    setattr(os, name, call)


for name in ("fsync", "rename", "replace", "unlink", "link", "mkdir"):
    deadly(name)
store.save_checkpoint(run_id, "three", {"id": run_id, "n": 3, "big": "3" * 5000}, expected_seq=2)
print(calls)
"""


def _prepared(directory: Path, run_id: str) -> None:
    store = FileFlowPersistence(directory)
    for n in (1, 2):
        state = {"id": run_id, "n": n, "big": str(n) * 5000}
        store.save_checkpoint(run_id, f"m{n}", state, expected_seq=n - 1)


def _save(directory: Path, run_id: str, kill_at: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(directory), run_id, str(kill_at)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_kill_at_any_step_of_a_file_save_leaves_the_run_before_or_after_it(
    tmp_path: Path,
) -> None:
    """For every file-system call of one save, a SIGKILL just before it leaves the run
    readable as before the save or after it, and the run accepts its next save."""
    done = _save_clean(tmp_path)
    steps = int(done.stdout.strip())
    assert steps >= 2, steps
    for kill_at in range(1, steps + 1):
        directory = tmp_path / f"kill-{kill_at}"
        _prepared(directory, "r")
        killed = _save(directory, "r", kill_at)
        assert killed.returncode == -9, (kill_at, killed.returncode, killed.stderr)
        store = FileFlowPersistence(directory)
        run = store.get_run("r")
        assert run is not None
        seqs = [c.seq for c in store.history("r")]
        where = f"killed before file-system call {kill_at} of {steps}"
        assert seqs in ([1, 2], [1, 2, 3]), (where, seqs)
        assert run.last_seq == seqs[-1], (where, run.last_seq, seqs)
        latest = store.load_checkpoint("r")
        assert latest is not None and latest.seq == seqs[-1], where
        n = latest.state["n"]
        assert latest.state == {"id": "r", "n": n, "big": str(n) * 5000}, where
        nxt = store.save_checkpoint("r", "next", {"id": "r", "n": 9}, expected_seq=run.last_seq)
        assert [c.seq for c in store.history("r")] == [*seqs, nxt.seq], where


def _save_clean(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    directory = tmp_path / "clean"
    _prepared(directory, "r")
    done = _save(directory, "r", 10**9)
    assert done.returncode == 0, done.stderr
    return done
