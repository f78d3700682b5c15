"""Attack: run metadata against a SIGKILL between a kickoff's writes.

A kickoff of an *existing* run id (it runs the flow again on top of the run's state)
stores its kickoff checkpoint with ``begin_run``, which keeps the run's record as it is;
``kickoff(metadata=...)`` merges its labels into that record. If the labels were written
after the kickoff checkpoint, a process killed between the two would leave a restarted run
without them: ``list_runs(metadata=...)`` and ``flowkit runs --where`` would never find
it and a resume would finish it unlabelled. The script below dies (SIGKILL) the moment
anything writes the new label into the run's record; whatever the order of the writes,
the stored run must never hold the kickoff's checkpoint without its labels.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import mysql_up, postgres_up
from flows import MYSQL_URL, PG_URL

from flowkit import Flow, FlowState, start
from flowkit.persistence import FlowPersistence, SQLAlchemyFlowPersistence, SQLiteFlowPersistence

SCRIPT = """
import os
import signal
import sys
import time

from flowkit import Flow, FlowState, listen, start
from flowkit.persistence import SQLAlchemyFlowPersistence, SQLiteFlowPersistence

base = SQLiteFlowPersistence if sys.argv[1] == "sqlite" else SQLAlchemyFlowPersistence


class DiesWhenLabelled(base):
    async def aupdate_run(self, run_id, **changes):
        if "ticket" in str(changes.get("info")):
            os.kill(os.getpid(), signal.SIGKILL)
        return await super().aupdate_run(run_id, **changes)


class Labelled(Flow[FlowState], name="attack-labelled"):
    @start()
    def first(self) -> None:
        pass

    @listen(first)
    def second(self) -> str:
        return "done"


store = DiesWhenLabelled(sys.argv[2])
mode = sys.argv[4]
labels = {"ticket": 7} if mode == "die" else {"user": "u1"} if mode == "live" else {mode: 1}
if len(sys.argv) > 5:  # race: start with the others
    ready, go = sys.argv[5:7]
    open(ready, "w").close()
    while not os.path.exists(go):
        time.sleep(0.005)
