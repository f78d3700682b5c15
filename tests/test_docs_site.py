"""The documentation site builds with ``mkdocs build --strict``: every page in the nav
exists, every internal link resolves, every API reference renders from the docstrings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_site_builds_strict(tmp_path: Path) -> None:
    """A strict build succeeds and produces the pages the nav promises."""
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    for page in ("index.html", "tools/index.html", "cli/index.html", "benchmarks/index.html"):
        assert (site / page).exists(), page
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    assert "update_state" in api, "the API reference is rendered from Flow's docstrings"
    assert "diff_checkpoints" in api
