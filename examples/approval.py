"""Human approval across processes: the run pauses for a reviewer and is resumed later
by a different process.

    python examples/approval.py start                # prints the run id, exits
    python examples/approval.py approve RUN_ID yes   # another process, any time later
    python examples/approval.py                      # does both, in two processes

The run is stored in ./approval-runs.db (SQLite).
"""

from __future__ import annotations

import subprocess
import sys

from flowkit import Flow, FlowState, Interrupted, listen, persist, router, start
from flowkit.persistence import SQLiteFlowPersistence

DB = "approval-runs.db"


class Post(FlowState):
    title: str = "flowkit 0.1 released"
    body: str = ""
    decision: str = ""


@persist(SQLiteFlowPersistence(DB))
class PublishFlow(Flow[Post]):
    @start()
    def write(self) -> str:
        self.state.body = f"{self.state.title}: runs now survive crashes."
        return self.state.body

    @router(write)
    def ask_editor(self, body: str) -> str:
        # Pauses the run. On resume this method runs again from its starting state,
        # and interrupt() returns the editor's answer instead of pausing.
        answer = self.interrupt({"question": "Publish this post?", "body": body})
        self.state.decision = str(answer)
        return "publish" if answer == "yes" else "shelve"

    @listen("publish")
    def publish(self) -> str:
        return f"PUBLISHED: {self.state.body}"

    @listen("shelve")
    def shelve(self) -> str:
        return f"shelved ({self.state.decision!r})"


def start_run() -> str:
    result = PublishFlow().kickoff()
    assert isinstance(result, Interrupted)
    print(f"run {result.run_id} waits in {result.method_name}: {result.payload['question']}")
    return result.run_id


def approve(run_id: str, answer: str) -> None:
    print(PublishFlow().resume(run_id, answer))


def main(argv: list[str]) -> None:
    if argv[:1] == ["start"]:
        print(start_run())
    elif argv[:1] == ["approve"]:
        approve(argv[1], argv[2])
    else:
        started = subprocess.run(
            [sys.executable, __file__, "start"], capture_output=True, text=True, check=True
        )
        print(started.stdout.strip().splitlines()[0])
        run_id = started.stdout.strip().splitlines()[-1]
        subprocess.run([sys.executable, __file__, "approve", run_id, "yes"], check=True)


if __name__ == "__main__":
    main(sys.argv[1:])