flow = Labelled(persistence=store, lease_wait=60)
print(flow.kickoff(inputs={"id": sys.argv[3]}, metadata=labels))
"""


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    up = {"postgres": postgres_up, "mysql": mysql_up}.get(request.param)
    if up is not None and not up():
        if os.environ.get("CI"):
            pytest.fail(f"{request.param} at 127.0.0.1 is down; CI must run these tests")
        pytest.skip(f"{request.param} at 127.0.0.1 is not reachable")
    url = {"postgres": PG_URL, "mysql": MYSQL_URL}.get(request.param, str(tmp_path / "f.db"))
    return str(request.param), url


def _store(kind: str, url: str) -> FlowPersistence:
    return SQLiteFlowPersistence(url) if kind == "sqlite" else SQLAlchemyFlowPersistence(url)


@pytest.mark.slow
def test_a_kill_never_leaves_a_rekicked_run_without_its_labels(
    where: tuple[str, str], run_id: str, tmp_path: Path
) -> None:
    """An existing run (labelled user=u1) is kicked off again with ticket=7 by a process
    SIGKILLed when it writes the label: if the new kickoff's checkpoint is stored, so
    are both labels, and list_runs(metadata={"ticket": 7}) finds the run."""
    kind, url = where
    script = tmp_path / "labelled.py"
    script.write_text(textwrap.dedent(SCRIPT))

    def run(mode: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(script), kind, url, run_id, mode],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ),
        )

    first = run("live")
    assert first.returncode == 0 and first.stdout.strip() == "done", first.stderr
    store = _store(kind, url)
    try:
        before = store.get_run(run_id)
        assert before is not None and before.metadata == {"user": "u1"}
        killed = run("die")
        assert killed.returncode == -9, (killed.stdout, killed.stderr)
        after = store.get_run(run_id)
        assert after is not None
        kicked = [c for c in store.history(run_id) if c.seq > before.last_seq]
        if kicked:  # the killed kickoff's checkpoint is stored: its labels must be too
            assert [c.method_name for c in kicked] == ["kickoff"], kicked
            assert after.metadata == {"user": "u1", "ticket": 7}, after.metadata
            found = store.list_runs(metadata={"ticket": 7})
            assert [r.run_id for r in found] == [run_id]
        else:  # nothing of the kickoff stored: the run is as it was, labels kept
            assert after.metadata.get("user") == "u1", after.metadata
    finally:
        store.close()


def test_new_labels_equal_in_python_but_not_in_json_replace_the_stored_ones(
    where: tuple[str, str], run_id: str
) -> None:
    """Labels ``{"flag": 1, "n": 0}`` then ``resume(metadata={"flag": True, "n": False})``
    and ``kickoff(metadata={"done": 1})`` after ``{"done": True}``: the new values are
    stored (``True == 1`` in Python, but not as JSON labels: a filter on ``flag=true``
    must find the run)."""
    kind, url = where
    store = _store(kind, url)

    class Flaky(Flow[FlowState], name="attack-flaky-labels"):
        fail = True

        @start()
        def only(self) -> None:
            if self.fail:
                raise RuntimeError("first time")

    try:
        with pytest.raises(RuntimeError):
            Flaky(persistence=store).kickoff(
                inputs={"id": run_id}, metadata={"flag": 1, "n": 0, "case": run_id}
            )
        Flaky.fail = False
        Flaky(persistence=store).resume(run_id, metadata={"flag": True, "n": False})
        run = store.get_run(run_id)
        assert run is not None and run.status == "completed"
        assert [type(run.metadata[k]) for k in ("flag", "n")] == [bool, bool], run.metadata
        assert [r.run_id for r in store.list_runs(metadata={"flag": True, "case": run_id})] == [
            run_id
        ]
        Flaky(persistence=store).kickoff(inputs={"id": run_id}, metadata={"flag": 1})
        run = store.get_run(run_id)
        assert run is not None and type(run.metadata["flag"]) is int, run.metadata
        assert [r.run_id for r in store.list_runs(metadata={"flag": 1, "case": run_id})] == [run_id]
    finally:
        store.close()


@pytest.mark.slow
def test_racing_kickoffs_with_different_labels_keep_every_label(
    where: tuple[str, str], run_id: str, tmp_path: Path
) -> None:
    """Four processes kick off the same new run id at the same moment, each with its own
    label (lease_wait: they take turns): each kickoff completes, and the run ends up with
    all four labels -- no kickoff's merge drops a label an earlier one stored."""
    kind, url = where
    script = tmp_path / "labelled.py"
    script.write_text(textwrap.dedent(SCRIPT))
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{n}" for n in range(4)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), kind, url, run_id, f"k{n}", str(ready[n]), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        for n in range(4)
    ]
    try:
        deadline = time.monotonic() + 120
        while not all(r.exists() for r in ready):
            if any(pr.poll() is not None for pr in procs):
                # One racer died before "go": the others wait for it forever, so they are
                # stopped first, then every racer's output is shown.
                for pr in procs:
                    if pr.poll() is None:
                        pr.kill()
                raise AssertionError([pr.communicate(timeout=30) for pr in procs])
            assert time.monotonic() < deadline, "the racers never got ready"
            time.sleep(0.01)
        go.write_text("go")
        outs = [pr.communicate(timeout=120) for pr in procs]
    finally:
        for pr in procs:
            if pr.poll() is None:
                pr.kill()
                pr.communicate()
    for pr, (out, err) in zip(procs, outs, strict=True):
        if pr.returncode != 0 or out.strip() != "done":
            # pytest.fail shows the whole traceback (an assertion message is cut short)
            pytest.fail(f"a racer failed (exit {pr.returncode}, out {out!r}):\n{err}")
    store = _store(kind, url)
    try:
        run = store.get_run(run_id)
        assert run is not None and run.status == "completed"
        assert run.metadata == {f"k{n}": 1 for n in range(4)}, run.metadata
        kickoffs = [c for c in store.history(run_id) if c.method_name == "kickoff"]
        assert len(kickoffs) == 4, kickoffs
    finally:
        store.close()
