"""Fixtures for durable-run tests: real SQLite files, the real PostgreSQL server, and
helpers to run flows in real subprocesses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
PROC = HERE / "proc.py"


def postgres_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def mysql_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 3306), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def mysql_spec() -> str:
    """The MariaDB backend spec, for the tests that run there too (test_mysql_durable)."""
    if not mysql_up():
        if os.environ.get("CI"):
            pytest.fail("MariaDB at 127.0.0.1:3306 is down; CI must run these tests")
        pytest.skip("MariaDB at 127.0.0.1:3306 is not reachable")
    return "mysql"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A backend spec string understood by flows.backend(): each test runs on both."""
    if request.param == "postgres":
        if not postgres_up():
            if os.environ.get("CI"):
                pytest.fail("PostgreSQL at 127.0.0.1:5432 is down; CI must run these tests")
            pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
        return "postgres"
    if os.environ.get("FLOWKIT_TEST_BACKEND") == "memory":  # debugging aid, in-process only
        return f"memory:{tmp_path}"
    return f"sqlite:{tmp_path / 'runs.db'}"


@pytest.fixture
def run_id() -> str:
    return f"test-{uuid.uuid4()}"


class Proc:
    """Runs tests/durable/proc.py in a real subprocess."""

    def __init__(self, tmp_path: Path) -> None:
        self.log = tmp_path / "steps.log"
        self.env = dict(os.environ, FLOWKIT_TEST_LOG=str(self.log))

    def run(self, *args: str, crash_at: str | None = None, expect_killed: bool = False) -> Any:
        env = dict(self.env)
        if crash_at:
            env["FLOWKIT_TEST_CRASH_AT"] = crash_at
        done = subprocess.run(
            [sys.executable, str(PROC), *args], capture_output=True, text=True, env=env, timeout=120
        )
        if expect_killed:
            assert done.returncode == -9, (done.returncode, done.stdout, done.stderr)
            return None
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    def steps(self) -> list[str]:
        return self.log.read_text().split() if self.log.exists() else []


@pytest.fixture
def proc(tmp_path: Path) -> Proc:
    return Proc(tmp_path)
