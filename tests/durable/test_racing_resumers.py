"""Processes racing to resume the same half-finished runs: no committed step runs twice.

Each leg of :class:`flows.Relay` writes a line to an fsync'd effect log as it starts (the
stand-in for an e-mail sent or a payment made). Runs are left half-finished, then four
processes resume all of them, in the same order, started at the same moment. Whatever
interleaving happens, each leg of each run must appear in the log exactly once: a
resumer that loses the race is refused before it executes anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import HERE
from flows import Halted, Relay, backend

RUNS = 100
PROCESSES = 4
LEGS = ["r1", "r2", "r3", "r4"]


def _half_finished_runs(spec: str, prefix: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """RUNS runs that finished r1 (and failed at r2 before its side effect)."""
    monkeypatch.setattr(Relay, "halt_at", "r2")
    p = backend(spec)
    run_ids = [f"{prefix}-{n:03d}" for n in range(RUNS)]
    try:
        for run_id in run_ids:
            with pytest.raises(Halted):
                Relay(persistence=p).kickoff(inputs={"id": run_id})
    finally:
        p.close()
    monkeypatch.setattr(Relay, "halt_at", None)
    return run_ids


@pytest.mark.slow
def test_racing_resumers_never_execute_a_committed_step_twice(
    backend_spec: str, run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4 processes resume the same 100 half-finished runs concurrently: every leg of
    every run is executed exactly once (external fsync'd log), and every run completes
    with each leg stored once."""
    effects = tmp_path / "effects.log"
    monkeypatch.setenv("FLOWKIT_TEST_EFFECTS", str(effects))
    run_ids = _half_finished_runs(backend_spec, run_id, monkeypatch)
    ids_file = tmp_path / "ids"
    ids_file.write_text("\n".join(run_ids))
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{n}" for n in range(PROCESSES)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE / "resumer.py"),
                backend_spec,
                str(ids_file),
                str(ready[n]),
                str(go),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        for n in range(PROCESSES)
    ]
    try:
        deadline = time.monotonic() + 120
        while not all(r.exists() for r in ready) and time.monotonic() < deadline:
            if any(pr.poll() is not None for pr in procs):
                break
            time.sleep(0.01)
        go.write_text("go")
        outcomes = []
        for pr in procs:
            out, err = pr.communicate(timeout=300)
            assert pr.returncode == 0, err
            outcomes.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for pr in procs:
            if pr.poll() is None:
                pr.kill()
                pr.communicate()
    executed = Counter(tuple(line.split()[:2]) for line in effects.read_text().splitlines())
    twice = {key: n for key, n in executed.items() if n != 1}
    assert twice == {}, f"{len(twice)} legs ran more than once: {sorted(twice)[:10]}"
    assert set(executed) == {(r, leg) for r in run_ids for leg in LEGS}
    assert sum(o["resumed"] for o in outcomes) == RUNS
    p = backend(backend_spec)
    try:
        for rid in run_ids:
            run = p.get_run(rid)
            assert run is not None and run.status == "completed", rid
            assert p.load_state(rid)["legs"] == LEGS
    finally:
        p.close()
