"""Lease owner ids and same-host liveness (real processes, no mocks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from flowkit.persistence._rules import (
    new_owner,
    owner_is_dead,
    parse_owner,
    process_start,
    this_host,
)


def test_own_owner_is_alive() -> None:
    """The current process is never reported dead."""
    owner = new_owner()
    parsed = parse_owner(owner)
    assert parsed is not None and parsed.pid == os.getpid() and parsed.host == this_host()
    assert not owner_is_dead(owner)


def test_owner_of_a_killed_process_is_dead() -> None:
    """An owner whose process was SIGKILLed is dead at once, reaped or not."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from flowkit.persistence._rules import new_owner; "
            "print(new_owner(), flush=True); import time; time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    owner = child.stdout.readline().strip()
    try:
        assert not owner_is_dead(owner)
        os.kill(child.pid, signal.SIGKILL)
        assert _eventually_dead(owner)  # a zombie counts as gone
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert owner_is_dead(owner)


def _eventually_dead(owner: str) -> bool:
    import time

    for _ in range(200):
        if owner_is_dead(owner):
            return True
        time.sleep(0.01)
    return False


def test_recycled_pid_is_not_the_old_owner() -> None:
    """A live pid whose start time differs from the owner's is a different process."""
    start = process_start(os.getpid())
    assert start is not None
    other = "1" if start != "1" else "2"
    assert owner_is_dead(f"{this_host()}:{os.getppid()}:{other}:cafe")


def test_other_hosts_and_foreign_strings_are_never_declared_dead() -> None:
    """Liveness on another host is unknowable here; so is a string flowkit did not make."""
    assert not owner_is_dead("some-other-host:1:1:abcd")
    assert not owner_is_dead("not an owner")
    assert not owner_is_dead(None)
