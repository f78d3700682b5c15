"""Attack: retries against SIGKILLs at random moments and racing recoverers.

:class:`retry_proc.Doomed` runs a loop of laps in one branch while ``doomed``, in a
parallel branch, fails every attempt (retried ATTEMPTS times with a short constant wait):
its failed attempts are checkpointed between the laps' checkpoints, and a kill at a random
moment lands in a lap, a commit, a failed attempt's checkpoint or a backoff. The
durability promise, for retries:

- a committed lap is never executed again (fsync'd effect log per process);
- the stored count of failed attempts never goes down while the run is running (a crash
  does not reset it) and the run fails once ATTEMPTS attempts failed, with the error
  saying attempt ATTEMPTS of ATTEMPTS;
- attempts are not retried past the policy: over all processes, ``doomed`` raised at
  least ATTEMPTS and at most ATTEMPTS + (kills) times -- only an attempt cut off by a kill
  before its checkpoint is not counted (docs/durable-runs.md, "The count survives a
  crash");
- a failed attempt's changes are never stored;
- resumed after the cause is fixed, the run ends exactly as an uncrashed run does.

``FLOWKIT_ATTACK_KILLS`` sets the kills per backend (default 2; 40 pass).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import HERE, mysql_up, postgres_up
from flows import backend

RETRY_PROC = HERE / "retry_proc.py"
LAPS = 20
ATTEMPTS = 5
KILLS = int(os.environ.get("FLOWKIT_ATTACK_KILLS", "2"))


@pytest.fixture(
    params=[
        "sqlite",
        # the retry logic is the engine's, the same on every backend; PostgreSQL's
        # leases and liveness have their own attack tests: its run here is a soak variant
        pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.soak]),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    up = {"postgres": postgres_up, "mysql": mysql_up}.get(request.param)
    if up is not None:
        if not up():
            if os.environ.get("CI"):
                pytest.fail(f"{request.param} at 127.0.0.1 is down; CI must run these tests")
            pytest.skip(f"{request.param} at 127.0.0.1 is not reachable")
        return str(request.param)
    return f"sqlite:{tmp_path / 'runs.db'}"


def _env(effects: Path, **extra: str) -> dict[str, str]:
    env = dict(
        os.environ,
        FLOWKIT_TEST_EFFECTS=str(effects),
        FLOWKIT_ATTACK_LAPS=str(LAPS),
        FLOWKIT_ATTACK_LAP_SECONDS="0.01",
        FLOWKIT_RETRY_ATTEMPTS=str(ATTEMPTS),
        FLOWKIT_RETRY_DELAY="0.1",
    )
    env.pop("FLOWKIT_DOOMED", None)
    return {**env, **extra}


def _effects(path: Path, run_id: str) -> list[tuple[str, str]]:
    """(what, pid) per side effect logged for ``run_id`` (recover() also resumes the
    flow's other unfinished runs in a shared database)."""
    if not path.exists():
        return []
    lines = [line.split() for line in path.read_text().splitlines()]
    return [(what, pid) for run, what, pid in lines if run == run_id]


def _inspect(spec: str, run_id: str) -> dict[str, Any]:
    """The stored run, checked whole: status, committed trail, doomed's stored count
    (0 when not being retried) and the error of a failed run."""
    p = backend(spec)
    try:
        run = p.get_run(run_id)
        if run is None:
            assert p.history(run_id) == []
            return {"status": None, "trail": [], "doomed": "", "count": 0, "error": None}
        history = p.history(run_id)
        seqs = [c.seq for c in history]
        assert seqs == list(range(1, len(seqs) + 1)), f"history of {run_id} has holes: {seqs}"
        latest = p.load_checkpoint(run_id)
        assert latest is not None and latest.seq == seqs[-1] == run.last_seq
        for checkpoint in history:
            trail = checkpoint.state["trail"]
            assert trail == list(range(1, len(trail) + 1)), trail
            # a failed attempt's change never reaches storage
            assert checkpoint.state["doomed"] in ("", "ok"), checkpoint
        retries = latest.meta.get("position", {}).get("retries", {})
        counts = [r["count"] for r in retries.values() if r["method"] == "doomed"]
        assert len(counts) <= 1, retries
        return {
            "status": run.status,
            "trail": list(latest.state["trail"]),
            "doomed": latest.state["doomed"],
            "count": counts[0] if counts else 0,
            "error": run.info.get("error"),
        }
    finally:
        p.close()


def _latest(spec: str, run_id: str) -> tuple[int, int]:
    """(doomed's stored count, laps committed) in the latest checkpoint of a live run."""
    p = backend(spec)
    try:
        latest = p.load_checkpoint(run_id)
    finally:
        p.close()
    if latest is None:
        return 0, 0
    retries = latest.meta.get("position", {}).get("retries", {})
    count = sum(r["count"] for r in retries.values())
    return count, len(latest.state["trail"])


def _attempt(
    spec: str, run_id: str, action: str, effects: Path, rng: random.Random | None, **env: str
) -> tuple[bool, dict[str, Any] | None]:
    """One process on the run, SIGKILLed at a random moment after its first side effect
    (or before it), or left to finish without ``rng``; (killed, its JSON answer when it
    finished)."""
    child = subprocess.Popen(
        [sys.executable, str(RETRY_PROC), spec, action, run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(effects, **env),
    )
    try:
        if rng is None:
            pass
        elif rng.random() < 0.2:
            deadline = time.monotonic() + rng.uniform(0.1, 1.0)
            while time.monotonic() < deadline and child.poll() is None:
                time.sleep(0.005)
        else:
            deadline = time.monotonic() + 60
            while not effects.exists() and child.poll() is None:
                assert time.monotonic() < deadline, "the process never started"
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.5))
        killed = rng is not None and child.poll() is None
        if killed:
            os.kill(child.pid, signal.SIGKILL)
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    if killed:
        return True, None
    assert child.returncode == 0, err
    return False, json.loads(out.strip().splitlines()[-1])


