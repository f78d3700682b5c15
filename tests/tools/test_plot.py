"""Flow.plot / to_mermaid: the picture of a flow and of the path a stored run took."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tool_flows import ApprovalFlow, OrderFlow, Research

from flowkit import Flow, Interrupted, listen, router, start
from flowkit._plot_model import build_picture, router_returns
from flowkit.persistence import SQLiteFlowPersistence


@pytest.fixture
def store(tmp_path: Path) -> SQLiteFlowPersistence:
    backend = SQLiteFlowPersistence(tmp_path / "plots.db")
    yield backend  # type: ignore[misc]
    backend.close()


def test_html_is_one_offline_file(tmp_path: Path) -> None:
    """The page references nothing outside itself: no URL, no linked file, no src."""
    path = Research().plot(tmp_path / "research")
    assert path == tmp_path / "research.html"
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<svg" in page
    for forbidden in ("http:", "https:", "<link", "@import", "//"):
        assert forbidden not in page, forbidden
    assert not re.search(r"\ssrc=", page), "no element loads a source"


def test_every_method_label_and_join_is_drawn() -> None:
    """Methods, router labels and one node per and_/or_ join appear in the SVG."""
    from flowkit._plot import flow_html

    html = flow_html(Research)
    for method in ("plan", "warm_up", "search", "judge", "refine", "retry", "write"):
        assert f'data-id="m:{method}"' in html
    for label in ("good", "weak", "again"):
        assert f'data-id="l:{label}"' in html
    assert ">AND</text>" in html and ">OR</text>" in html


def test_router_labels_come_from_the_source_literal_and_enum() -> None:
    """A router's visible return values (a literal, an Enum member) are its labels."""
    assert router_returns(Research.judge) == {"good", "weak"}
    assert router_returns(Research.retry) == {"again"}


def test_the_router_loop_is_a_back_edge() -> None:
    """The edge that closes the loop (retry -> again -> or_ -> search) is marked as a loop."""
    picture = build_picture(Research._graph, Research)
    back = [e for e in picture.edges if e.back]
    assert back, "the loop has a back edge"
    assert {e.src for e in back} <= {"l:again", "m:retry", "j:1", "j:2"}


def test_a_label_no_router_visibly_returns_gets_maybe_edges() -> None:
    """When the source does not say which router returns a label, every router may."""

    class Hidden(Flow[dict]):  # type: ignore[type-arg]
        @start()
        def begin(self) -> str:
            return "x"

        @router(begin)
        def pick(self, value: str) -> str:
            return value

        @listen("x")
        def done(self) -> None:
            return None

    picture = build_picture(Hidden._graph, Hidden)
    assert [(e.src, e.dst, e.kind) for e in picture.edges if e.dst == "l:x"] == [
        ("m:pick", "l:x", "maybe")
    ]


def test_mermaid_has_shapes_and_edges() -> None:
    """to_mermaid is a flowchart: stadium starts, hexagon routers, flag labels, joins."""
    text = Research().to_mermaid()
    assert text.startswith("flowchart TD\n")
    assert re.search(r'n\d+\(\["plan"\]\):::start', text)
    assert re.search(r'n\d+\{\{"judge"\}\}:::router', text)
    assert re.search(r'n\d+>"weak"\]:::label', text)
    assert re.search(r'n\d+\(\("AND"\)\):::and', text)
    assert " --> " in text


def test_run_path_counts_each_method(store: SQLiteFlowPersistence) -> None:
    """With a run, each executed method shows how often it ran; the end is marked."""
    flow = Research(persistence=store)
    flow.kickoff(inputs={"topic": "owls"})
    text = Research(persistence=store).to_mermaid(run_id=flow.state.id)
    assert '"search \u00d73"' in text
    assert '"refine \u00d72"' in text
    assert '"write \u00d71 (finished)"' in text
    assert ":::idle" not in text.split("classDef")[0]  # every node of this run was used


def test_run_path_marks_where_an_interrupted_run_waits(
    store: SQLiteFlowPersistence, tmp_path: Path
) -> None:
    """An interrupted run's page names the method that waits for input."""
    flow = ApprovalFlow(persistence=store)
    assert isinstance(flow.kickoff(), Interrupted)
    page = ApprovalFlow(persistence=store).plot(tmp_path / "run.html", run_id=flow.state.id)
    html = page.read_text(encoding="utf-8")
    assert "waits for input" in html
    assert f"Run {flow.state.id} (interrupted)" in html
    assert ">publish</text>" in html


def test_run_path_marks_the_failed_method(store: SQLiteFlowPersistence) -> None:
    """A failed run's picture marks the method that raised."""
    flow = OrderFlow(persistence=store)
    with pytest.raises(ValueError, match="quantity"):
        flow.kickoff()
    text = OrderFlow(persistence=store).to_mermaid(run_id=flow.state.id)
    assert re.search(r'"check \(failed\)"\]:::stop', text)


def test_plotting_a_run_needs_persistence() -> None:
    """run_id without a backend is a clear error, not an empty picture."""
    from flowkit.exceptions import FlowConfigurationError

    with pytest.raises(FlowConfigurationError, match="needs the backend"):
        Research().to_mermaid(run_id="nope")


def test_plotting_an_unknown_run_names_it(store: SQLiteFlowPersistence) -> None:
    from flowkit.exceptions import RunNotFoundError

    with pytest.raises(RunNotFoundError, match="no run 'ghost'"):
        Research(persistence=store).to_mermaid(run_id="ghost")


def test_a_run_of_another_flow_is_refused(store: SQLiteFlowPersistence) -> None:
    """Drawing another flow's run over this graph would mislead: it is an error."""
    from flowkit.exceptions import ResumeError

    flow = ApprovalFlow(persistence=store)
    flow.kickoff()
    with pytest.raises(ResumeError, match="belongs to flow 'ApprovalFlow'"):
        Research(persistence=store).to_mermaid(run_id=flow.state.id)
