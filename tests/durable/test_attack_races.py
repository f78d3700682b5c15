"""Attacks by racing processes: several processes answer the same interrupt at the same
moment, or kick off the same new run id at the same moment. Exactly one wins; the others
get a documented FlowkitError; the stored history stays contiguous and nothing committed
runs twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import HERE
from flows import Approval, backend

from flowkit import Interrupted

ATTACK_PROC = HERE / "attack_proc.py"
RACERS = 6


def _race(spec: str, tmp_path: Path, env: dict[str, str], argvs: list[list[str]]) -> list[Any]:
    """Starts one attack_proc.py per argv, releases them together, returns their JSON lines."""
    go = tmp_path / "go"
    procs = []
    for n, argv in enumerate(argvs):
        ready = tmp_path / f"ready-{n}"
        procs.append(
            (
                ready,
                subprocess.Popen(
                    [sys.executable, str(ATTACK_PROC), spec, *argv],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=dict(env, FLOWKIT_ATTACK_READY=str(ready), FLOWKIT_ATTACK_GO=str(go)),
                ),
            )
        )
    try:
        deadline = time.monotonic() + 120
        while not all(r.exists() for r, _ in procs) and time.monotonic() < deadline:
            if any(p.poll() is not None for _, p in procs):
                break
            time.sleep(0.01)
        go.write_text("go")
        outcomes = []
        for _, p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err  # anything but a FlowkitError is a traceback
            outcomes.append(json.loads(out.strip().splitlines()[-1]))
        return outcomes
    finally:
        for _, p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()


def _contiguous(spec: str, run_id: str) -> list[Any]:
    p = backend(spec)
    try:
        history = p.history(run_id)
        assert [c.seq for c in history] == list(range(1, len(history) + 1)), [
            c.seq for c in history
        ]
        assert p.load_checkpoint(run_id) is not None
        return history
    finally:
        p.close()


@pytest.mark.slow
def test_an_interrupt_answered_by_racing_processes_is_applied_once(
    proc, backend_spec: str, run_id: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """6 processes answer the same interrupt at once, each with its own answer: exactly
    one resume returns a result, the others are refused (RunLockedError or ResumeError),
    the interrupted method and the next one run once more in total, and the stored run
    holds the winner's answer with the interrupted method's change applied once."""
    p = backend(backend_spec)
    try:
        paused = Approval(persistence=p).kickoff(inputs={"id": run_id})
    finally:
        p.close()
    assert isinstance(paused, Interrupted)
    before = Counter(proc.steps())
    outcomes = _race(
        backend_spec,
        tmp_path,
        proc.env,
        [["Approval", "resume-value", run_id, json.dumps(f"answer-{n}")] for n in range(RACERS)],
    )
    winners = [o for o in outcomes if "result" in o]
    assert len(winners) == 1, outcomes
    refused = Counter(o.get("error") for o in outcomes if "result" not in o)
    assert set(refused) <= {"RunLockedError", "ResumeError"}, outcomes
    answer = winners[0]["result"].split(":")[0]
    assert winners[0]["result"] == f"{answer}: hello world (1 edit)"
    ran = Counter(proc.steps()) - before
    assert ran == Counter({"review": 1, "publish": 1}), ran
    history = _contiguous(backend_spec, run_id)
    assert history[-1].state["verdict"] == answer
    assert history[-1].state["edits"] == 1
    p = backend(backend_spec)
    try:
        run = p.get_run(run_id)
        assert run is not None and (run.status, run.lease_owner) == ("completed", None)
    finally:
        p.close()


@pytest.mark.slow
def test_racing_kickoffs_of_one_new_id_run_each_lap_once_per_kickoff(
    backend_spec: str, run_id: str, tmp_path: Path
) -> None:
    """6 processes kick off the same new run id at once (a loop of 12 laps). Each
    kickoff either is refused with RunLockedError or runs the flow from the starts on the
    state stored before it; no lap is committed twice by one execution, the history stays
    contiguous, the first winner stores 12 laps and each later one (finding them stored)
    one more lap."""
    effects = tmp_path / "effects.log"
    env = dict(os.environ, FLOWKIT_TEST_EFFECTS=str(effects), FLOWKIT_ATTACK_LAPS="12")
    outcomes = _race(backend_spec, tmp_path, env, [["Laps", "kickoff", run_id]] * RACERS)
    winners = [o for o in outcomes if "result" in o]
    refused = {o.get("error") for o in outcomes if "result" not in o}
    assert winners and refused <= {"RunLockedError"}, outcomes
    history = _contiguous(backend_spec, run_id)
    final = history[-1].state["trail"]
    # A kickoff of an existing id starts again from the starts on the stored state: the
    # first winner stores laps 1..12, every later one finds 12 laps and adds one more.
    assert final == list(range(1, 12 + len(winners))), (len(winners), final)
    lengths = sorted(len(w["result"]) for w in winners)
    assert lengths == list(range(12, 12 + len(winners))), lengths
    laps = Counter((line.split()[1], line.split()[2]) for line in effects.read_text().splitlines())
    twice = {key: n for key, n in laps.items() if n > 1}
    assert twice == {}, f"a process executed these laps twice: {twice}"