def _phase(
    spec: str, run_id: str, tmp_path: Path, rng: random.Random, until: str, kills: int, **env: str
) -> tuple[int, Counter[str], dict[str, Any]]:
    """Kickoff/resume the run, killing up to ``kills`` processes at random moments, until
    its status is ``until``; after every process, check the invariants. Returns (kills
    that landed, what the processes logged, the stored run)."""
    seen = _inspect(spec, run_id)
    landed = tries = 0
    logged: Counter[str] = Counter()
    while seen["status"] != until:
        tries += 1
        assert tries < 40, f"the run makes no progress: {seen}"
        effects = tmp_path / f"effects-{until}-{tries}.log"
        action = "kickoff" if seen["status"] is None else "resume"
        killed, answer = _attempt(
            spec, run_id, action, effects, rng if landed < kills else None, **env
        )
        landed += killed
        done = _effects(effects, run_id)
        logged.update(what for what, _ in done)
        for what in (w for w, _ in done if w.startswith("lap")):
            assert int(what[3:]) > len(seen["trail"]), (
                f"process {tries} executed {what} of {run_id}, already committed "
                f"({seen['trail'][-1:]})"
            )
        if seen["doomed"] == "ok":  # committed: never executed again
            assert not {"doomed-ok", "doomed-fail"} & {w for w, _ in done}, done
        now = _inspect(spec, run_id)
        if seen["status"] == "running" and now["status"] == "running":
            assert now["count"] >= seen["count"], (
                f"a crash lowered doomed's stored count of failed attempts: {seen['count']} "
                f"-> {now['count']}"
            )
        assert now["count"] < ATTEMPTS, now
        if until == "failed":
            # every attempt this process saw fail is counted, except one cut off by the
            # kill between its failure and its checkpoint
            counted = (ATTEMPTS if now["status"] == "failed" else now["count"]) - seen["count"]
            mine = sum(1 for w, _ in done if w == "doomed-fail")
            assert mine - counted in ((0, 1) if killed else (0,)), (
                f"process {tries} (killed: {killed}) saw doomed fail {mine} times; "
                f"the stored count went from {seen['count']} to {now['count']} "
                f"({now['status']})"
            )
        # (None: a kickoff killed before it created the run)
        assert now["status"] in ("running", "failed", "completed") or seen["status"] is None, now
        if answer is not None and "failed" in answer:
            assert now["status"] == "failed", (answer, now)
        seen = now
    return landed, logged, seen


