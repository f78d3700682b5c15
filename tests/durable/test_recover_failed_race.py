"""Recovery never re-runs a run that failed after recovery listed it (SPEC 5).

A recoverer reads a run as ``running``; before it claims the run, another recoverer
resumes it and the resumed method raises, so the run is stored as ``failed``. The first
recoverer must leave it failed -- resuming it would execute the failing method again
behind its user's back. The interleaving is made deterministic by a store whose first
``aget_run`` lets the other recoverer run to the failure before answering with what it
read (a real SQLite file, a real killed process for the orphan).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

from flowkit.persistence import SQLiteFlowPersistence

FLOW_MODULE = """
import os
import signal
import sys
from pathlib import Path

from flowkit import Flow, FlowState, listen, start

LOG = Path(os.environ["RACE_LOG"])


class Steps(FlowState):
    done: list[str] = []


class Fragile(Flow[Steps]):
    name = os.environ["RACE_FLOW_NAME"]

    @start()
    def first(self) -> None:
        self.state.done.append("first")

    @listen(first)
    def second(self) -> None:
        with LOG.open("a") as log:
            log.write(f"second {os.getpid()}\\n")
        if os.environ.get("RACE_DIE"):
            os.kill(os.getpid(), signal.SIGKILL)  # the orphan: killed inside `second`
        raise RuntimeError("second fails")


if __name__ == "__main__":
    from flowkit.persistence import SQLiteFlowPersistence

    flow = Fragile(persistence=SQLiteFlowPersistence(sys.argv[1]), lease_ttl=300)
    flow.kickoff()
"""


def test_a_run_failed_between_listing_and_claim_is_left_failed(
    tmp_path: Path, monkeypatch: Any
) -> None:
    db = str(tmp_path / "flows.db")
    log = tmp_path / "second.log"
    module = tmp_path / "race_flows.py"
    module.write_text(textwrap.dedent(FLOW_MODULE))
    name = f"fragile-{uuid.uuid4().hex[:8]}"
    env = {"RACE_LOG": str(log), "RACE_FLOW_NAME": name}
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    # The orphan: a process killed (SIGKILL) inside `second`, its lease still held.
    killed = subprocess.run(
        [sys.executable, str(module), db],
        env={**os.environ, **env, "RACE_DIE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert killed.returncode == -9, killed.stderr
    assert len(log.read_text().splitlines()) == 1

    monkeypatch.syspath_prepend(str(tmp_path))
    import race_flows

    class OtherRecovererFirst(SQLiteFlowPersistence):
        """Answers the first ``aget_run`` with what it read *before* another recoverer
        resumed the run to its failure."""

        interleaved = False

        async def aget_run(self, run_id: str) -> Any:
            seen = await super().aget_run(run_id)
            if not self.interleaved and seen is not None and seen.status == "running":
                self.interleaved = True
                other = await race_flows.Fragile.arecover(SQLiteFlowPersistence(db))
                assert other.failed == [run_id]
            return seen

    store = OtherRecovererFirst(db)
    report = race_flows.Fragile.recover(store)

    (entry,) = report.runs
    assert entry.outcome == "skipped", entry
    assert "failed" in entry.detail
    # `second` ran in the killed process and once in the other recoverer, never a third time
    assert len(log.read_text().splitlines()) == 2
    reader = SQLiteFlowPersistence(db)
    run = reader.get_run(entry.run_id)
    assert run is not None and run.status == "failed"
    for opened in (reader, store):
        opened.close()
