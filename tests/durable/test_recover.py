"""Automatic recovery (SPEC 5): ``Flow.recover()`` and ``flowkit recover`` resume the
runs a killed process left, each once, and leave live and interrupted runs alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from flows import backend
from recover_flows import make_flows

HERE = Path(__file__).resolve().parent  # not from conftest: another dir's may shadow it
SCRIPT = HERE / "recover_proc.py"
#: Longer than any test here: recovery must take dead owners over at once, not wait for
#: their leases to expire.
TTL = 120.0


class Recovery:
    """Runs recover_proc.py subprocesses for one test, under a flow name of its own."""

    def __init__(self, spec: str, tmp_path: Path) -> None:
        self.spec = spec
        self.name = f"recoverable-{uuid.uuid4().hex[:8]}"
        self.log = tmp_path / "steps.log"
        self.ready = Path(str(self.log) + ".ready")
        self.env = dict(
            os.environ,
            FLOWKIT_TEST_LOG=str(self.log),
            FLOWKIT_TEST_TTL=str(TTL),
            FLOWKIT_TEST_FLOW_NAME=self.name,
        )
        self.three, self.asking = make_flows(self.name)

    def popen(self, *args: str, block_at: str | None = None) -> subprocess.Popen[str]:
        env = dict(self.env)
        if block_at:
            env["FLOWKIT_TEST_BLOCK_AT"] = block_at
        return subprocess.Popen(
            [sys.executable, str(SCRIPT), self.spec, self.name, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def run(self, *args: str) -> dict[str, object]:
        child = self.popen(*args)
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def start_blocked(self, n: int) -> subprocess.Popen[str]:
        """Kick off ``n`` runs in one process and wait until each has committed s1 and
        is inside s2."""
        child = self.popen("start", str(n), block_at="s2")
        deadline = time.monotonic() + 60
        while len(self.ready_ids()) < n:
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "runs did not reach s2 in 60 s"
            time.sleep(0.05)
        return child

    def orphans(self, n: int) -> list[str]:
        """``n`` runs whose process was killed with SIGKILL inside s2."""
        child = self.start_blocked(n)
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
        return self.ready_ids()

    def ready_ids(self) -> list[str]:
        return self.ready.read_text().split() if self.ready.exists() else []

    def step_counts(self) -> Counter[str]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return Counter(lines)


@pytest.fixture
def recovery(backend_spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Recovery:
    made = Recovery(backend_spec, tmp_path)
    monkeypatch.setenv("FLOWKIT_TEST_LOG", str(made.log))  # for runs resumed in this process
    return made


def _every_step_once(ids: list[str]) -> Counter[str]:
    return Counter(f"{run_id} {s}" for run_id in ids for s in ("s1", "s2", "s3"))


@pytest.mark.slow
def test_recover_resumes_the_runs_of_a_killed_process(recovery: Recovery) -> None:
    """After SIGKILL, recover() finishes every run; completed methods did not run again."""
    ids = recovery.orphans(3)
    p = backend(recovery.spec)
    try:
        report = recovery.three.recover(p, lease_ttl=TTL)
        assert sorted(report.completed) == sorted(ids)
        assert report.skipped == [] and report.failed == []
        assert all(p.get_run(i).status == "completed" for i in ids)  # type: ignore[union-attr]
    finally:
        p.close()
    assert recovery.step_counts() == _every_step_once(ids)


@pytest.mark.slow
def test_recover_skips_runs_whose_owner_is_alive(recovery: Recovery) -> None:
    """A run executed by a live process is reported as skipped and not run."""
    child = recovery.start_blocked(2)
    try:
        p = backend(recovery.spec)
        try:
            report = recovery.three.recover(p, lease_ttl=TTL)
        finally:
            p.close()
        assert sorted(report.skipped) == sorted(recovery.ready_ids())
        assert report.resumed == []
        assert "alive" in report.runs[0].detail
        # Only the s1 each run committed before blocking in s2; nothing ran again.
        assert recovery.step_counts() == Counter(f"{i} s1" for i in recovery.ready_ids())
    finally:
        child.kill()
        child.communicate(timeout=30)


def test_recover_leaves_interrupted_runs_waiting(recovery: Recovery) -> None:
    """Interrupted runs are not unfinished: recover() does not touch them."""
    flow = recovery.asking
    p = backend(recovery.spec)
    try:
        interrupted = flow(persistence=p).kickoff()
        report = flow.recover(p)
        assert report.runs == ()
        run = p.get_run(interrupted.run_id)
        assert run is not None and run.status == "interrupted"
    finally:
        p.close()


@pytest.mark.slow
def test_concurrent_recoverers_resume_each_run_once(recovery: Recovery) -> None:
    """Three processes recovering at once: each orphan is resumed by exactly one of them,
    and every step of every run ran exactly once."""
    ids = recovery.orphans(6)
    children = [recovery.popen("recover") for _ in range(3)]
    reports = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    resumed = Counter(
        run_id
        for report in reports
        for run_id, (outcome, _detail) in report.items()
        if outcome != "skipped"
    )
    p = backend(recovery.spec)
    try:
        for run_id in ids:
            committed = Counter(cp.method_name for cp in p.history(run_id))
            assert [committed[s] for s in ("s1", "s2", "s3")] == [1, 1, 1], (run_id, committed)
    finally:
        p.close()
    assert resumed == Counter({i: 1 for i in ids}), reports
    assert recovery.step_counts() == _every_step_once(ids)


@pytest.mark.slow
def test_cli_recover_reports_each_flow(tmp_path: Path) -> None:
    """`flowkit recover A B` recovers the orphans of each flow class and prints them."""
    recovery = Recovery(f"sqlite:{tmp_path / 'runs.db'}", tmp_path)
    ids = recovery.orphans(2)
    db = recovery.spec.partition(":")[2]
    env = dict(recovery.env, PYTHONPATH=str(HERE))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowkit.cli",
            "--db",
            db,
            "recover",
            "recover_flows:Three",
            "recover_flows:Asking",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert [d["flow"] for d in data] == [recovery.name, recovery.name + "-asking"]
    assert sorted(r["run_id"] for r in data[0]["runs"]) == sorted(ids)
    assert {r["outcome"] for r in data[0]["runs"]} == {"completed"}
    assert data[1]["runs"] == []