@pytest.mark.slow
def test_random_sigkills_during_retries_never_reset_the_count(
    spec: str, run_id: str, tmp_path: Path
) -> None:
    """Kill processes at random moments while ``doomed`` fails and is retried and the lap
    loop commits beside it: the run fails after exactly ATTEMPTS counted attempts, with
    at most one extra attempt per kill; resumed with the cause fixed (and killed again),
    it completes as an uncrashed run does, each committed lap executed once."""
    rng = random.Random(run_id)
    total = runs = 0
    raised_per_run = []
    while total < KILLS:  # one run after another until KILLS kills landed
        runs += 1
        assert runs <= 10 * max(KILLS, 1), "kills never land"
        kills, raised = _killed_run(spec, f"{run_id}-{runs}", tmp_path / str(runs), rng)
        total += kills
        raised_per_run.append(raised)
    print(f"{spec.split(':')[0]}: {total} kills over {runs} runs; doomed raised {raised_per_run}")


def _killed_run(spec: str, run_id: str, tmp_path: Path, rng: random.Random) -> tuple[int, int]:
    """One run through both phases (failed, then completed with the cause fixed), with
    up to KILLS kills in each; (kills that landed, times doomed raised)."""
    tmp_path.mkdir()
    kills, logged, failed = _phase(spec, run_id, tmp_path, rng, "failed", KILLS)
    error = failed["error"]
    assert error["method"] == "doomed" and error["type"] == "DoomedError", error
    assert (error["attempt"], error["attempts"]) == (ATTEMPTS, ATTEMPTS), error
    assert "DoomedError" in error["traceback"] and "✗ é" in error["message"], error
    raised = logged["doomed-fail"]
    assert ATTEMPTS <= raised <= ATTEMPTS + kills, (
        f"doomed raised {raised} times over {kills} kills; the policy allows {ATTEMPTS} "
        "plus one attempt cut off per kill"
    )
    more, fixed_log, done = _phase(
        spec, run_id, tmp_path, rng, "completed", KILLS, FLOWKIT_DOOMED="pass"
    )
    assert done["trail"] == list(range(1, LAPS + 1)) and done["doomed"] == "ok", done
    assert fixed_log["doomed-fail"] == 0, fixed_log
    assert 1 <= fixed_log["doomed-ok"] <= 1 + more, fixed_log
    assert fixed_log["finish"] <= 1 + more, fixed_log
    p = backend(spec)
    try:
        run = p.get_run(run_id)
        assert run is not None and run.status == "completed"
    finally:
        p.close()
    return kills + more, raised


@pytest.mark.slow
def test_racing_recoverers_of_a_run_in_backoff_count_each_attempt_once(
    spec: str, run_id: str, tmp_path: Path
) -> None:
    """A process is SIGKILLed while ``doomed`` waits out a long backoff (one failed
    attempt stored); four processes then call recover() at the same moment: one resumes
    the run, the others skip it, and ``doomed`` raises exactly ATTEMPTS - 1 more times
    before the run fails with attempt ATTEMPTS of ATTEMPTS."""
    effects = tmp_path / "effects.log"
    first = subprocess.Popen(
        [sys.executable, str(RETRY_PROC), spec, "kickoff", run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(effects, FLOWKIT_RETRY_DELAY="600", FLOWKIT_ATTACK_LAP_SECONDS="0"),
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # the lap loop has finished and doomed's first failure is stored
            assert first.poll() is None, first.communicate()
            seen = _latest(spec, run_id)
            if seen == (1, LAPS):
                break
            assert time.monotonic() < deadline, f"the first attempt never got stored: {seen}"
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)
        first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    before = Counter(what for what, _ in _effects(effects, run_id))
    assert before["doomed-fail"] == 1, before
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{n}" for n in range(4)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(RETRY_PROC), spec, "recover", run_id],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(
                effects,
                FLOWKIT_RETRY_DELAY="0.2",
                FLOWKIT_ATTACK_READY=str(ready[n]),
                FLOWKIT_ATTACK_GO=str(go),
            ),
        )
        for n in range(4)
    ]
    try:
        deadline = time.monotonic() + 120
        while not all(r.exists() for r in ready):
            assert all(pr.poll() is None for pr in procs), [pr.communicate() for pr in procs]
            assert time.monotonic() < deadline, "the recoverers never got ready"
            time.sleep(0.01)
        go.write_text("go")
        outs = [pr.communicate(timeout=120) for pr in procs]
    finally:
        for pr in procs:
            if pr.poll() is None:
                pr.kill()
                pr.communicate()
    outcomes = []
    for pr, (out, err) in zip(procs, outs, strict=True):
        assert pr.returncode == 0, err
        outcomes.append(json.loads(out.strip().splitlines()[-1])["outcomes"].get(run_id))
    assert sorted(o for o in outcomes if o is not None) in (
        ["failed"],
        ["failed", "skipped"],
        ["failed", "skipped", "skipped"],
        ["failed", "skipped", "skipped", "skipped"],
    ), outcomes
    after = Counter(what for what, _ in _effects(effects, run_id))
    assert after["doomed-fail"] - before["doomed-fail"] == ATTEMPTS - 1, (
        outs,
        effects.read_text(),
    )
    assert {w for w in after if w.startswith("lap")} == {f"lap{n}" for n in range(1, LAPS + 1)}
    assert all(after[f"lap{n}"] == 1 for n in range(1, LAPS + 1)), after
    failed = _inspect(spec, run_id)
    assert failed["status"] == "failed", failed
    assert (failed["error"]["attempt"], failed["error"]["attempts"]) == (ATTEMPTS, ATTEMPTS)


