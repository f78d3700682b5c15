"""A research pipeline with a router loop, drawn as a picture.

Run it:  python examples/research_pipeline.py

A planner and a source warm-up start together (joined with and_), a search step gathers
findings, a reviewer sends the work back to refine until there is enough, then a writer
finishes. The script runs it once, then writes two offline HTML pages next to where it
runs -- the flow, and the flow with the path this run took -- and prints the Mermaid
version of the run's path.
"""

from __future__ import annotations

from flowkit import Flow, FlowState, and_, listen, or_, persist, router, start


class Research(FlowState):
    topic: str = "durable agents"
    sources: list[str] = []
    findings: list[str] = []
    summary: str = ""


@persist  # the default SQLite file ($FLOWKIT_DATA_DIR or the per-user data folder)
class ResearchPipeline(Flow[Research]):
    @start()
    def plan(self) -> str:
        return f"questions about {self.state.topic}"

    @start()
    def load_sources(self) -> None:
        self.state.sources = ["paper A", "blog B", "talk C"]

    @listen(or_(and_(plan, load_sources), "refine"))
    def search(self) -> int:
        source = self.state.sources[len(self.state.findings) % len(self.state.sources)]
        self.state.findings.append(f"finding from {source}")
        return len(self.state.findings)

    @router(search)
    def review(self, found: int) -> str:
        # A stand-in for an LLM judge: three findings are enough.
        return "enough" if found >= 3 else "refine"

    @listen("enough")
    def write(self) -> str:
        self.state.summary = f"{len(self.state.findings)} findings on {self.state.topic}"
        return self.state.summary


def main() -> None:
    flow = ResearchPipeline()
    print(flow.kickoff())
    run_id = flow.state.id
    graph = ResearchPipeline().plot("research_pipeline.html")
    run = ResearchPipeline().plot("research_pipeline_run.html", run_id=run_id)
    print(f"wrote {graph} (the flow) and {run} (the path run {run_id} took)")
    print(ResearchPipeline().to_mermaid(run_id=run_id))


if __name__ == "__main__":
    main()
