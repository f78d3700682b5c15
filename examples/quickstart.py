"""A small research-and-review flow, persisted to flowkit's default SQLite file.

Run it:  python examples/quickstart.py

It kicks off a run, shows the checkpoints stored for it, then reloads the same run by
id and runs it again on top of the stored state.
"""

from __future__ import annotations

from flowkit import Flow, FlowState, listen, or_, persist, router, start
from flowkit.persistence import default_db_path


class Research(FlowState):
    topic: str = "durable workflows"
    notes: list[str] = []
    drafts: int = 0
    runs: int = 0


@persist  # a checkpoint after every method, in the default SQLite file
class ResearchFlow(Flow[Research]):
    @start()
    def gather(self) -> list[str]:
        self.state.runs += 1
        self.state.notes.append(f"run {self.state.runs}: notes on {self.state.topic}")
        return self.state.notes

    @listen(or_(gather, "revise"))
    def draft(self) -> str:
        self.state.drafts += 1
        return f"draft {self.state.drafts} about {self.state.topic}"

    @router(draft)
    def review(self, text: str) -> str:
        # A stand-in for an LLM or a human: accept every second draft.
        return "accept" if self.state.drafts % 2 == 0 else "revise"

    @listen("accept")
    def publish(self) -> str:
        return f"published after {self.state.drafts} drafts ({len(self.state.notes)} notes)"


def main() -> None:
    flow = ResearchFlow()
    print(flow.kickoff(inputs={"topic": "crash-proof agents"}))
    run_id = flow.state.id
    backend = flow.persistence
    assert backend is not None
    for cp in backend.history(run_id):
        print(f"  checkpoint {cp.seq}: after {cp.method_name}, drafts={cp.state['drafts']}")

    # Reload the run by id: the stored state comes back and the flow runs again on it.
    again = ResearchFlow()
    print(again.kickoff(inputs={"id": run_id}))
    print(f"run {run_id} stored in {default_db_path()}")
    print(f"inspect it with:  flowkit show {run_id}   (or: flowkit runs, flowkit history {run_id})")


if __name__ == "__main__":
    main()
