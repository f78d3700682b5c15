"""Fixtures for the Celery tests: the real broker (RabbitMQ), the real PostgreSQL server
and real ``celery worker`` processes, started and SIGKILLed by the tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _require(port: int, what: str) -> None:
    if _port_open(port):
        return
    message = f"{what} at 127.0.0.1:{port} is down"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must run the Celery tests (.ci/run starts it)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def services() -> None:
    """RabbitMQ and PostgreSQL are up (fails in CI, skips elsewhere, when not)."""
    _require(5672, "RabbitMQ")
    _require(5432, "PostgreSQL")


class Cluster:
    """Celery worker processes on one queue, for one test's flow name."""

    def __init__(self, tmp_path: Path, *, ttl: float, step_seconds: float) -> None:
        self.tmp = tmp_path
        self.queue = f"flowkit-test-{uuid.uuid4().hex[:8]}"
        self.flow_name = f"branchy-{uuid.uuid4().hex[:8]}"
        self.log = tmp_path / "steps.log"
        self.env = dict(
            os.environ,
            FLOWKIT_TEST_QUEUE=self.queue,
            FLOWKIT_TEST_FLOW_NAME=self.flow_name,
            FLOWKIT_TEST_TTL=str(ttl),
            FLOWKIT_TEST_STEP_SECONDS=str(step_seconds),
            FLOWKIT_TEST_LOG=str(self.log),
            PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        )
        from worker_app import make_app

        self.app, self.flows = make_app(self.queue, self.flow_name, ttl)
        self.workers: dict[int, subprocess.Popen[bytes]] = {}
        self.killed_pids: set[int] = set()
        self.starts = 0

    def start(self, slot: int, *args: str) -> None:
        """Start a worker in ``slot`` (replacing a dead one)."""
        self.starts += 1
        out = open(self.tmp / f"worker-{slot}-{self.starts}.log", "wb")  # noqa: SIM115
        self.workers[slot] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker_app",
                "worker",
                "-Q",
                self.queue,
                "-n",
                f"w{slot}-{self.starts}@%h",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "--loglevel=INFO",
                # Not --pool=solo by default: on RabbitMQ a solo worker now and then sits
                # idle for up to 10 s between tasks with messages waiting (bench/README).
                *(args or ("--pool=threads", "--concurrency=1")),
            ],
            cwd=HERE,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: prefork children included
        )
        out.close()

    def start_beat(self, every: float) -> None:
        """Start ``celery beat`` sending the recovery task every ``every`` seconds."""
        self.env["FLOWKIT_TEST_RECOVER_EVERY"] = str(every)
        out = open(self.tmp / "worker-beat.log", "wb")  # noqa: SIM115
        self.workers[-1] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker_app",
                "beat",
                "--schedule",
                str(self.tmp / "beat-schedule"),
                "--loglevel=INFO",
            ],
            cwd=HERE,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()

    def purge(self) -> int:
        """Drop every message waiting in the queue (as if the broker lost them)."""
        with self.app.connection_for_write() as conn:
            return int(conn.default_channel.queue_purge(self.queue) or 0)

    def kill(self, slot: int) -> None:
        """SIGKILL the worker in ``slot`` (and so every run it was executing)."""
        worker = self.workers[slot]
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
        self.killed_pids.add(worker.pid)

    def stop(self) -> None:
        # The test is over: no need for a warm shutdown (which takes seconds per worker).
        for slot, worker in self.workers.items():
            if slot >= 0:  # a worker's group: the worker and any prefork children
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.pid, signal.SIGKILL)
            elif worker.poll() is None:
                worker.kill()
            worker.wait(timeout=30)
        with self.app.connection_for_write() as conn:
            conn.default_channel.queue_delete(self.queue)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("worker-*")))

    def log_lines(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [line.split() for line in self.log.read_text().splitlines()]


@pytest.fixture
def cluster_factory(
    services: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    made: list[Cluster] = []

    def make(*, ttl: float = 30.0, step_seconds: float = 0.0) -> Cluster:
        cluster = Cluster(tmp_path, ttl=ttl, step_seconds=step_seconds)
        monkeypatch.setenv("FLOWKIT_TEST_LOG", str(cluster.log))
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()
