"""Attack: the `flowkit` command line run against a run that another process is
executing: prune and delete while checkpoints are being written. No lost update, no
traceback (only FlowkitError messages, exit 1), and the stored history is never left
in between: contiguous from the first kept checkpoint, the latest loadable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import HERE
from flows import PG_URL, backend

ATTACK_PROC = HERE / "attack_proc.py"
LAPS = 30


def _cli_storage(spec: str) -> list[str]:
    if spec == "postgres":
        return ["--db", PG_URL]
    return ["--db", spec.partition(":")[2]]


def _cli(spec: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = args[0]
    return subprocess.run(
        [sys.executable, "-m", "flowkit.cli", command, *_cli_storage(spec), *args[1:]],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _start(spec: str, run_id: str, effects: Path) -> subprocess.Popen[str]:
    env = dict(
        os.environ,
        FLOWKIT_TEST_EFFECTS=str(effects),
        FLOWKIT_ATTACK_LAPS=str(LAPS),
        FLOWKIT_ATTACK_LAP_SECONDS="0.03",
    )
    child = subprocess.Popen(
        [sys.executable, str(ATTACK_PROC), spec, "Laps", "kickoff", run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 60
    while not effects.exists():
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()
        time.sleep(0.01)
    return child


@pytest.mark.slow
def test_prune_while_a_run_executes_loses_nothing(
    backend_spec: str, run_id: str, tmp_path: Path
) -> None:
    """`flowkit prune --keep-last 1` and `flowkit show` over and over while the run writes
    checkpoints: every command exits 0 (or 1 with a message, never a traceback), the run
    completes with laps 1..LAPS, and what is kept is contiguous up to the latest."""
    child = _start(backend_spec, run_id, tmp_path / "effects.log")
    try:
        rounds = 0
        while child.poll() is None or rounds < 2:
            rounds += 1
            for args in (("prune", "--keep-last", "1", run_id), ("show", run_id)):
                done = _cli(backend_spec, *args)
                assert "Traceback" not in done.stderr, done.stderr
                assert done.returncode in (0, 1), (args, done.returncode, done.stderr)
    finally:
        out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"result": list(range(1, LAPS + 1))}
    p = backend(backend_spec)
    try:
        run = p.get_run(run_id)
        assert run is not None and run.status == "completed"
        seqs = [c.seq for c in p.history(run_id)]
        assert seqs == list(range(seqs[0], run.last_seq + 1)), (seqs, run.last_seq)
        assert p.load_state(run_id)["trail"] == list(range(1, LAPS + 1))
    finally:
        p.close()


@pytest.mark.slow
def test_delete_while_a_run_executes_does_not_resurrect_it(
    backend_spec: str, run_id: str, tmp_path: Path
) -> None:
    """`flowkit delete --yes` while the run writes checkpoints: the executing process
    stops with a FlowkitError naming the run, and the run stays deleted (no half run with
    a history that starts in the middle)."""
    child = _start(backend_spec, run_id, tmp_path / "effects.log")
    try:
        done = _cli(backend_spec, "delete", "--yes", run_id)
        assert done.returncode == 0, done.stderr
    finally:
        out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    outcome = json.loads(out.strip().splitlines()[-1])
    p = backend(backend_spec)
    try:
        run = p.get_run(run_id)
        history = p.history(run_id)
    finally:
        p.close()
    if "result" in outcome:  # the run had finished before the delete: it is gone
        assert run is None and history == []
        return
    assert run_id in outcome["message"], outcome
    assert run is None and history == [], (outcome, run, [c.seq for c in history])
