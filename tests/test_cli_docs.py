"""docs/cli.md cannot rot: its reference is the parser's ``--help`` and its example
session is run for real.

If a test here fails after a change to the parser, regenerate the reference with::

    python -m flowkit.cli --markdown-help docs/cli.md

If the example session fails, update the session in docs/cli.md to the new output.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from flowkit.cli import REFERENCE_BEGIN, REFERENCE_END, render_reference

DOC = Path(__file__).parent.parent / "docs" / "cli.md"
REGENERATE = "python -m flowkit.cli --markdown-help docs/cli.md"

# Parts of the output that differ from run to run.
_VOLATILE = [
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ"), "<time>"),
    (re.compile(r"(Fingerprint\s+)[0-9a-f]+"), r"\1<fingerprint>"),
]


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_reference_matches_the_parser() -> None:
    """The generated section of docs/cli.md is exactly the current --help output."""
    _, _, rest = _doc().partition(REFERENCE_BEGIN)
    section, found, _ = rest.partition(REFERENCE_END)
    assert found, f"docs/cli.md lost its reference markers; restore them and run {REGENERATE}"
    assert section.strip() == render_reference().strip(), (
        f"docs/cli.md is out of date with the flowkit parser; run: {REGENERATE}"
    )


def test_reference_covers_every_command() -> None:
    reference = render_reference()
    for command in (
        "runs",
        "show",
        "history",
        "checkpoint",
        "delete",
        "prune",
        "resume",
        "fork",
        "diff",
        "edit",
        "plot",
    ):
        assert f"### `flowkit {command}`" in reference
        assert f"usage: flowkit {command}" in reference


def _normalise(text: str) -> str:
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text


def _session() -> tuple[str, list[tuple[str, str]]]:
    """The example's Python file and its ``$ command`` / output pairs."""
    doc = _doc()
    python = re.search(r"```python\n(.*?)```", doc, re.S)
    console = re.search(r"```console\n(.*?)```", doc, re.S)
    assert python is not None and console is not None
    steps: list[tuple[str, str]] = []
    for line in console.group(1).splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], ""))
        else:
            command, output = steps[-1]
            steps[-1] = (command, output + line + "\n")
    return python.group(1), steps


@pytest.mark.slow
def test_example_session_runs_as_documented(tmp_path: Path) -> None:
    """Every command of the example session prints what docs/cli.md says it prints."""
    source, steps = _session()
    (tmp_path / "reviews.py").write_text(source, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWKIT_")}
    env["FLOWKIT_DATA_DIR"] = str(tmp_path / "data")
    for command, expected in steps:
        argv = shlex.split(command)
        program = {"python": [sys.executable], "flowkit": [sys.executable, "-m", "flowkit.cli"]}
        done = subprocess.run(
            program[argv[0]] + argv[1:],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"$ {command}\n{done.stderr}"
        assert _normalise(done.stdout) == _normalise(expected), f"$ {command}"