@pytest.mark.slow
def test_owner_stopped_in_a_backoff_and_thawed_after_a_takeover_writes_nothing(
    spec: str, run_id: str, tmp_path: Path
) -> None:
    """The owner (lease ttl 2 s) is SIGSTOPped while ``doomed`` waits out a 3 s backoff
    after its first failure; once its lease expired another process resumes the run and
    exhausts the attempts (failed, attempt ATTEMPTS of ATTEMPTS). The old owner, thawed,
    may run one more attempt but stores nothing: the history and the error stay the
    new owner's, and the old owner does not report a result."""
    effects = tmp_path / "effects.log"
    owner = subprocess.Popen(
        [sys.executable, str(RETRY_PROC), spec, "kickoff", run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(effects, FLOWKIT_RETRY_DELAY="3", FLOWKIT_TEST_TTL="2"),
    )
    try:
        deadline = time.monotonic() + 60
        while _latest(spec, run_id) != (1, LAPS):
            assert owner.poll() is None, owner.communicate()
            assert time.monotonic() < deadline, "the first failure never got stored"
            time.sleep(0.02)
        os.kill(owner.pid, signal.SIGSTOP)
        p = backend(spec)
        try:
            deadline = time.monotonic() + 60
            while True:  # the stopped owner's lease expires (nothing renews it)
                run = p.get_run(run_id)
                assert run is not None and run.lease_expires_at is not None
                if run.lease_expires_at.timestamp() < time.time() - 0.2:
                    break
                assert time.monotonic() < deadline, "the stopped owner's lease never expired"
                time.sleep(0.05)
        finally:
            p.close()
        taker = subprocess.run(
            [sys.executable, str(RETRY_PROC), spec, "resume", run_id],
            capture_output=True,
            text=True,
            env=_env(effects, FLOWKIT_RETRY_DELAY="0.01"),
            timeout=120,
        )
        assert taker.returncode == 0, taker.stderr
        assert "failed" in json.loads(taker.stdout.strip().splitlines()[-1]), taker.stdout
        taken = _inspect(spec, run_id)
        p = backend(spec)
        try:
            seqs = [c.seq for c in p.history(run_id)]
        finally:
            p.close()
        assert taken["status"] == "failed", taken
        assert (taken["error"]["attempt"], taken["error"]["attempts"]) == (ATTEMPTS, ATTEMPTS)
        before_thaw = Counter(w for w, _ in _effects(effects, run_id))["doomed-fail"]
        # the owner's failures, then the new owner's; one more if the owner was stopped
        # between an attempt's failure and its checkpoint (not counted, as for a kill)
        assert ATTEMPTS <= before_thaw <= ATTEMPTS + 1, before_thaw
        os.kill(owner.pid, signal.SIGCONT)
        out, err = owner.communicate(timeout=120)
    finally:
        if owner.poll() is None:
            os.kill(owner.pid, signal.SIGCONT)
            owner.kill()
            owner.communicate()
    assert "result" not in json.loads(out.strip().splitlines()[-1]), (out, err)
    after = _inspect(spec, run_id)
    p = backend(spec)
    try:
        assert [c.seq for c in p.history(run_id)] == seqs  # the thawed owner stored nothing
    finally:
        p.close()
    assert after == taken, (after, taken)
    raised = Counter(w for w, _ in _effects(effects, run_id))["doomed-fail"]
    assert raised <= before_thaw + 1, raised  # at most the thawed owner's one extra attempt
