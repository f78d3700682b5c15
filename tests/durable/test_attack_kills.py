"""Attack: SIGKILL at random moments, not at method boundaries.

A loop of laps (attack_proc.Laps) spends most of its time committing checkpoints, so a
kill at a random moment lands in process start-up, in the kickoff checkpoint, in the
middle of a commit, between a commit and the next lap, or in the final end_run. After
every kill the stored run must be whole (seq contiguous from 1, latest checkpoint
loadable, the trail exactly 1..k), the next process must take the dead owner's lease over
at once (lease_ttl is 30 s, no waiting) and must never execute a lap that was committed
(an fsync'd effect log per attempt). At the end the run holds each lap once.

``FLOWKIT_ATTACK_KILLS`` sets the number of kills per run (default 4; ``nox -s soak-attack``
raises it to 40 and adds the file backend).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import HERE, postgres_up
from flows import backend

ATTACK_PROC = HERE / "attack_proc.py"
LAPS = 40
KILLS = int(os.environ.get("FLOWKIT_ATTACK_KILLS", "4"))


@pytest.fixture(
    params=[
        "sqlite",
        "file",
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        if not postgres_up():
            if os.environ.get("CI"):
                pytest.fail("PostgreSQL at 127.0.0.1:5432 is down; CI must run these tests")
            pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
        return "postgres"
    if request.param == "file":
        return f"file:{tmp_path / 'runs'}"
    return f"sqlite:{tmp_path / 'runs.db'}"


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _inspect(spec: str, run_id: str) -> tuple[str | None, list[int]]:
    """(status, committed trail) of the stored run, after checking it is whole."""
    p = backend(spec)
    try:
        run = p.get_run(run_id)
        if run is None:
            assert p.history(run_id) == []
            return None, []
        history = p.history(run_id)
        seqs = [c.seq for c in history]
        assert seqs == list(range(1, len(seqs) + 1)), f"history of {run_id} has holes: {seqs}"
        assert run.last_seq == seqs[-1], (run.last_seq, seqs)
        latest = p.load_checkpoint(run_id)
        assert latest is not None and latest.seq == seqs[-1]
        trail = list(latest.state["trail"])
        assert trail == list(range(1, len(trail) + 1)), f"trail {trail}"
        for checkpoint in history:  # every stored checkpoint is loadable and consistent
            kept = checkpoint.state["trail"]
            assert kept == list(range(1, len(kept) + 1))
        return run.status, trail
    finally:
        p.close()


def _attempt(spec: str, run_id: str, action: str, effects: Path, rng: random.Random) -> bool:
    """Runs one process on the run and SIGKILLs it at a random moment; True if it was
    killed, False if it finished first."""
    env = dict(os.environ, FLOWKIT_TEST_EFFECTS=str(effects), FLOWKIT_ATTACK_LAPS=str(LAPS))
    child = subprocess.Popen(
        [sys.executable, str(ATTACK_PROC), spec, "Laps", action, run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        if rng.random() < 0.3:
            # anywhere from start-up through the kickoff checkpoint into the first laps
            deadline = time.monotonic() + rng.uniform(0.1, 1.5)
            while time.monotonic() < deadline and child.poll() is None:
                time.sleep(0.005)
        else:
            # in the laps: after this process's first side effect, plus a random delay
            deadline = time.monotonic() + 60
            while not effects.exists() and child.poll() is None:
                assert time.monotonic() < deadline, "the process never started a lap"
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.12))
        killed = child.poll() is None
        if killed:
            os.kill(child.pid, signal.SIGKILL)
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    if not killed:
        assert child.returncode == 0, err
        assert "result" in json.loads(out.strip().splitlines()[-1]), out
    return killed


@pytest.mark.slow
def test_random_sigkills_never_lose_or_repeat_a_committed_lap(
    spec: str, run_id: str, tmp_path: Path
) -> None:
    """Kill processes KILLS times at random moments (one run after another, each resumed
    after every kill until it completes): the stored run is whole after every kill, no
    process executes a committed lap, and each run completes with laps 1..LAPS."""
    rng = random.Random(run_id)
    kills = attempts = runs = 0
    while kills < KILLS:
        runs += 1
        this_run = f"{run_id}-{runs}"
        status, committed = _inspect(spec, this_run)
        tries = 0
        while status != "completed":
            attempts += 1
            tries += 1
            assert tries < 30, "the run does not make progress"
            effects = tmp_path / f"effects-{attempts}.log"
            action = "kickoff" if status is None else "resume"
            if kills < KILLS and tries < 10:
                kills += _attempt(spec, this_run, action, effects, rng)
            else:
                _run_to_end(spec, this_run, action, effects)
            for what in (line.split()[1] for line in _lines(effects)):
                if what.startswith("lap"):
                    n = int(what[3:])
                    assert n > len(committed), (
                        f"attempt {attempts} executed lap {n} of {this_run}, already "
                        f"committed ({committed[-1:]})"
                    )
            status, committed = _inspect(spec, this_run)
            assert status in (None, "running", "completed"), status
        assert committed == list(range(1, LAPS + 1))
    print(f"{spec.split(':')[0]}: {kills} kills in {attempts} attempts over {runs} runs")


def _run_to_end(spec: str, run_id: str, action: str, effects: Path) -> None:
    env = dict(os.environ, FLOWKIT_TEST_EFFECTS=str(effects), FLOWKIT_ATTACK_LAPS=str(LAPS))
    done = subprocess.run(
        [sys.executable, str(ATTACK_PROC), spec, "Laps", action, run_id],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "result": list(range(1, LAPS + 1))
    }, done.stdout
