"""``os.fork()`` after a backend was used (a pre-forking server, a worker pool): the child
gets its own connections and threads, never the parent's, and neither process breaks the
other -- on SQLite and on the real PostgreSQL server. Real forks, in a subprocess so the
test runner itself never forks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork")

SCRIPT = """
import json, os, sys, time, uuid
from flowkit import Flow, FlowState, listen, start
from flowkit.persistence import SQLAlchemyFlowPersistence, SQLiteFlowPersistence

url, tag = sys.argv[1], uuid.uuid4().hex[:8]
store = SQLAlchemyFlowPersistence(url) if "://" in url else SQLiteFlowPersistence(url)


class S(FlowState):
    n: int = 0


class Two(Flow[S], name="two-steps"):
    @start()
    def one(self) -> None:
        self.state.n += 1

    @listen(one)
    def two(self) -> int:
        self.state.n += 1
        return self.state.n


def work(who: str) -> list[int]:
    rid = f"{who}-{tag}"
    a = Two(persistence=store).kickoff(inputs={"id": rid})
    store.save_checkpoint(rid + "-raw", "m", {"n": 1}, expected_seq=0)
    b = store.load_checkpoint(rid + "-raw").seq
    c = store.get_run(rid).status == "completed"
    return [a, b, int(c)]


out = {"before": work("parent-before")}
pid = os.fork()
if pid == 0:
    import faulthandler
    faulthandler.dump_traceback_later(30, exit=True)
    result = work("child")
    with open(sys.argv[2], "w") as fh:
        json.dump(result, fh)
    store.close()
    sys.exit(0)  # a normal exit: the interpreter finalizes in the child
deadline = time.monotonic() + 40
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    if time.monotonic() > deadline:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        status = -1
        break
    time.sleep(0.05)
out["child_status"] = status
out["child"] = json.load(open(sys.argv[2])) if os.path.exists(sys.argv[2]) else None
out["after"] = work("parent-after")
store.close()
print(json.dumps(out))
"""


def _run(url: str, tmp_path: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, url, str(tmp_path / "child.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _check(out: dict[str, object]) -> None:
    assert out["child_status"] == 0, out  # the child neither hung nor failed
    assert out["before"] == out["child"] == out["after"] == [2, 1, 1], out


def test_fork_after_sqlite_use(tmp_path: Path) -> None:
    _check(_run(str(tmp_path / "runs.db"), tmp_path))


@pytest.mark.postgres
def test_fork_after_postgresql_use(tmp_path: Path, postgres_url: str) -> None:
    _check(_run(postgres_url, tmp_path))
