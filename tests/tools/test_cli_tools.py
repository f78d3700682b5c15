"""``flowkit plot / diff / edit`` and how resume / fork find a flow's own database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tool_flows import ApprovalFlow, OrderFlow, Research

from flowkit import Interrupted
from flowkit.cli import main
from flowkit.persistence import SQLiteFlowPersistence

HERE = Path(__file__).parent
FLOWS_FILE = HERE / "tool_flows.py"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "tools.db"


@pytest.fixture
def store(db: Path) -> Iterator[SQLiteFlowPersistence]:
    backend = SQLiteFlowPersistence(db)
    yield backend
    backend.close()


@pytest.fixture
def cli(db: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    def run(*args: str) -> tuple[int, str, str]:
        code = main(["--db", str(db), *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def _flowkit(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(HERE))
    env.pop("FLOWKIT_DB_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "flowkit.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_plot_writes_the_html_page(cli: Any, tmp_path: Path) -> None:
    """`flowkit plot MODULE:Class -o FILE` writes the page without touching storage."""
    out = tmp_path / "flow.html"
    code, text, err = cli("plot", "tool_flows:Research", "-o", str(out))
    assert code == 0, err
    assert f"wrote {out}" in text
    assert 'data-id="m:judge"' in out.read_text(encoding="utf-8")


def test_plot_mermaid_of_a_run_goes_to_stdout(cli: Any, store: SQLiteFlowPersistence) -> None:
    """--mermaid --run RUN_ID prints the flowchart with that run's path."""
    flow = OrderFlow(persistence=store)
    with pytest.raises(ValueError):
        flow.kickoff()
    code, text, err = cli("plot", "tool_flows:OrderFlow", "--mermaid", "--run", flow.state.id)
    assert code == 0, err
    assert text.startswith("flowchart TD")
    assert "check (failed)" in text


def test_plot_accepts_a_file_path(cli: Any) -> None:
    """MODULE may be a path to a .py file."""
    code, text, err = cli("plot", f"{FLOWS_FILE}:ApprovalFlow", "--mermaid")
    assert code == 0, err
    assert '"review"' in text


def test_diff_prints_changes_and_json(cli: Any, store: SQLiteFlowPersistence) -> None:
    flow = Research(persistence=store)
    flow.kickoff(inputs={"topic": "owls"})
    rid = flow.state.id
    code, text, err = cli("diff", rid, "1", "4")
    assert code == 0, err
    assert "changed state.rounds: 0 -> 1" in text
    code, text, err = cli("diff", rid, "1", "4", "--json")
    data = json.loads(text)
    assert (data["from_seq"], data["to_seq"]) == (1, 4)
    assert {"kind": "changed", "path": "state.rounds", "old": 0, "new": 1} in data["changes"]


def test_diff_of_a_missing_checkpoint_is_an_error(cli: Any, store: SQLiteFlowPersistence) -> None:
    flow = Research(persistence=store)
    flow.kickoff()
    code, _, err = cli("diff", flow.state.id, "1", "999")
    assert code == 1
    assert "no checkpoint 999" in err


def test_edit_then_history_shows_the_edit(cli: Any, store: SQLiteFlowPersistence) -> None:
    """`flowkit edit` appends the audited checkpoint; `history` marks it as an EDIT."""
    flow = ApprovalFlow(persistence=store)
    assert isinstance(flow.kickoff(), Interrupted)
    rid = flow.state.id
    code, text, err = cli(
        "edit", "tool_flows:ApprovalFlow", rid, "--set", "budget=40", "--set",
        'draft="second draft"', "--reason", "customer asked", "--actor", "bob",
    )  # fmt: skip
    assert code == 0, err
    assert "records the edit by bob (customer asked)" in text
    assert '  changed state.draft: "first draft" -> "second draft"' in text
    code, text, err = cli("history", rid)
    edit_rows = [line for line in text.splitlines() if "<edit>" in line]
    assert len(edit_rows) == 1
    assert "EDIT by bob: customer asked [state.draft, state.budget]" in edit_rows[0]
    code, text, _ = cli("history", rid, "--json")
    assert [cp["edit"]["actor"] for cp in json.loads(text) if cp["edit"]] == ["bob"]


def test_edit_with_an_invalid_value_fails_clearly(cli: Any, store: SQLiteFlowPersistence) -> None:
    flow = ApprovalFlow(persistence=store)
    flow.kickoff()
    code, _, err = cli(
        "edit", "tool_flows:ApprovalFlow", flow.state.id, "--set", "budget=[1]", "--reason", "x"
    )
    assert code == 1
    assert "budget" in err


def test_edit_needs_a_reason(cli: Any) -> None:
    """--reason is required by the parser (usage error, exit 2)."""
    code, _, err = cli("edit", "tool_flows:ApprovalFlow", "r1", "--set", "budget=1")
    assert code == 2
    assert "--reason" in err


def test_completed_show_suggests_a_fork_that_resumes(
    cli: Any, store: SQLiteFlowPersistence
) -> None:
    """The command `show` suggests for a completed run works, and so does resuming it."""
    flow = Research(persistence=store)
    flow.kickoff(inputs={"topic": "owls"})
    code, text, _ = cli("show", flow.state.id, "--json")
    command = json.loads(text)["next"]["command"]
    assert command.startswith("flowkit fork MODULE:Research ")
    seq = command.split()[-1]
    code, text, err = cli("fork", "tool_flows:Research", flow.state.id, seq, "--run-id", "f1")
    assert code == 0, err
    code, text, err = cli("resume", "tool_flows:Research", "f1")
    assert code == 0, err
    assert "3 notes on owls" in text


@pytest.mark.slow
def test_resume_finds_the_flow_s_own_database(tmp_path: Path) -> None:
    """A class with @persist(SQLiteFlowPersistence("own.db")) is resumed from own.db
    without --db, and an unknown run id names that database."""
    started = subprocess.run(
        [
            sys.executable,
            "-c",
            "from tool_flows import OwnDbFlow; f = OwnDbFlow(); f.kickoff(inputs={'id': 'o1'})",
        ],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(HERE)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 0, started.stderr
    assert (tmp_path / "own.db").exists()
    done = _flowkit(tmp_path, "resume", "tool_flows:OwnDbFlow", "o1", "--value", '"yes"')
    assert done.returncode == 0, done.stderr
    assert "run o1 completed" in done.stdout
    missing = _flowkit(tmp_path, "resume", "tool_flows:OwnDbFlow", "nope")
    assert missing.returncode == 1
    assert "no run 'nope' in SQLiteFlowPersistence('own.db')" in missing.stderr
    assert "@persist backend of tool_flows:OwnDbFlow" in missing.stderr


@pytest.mark.slow
def test_a_missing_own_database_is_named(tmp_path: Path) -> None:
    """Before the flow ever ran, the error says which file was looked for."""
    done = _flowkit(tmp_path, "fork", "tool_flows:OwnDbFlow", "o1", "1")
    assert done.returncode == 1
    assert "no flowkit database at SQLiteFlowPersistence('own.db')" in done.stderr
    assert not (tmp_path / "own.db").exists(), "looking must not create the database"
