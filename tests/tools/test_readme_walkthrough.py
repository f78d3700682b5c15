"""The README's newcomer path works: run its example flow, then plot the flow and the run,
diff two checkpoints, edit the state with a reason and see the edit in ``history``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _run(cwd: Path, *argv: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "FLOWKIT_DB_URL"}
    done = subprocess.run(
        [sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{argv}: {done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_readme_example_then_plot_diff_edit_history(tmp_path: Path) -> None:
    """The commands of the README's walk-through, on the README's own example."""
    text = README.read_text(encoding="utf-8")
    example = re.search(r"## A flow in 30 lines\n\n```python\n(.*?)```", text, re.S)
    assert example is not None
    (tmp_path / "triage.py").write_text(example.group(1), encoding="utf-8")
    _run(tmp_path, "triage.py")
    cli = ["-m", "flowkit.cli"]
    runs = json.loads(_run(tmp_path, *cli, "runs", "--db", "tickets.db", "--json"))
    run_id = runs[-1]["run_id"]
    _run(tmp_path, *cli, "plot", "triage.py:Triage", "--run", run_id, "-o", "run.html")
    assert "<svg" in (tmp_path / "run.html").read_text(encoding="utf-8")
    diff = _run(tmp_path, *cli, "diff", "--db", "tickets.db", run_id, "1", "4")
    assert 'changed state.category: "" -> "refund"' in diff
    edit = _run(
        tmp_path, *cli, "edit", "triage.py:Triage", run_id,
        "--set", 'reply="Refund sent today."', "--reason", "clearer", "--actor", "newcomer",
    )  # fmt: skip
    assert "records the edit by newcomer (clearer)" in edit
    history = _run(tmp_path, *cli, "history", "--db", "tickets.db", run_id)
    assert "EDIT by newcomer: clearer [state.reply]" in history
