"""Attack: slow storage. The owner runs on a real backend whose lease renewals sleep
longer than the lease's ttl (the real store still does every write), so its lease
expires while it executes. Another process, polling, takes the run over and finishes
it. Fencing must refuse the slow owner's next checkpoint: the history stays contiguous,
every lap is stored once, and the slow owner executes at most the one lap it was in when
the run was taken."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from attack_proc import LAPS, Laps
from conftest import HERE
from flows import Halted, Relay, backend

from flowkit.exceptions import RunLockedError

ATTACK_PROC = HERE / "attack_proc.py"


@pytest.mark.slow
def test_an_owner_whose_renewals_lag_is_fenced_after_takeover(
    backend_spec: str, run_id: str, tmp_path: Path
) -> None:
    """Renewals take 2 s against a 0.5 s ttl: the run is taken over mid-flight by a
    polling resumer, the slow owner's next checkpoint is refused with a FlowkitError, and
    the run ends with laps 1..LAPS each stored once."""
    effects = tmp_path / "effects.log"
    slow_spec = "slow-postgres" if backend_spec == "postgres" else f"slow-{backend_spec}"
    env = dict(
        os.environ,
        FLOWKIT_TEST_EFFECTS=str(effects),
        FLOWKIT_ATTACK_LAP_SECONDS="0.1",
        FLOWKIT_ATTACK_SLOW_RENEW="2",
        FLOWKIT_TEST_TTL="0.5",
    )
    slow = subprocess.Popen(
        [sys.executable, str(ATTACK_PROC), slow_spec, "Laps", "kickoff", run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    os.environ["FLOWKIT_TEST_EFFECTS"] = str(effects)
    try:
        deadline = time.monotonic() + 60
        while not effects.exists():
            assert slow.poll() is None and time.monotonic() < deadline, slow.communicate()
            time.sleep(0.01)
        p = backend(backend_spec)
        try:
            while True:
                try:
                    result = Laps(persistence=p, lease_ttl=30).resume(run_id)
                    break
                except RunLockedError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            history = p.history(run_id)
        finally:
            p.close()
    finally:
        del os.environ["FLOWKIT_TEST_EFFECTS"]
        out, err = slow.communicate(timeout=120)
    assert slow.returncode == 0, err
    refused = json.loads(out.strip().splitlines()[-1])
    assert refused.get("error") in ("LeaseLostError", "RunLockedError"), refused
    assert run_id in refused["message"]
    assert result == list(range(1, LAPS + 1))
    assert [c.seq for c in history] == list(range(1, len(history) + 1))
    stored = [c.state["trail"] for c in history if c.method_name == "lap"]
    assert [t[-1] for t in stored] == list(range(1, LAPS + 1))
    ran = Counter(line.split()[1] for line in effects.read_text().splitlines())
    twice = sorted(lap for lap, n in ran.items() if n > 1)
    assert len(twice) <= 1, f"laps executed by both owners: {twice}"


@pytest.mark.slow
def test_a_claim_answered_after_its_lease_expired_executes_nothing_committed(
    backend_spec: str, run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resumer's claim commits, but the answer reaches it 1.5 s later (ttl 0.5 s); in
    the meantime another process claims the expired lease and finishes the run. The slow
    resumer must not execute a leg the other process committed: every leg runs once, and
    the slow resumer gets LeaseLostError naming the run. (Broke before: the slow resumer
    executed r2 again from its stale claim; its checkpoint was then refused.)"""
    effects = tmp_path / "effects.log"
    monkeypatch.setenv("FLOWKIT_TEST_EFFECTS", str(effects))
    monkeypatch.setattr(Relay, "halt_at", "r2")
    p = backend(backend_spec)
    try:
        with pytest.raises(Halted):
            Relay(persistence=p).kickoff(inputs={"id": run_id})
        monkeypatch.setattr(Relay, "halt_at", None)
        slow_spec = "slow-postgres" if backend_spec == "postgres" else f"slow-{backend_spec}"
        env = dict(os.environ, FLOWKIT_ATTACK_SLOW_CLAIM="1.5", FLOWKIT_TEST_TTL="0.5")
        slow = subprocess.Popen(
            [sys.executable, str(ATTACK_PROC), slow_spec, "Relay", "resume", run_id],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            deadline = time.monotonic() + 60
            while (p.get_run(run_id).lease_owner or "").split(":")[1:2] != [str(slow.pid)]:
                assert slow.poll() is None and time.monotonic() < deadline, slow.communicate()
                time.sleep(0.01)
            while True:
                try:
                    result = Relay(persistence=p, lease_ttl=30).resume(run_id)
                    break
                except RunLockedError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
        finally:
            out, err = slow.communicate(timeout=120)
    finally:
        p.close()
    assert slow.returncode == 0, err
    refused = json.loads(out.strip().splitlines()[-1])
    assert refused.get("error") == "LeaseLostError" and run_id in refused["message"], refused
    assert result == ["r1", "r2", "r3", "r4"]
    ran = Counter(line.split()[1] for line in effects.read_text().splitlines())
    assert ran == Counter({"r1": 1, "r2": 1, "r3": 1, "r4": 1}), (ran, out)


@pytest.mark.slow
def test_a_kickoff_answered_after_its_lease_expired_executes_nothing(
    backend_spec: str, run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kickoff's first write (run, lease, kickoff checkpoint) commits, but the answer
    reaches it 1.5 s later (ttl 0.5 s); meanwhile another process kicks off the same id
    and finishes it. The slow kickoff gets LeaseLostError and executes nothing."""
    effects = tmp_path / "effects.log"
    monkeypatch.setenv("FLOWKIT_TEST_EFFECTS", str(effects))
    slow_spec = "slow-postgres" if backend_spec == "postgres" else f"slow-{backend_spec}"
    env = dict(os.environ, FLOWKIT_ATTACK_SLOW_CLAIM="1.5", FLOWKIT_TEST_TTL="0.5")
    slow = subprocess.Popen(
        [sys.executable, str(ATTACK_PROC), slow_spec, "Relay", "kickoff", run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    p = backend(backend_spec)
    try:
        deadline = time.monotonic() + 60
        while p.get_run(run_id) is None:
            assert slow.poll() is None and time.monotonic() < deadline, slow.communicate()
            time.sleep(0.01)
        while True:
            try:
                result = Relay(persistence=p, lease_ttl=30).kickoff(inputs={"id": run_id})
                break
            except RunLockedError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        p.close()
        out, err = slow.communicate(timeout=120)
    assert slow.returncode == 0, err
    refused = json.loads(out.strip().splitlines()[-1])
    assert refused.get("error") == "LeaseLostError" and run_id in refused["message"], refused
    assert result == ["r1", "r2", "r3", "r4"]
    ran = Counter(line.split()[1] for line in effects.read_text().splitlines())
    assert ran == Counter({"r1": 1, "r2": 1, "r3": 1, "r4": 1}), (ran, out)
