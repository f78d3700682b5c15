"""A new run's metadata is stored by the write that creates the run (SPEC 5).

If it took a second write, a process killed between the two would leave a run that
``list_runs(metadata=...)`` and ``flowkit runs --where`` never find, resumed by recovery
without its labels. The script below dies (SIGKILL) the moment anything updates a run
record after its creation; a kickoff of a new run with metadata must not need that.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from flowkit.persistence import SQLiteFlowPersistence

SCRIPT = """
import os
import signal
import sys

from flowkit import Flow, FlowState, listen, start
from flowkit.persistence import SQLiteFlowPersistence


class DiesOnRecordUpdate(SQLiteFlowPersistence):
    async def aupdate_run(self, run_id, **changes):
        if "info" in changes:
            os.kill(os.getpid(), signal.SIGKILL)
        return await super().aupdate_run(run_id, **changes)


class Labelled(Flow[FlowState]):
    @start()
    def first(self) -> None:
        pass

    @listen(first)
    def second(self) -> str:
        return "done"


flow = Labelled(persistence=DiesOnRecordUpdate(sys.argv[1]))
print(flow.kickoff(inputs={"id": sys.argv[2]}, metadata={"user": "u123", "ticket": 42}))
"""


def test_a_new_runs_metadata_needs_no_second_write(tmp_path: Path) -> None:
    script = tmp_path / "labelled.py"
    script.write_text(textwrap.dedent(SCRIPT))
    db = str(tmp_path / "flows.db")
    done = subprocess.run(
        [sys.executable, str(script), db, "labelled-1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert done.returncode == 0, f"killed at a run-record update ({done.returncode})"
    assert done.stdout.strip() == "done"
    store = SQLiteFlowPersistence(db)
    try:
        run = store.get_run("labelled-1")
        assert run is not None and run.metadata == {"user": "u123", "ticket": 42}
        assert [r.run_id for r in store.list_runs(metadata={"user": "u123"})] == ["labelled-1"]
    finally:
        store.close()
