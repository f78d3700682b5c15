"""Docs that run: every ```python block in README.md and docs/*.md, and every example."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks() -> list[object]:
    params = []
    for path in DOCS:
        for i, match in enumerate(BLOCK.finditer(path.read_text())):
            line = path.read_text()[: match.start()].count("\n") + 1
            params.append(pytest.param(path, match.group(1), id=f"{path.name}:{line}:{i}"))
    return params


@pytest.mark.parametrize(("path", "code"), _blocks())
def test_doc_block_runs(
    path: Path, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each Python block in the docs executes without error (files land in a temp dir)."""
    monkeypatch.chdir(tmp_path)
    # Run as a script would be: blocks that say "save this as x.py and run it" guard their
    # demo with `if __name__ == "__main__":`, so that importing the file does not run it.
    namespace: dict[str, object] = {"__name__": "__main__"}
    flowkit_logger = logging.getLogger("flowkit")
    level = flowkit_logger.level
    try:
        exec(compile(code, f"{path.name}", "exec"), namespace)
    finally:  # a block that configures logging must not change it for the next tests
        flowkit_logger.setLevel(level)


@pytest.mark.slow
@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.py")), ids=lambda p: p.name)
def test_example_runs(example: Path, tmp_path: Path) -> None:
    """Every example file runs to completion as a script."""
    env = dict(os.environ)
    if example.name == "many_machines.py":
        # its PostgreSQL store is the tests' database, not the server's default one
        env["FLOWKIT_DB_URL"] = os.environ.get(
            "FLOWKIT_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        )
    done = subprocess.run(
        [sys.executable, str(example)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), "an example should show what it did"
