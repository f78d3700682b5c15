"""What the packaging promises: types visible after an editable install, a license, and
metadata that matches what is tested."""

from __future__ import annotations

import json
import os
import site
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTED_PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


def _editable_install() -> bool:
    # every record of an installed flowkit (a stale flowkit.egg-info of an older install
    # may sit in the source folder too)
    for dist in metadata.distributions(name="flowkit"):
        direct = dist.read_text("direct_url.json")
        if direct and json.loads(direct).get("dir_info", {}).get("editable"):
            return True
    return False


def test_editable_install_is_a_plain_path_that_type_checkers_follow() -> None:
    """`pip install -e .` puts the source folder itself on sys.path through a .pth file
    (mypy and pyright read those), not an import hook that hides the package from them."""
    if not _editable_install():
        pytest.skip("flowkit is not installed in editable mode here")
    lines = []
    for folder in [*site.getsitepackages(), site.getusersitepackages()]:
        for pth in Path(folder).glob("*.pth") if Path(folder).is_dir() else []:
            lines += pth.read_text(encoding="utf-8").splitlines()
    plain = [Path(line) for line in lines if line and not line.startswith(("import", "#"))]
    if not any((p / "flowkit" / "__init__.py").exists() for p in plain):
        message = (
            "the editable install of flowkit is an import hook type checkers cannot follow; "
            "reinstall with: python3 -m pip install -e '.[test]'"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message + " (an install made before the build backend changed)")


def test_package_ships_its_type_marker() -> None:
    assert (ROOT / "flowkit" / "py.typed").exists()


def test_license_file_matches_the_metadata() -> None:
    """LICENSE exists and is the license pyproject.toml declares."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == {"text": "MIT"}
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")


def test_python_classifiers_match_requires_python_and_the_nox_matrix() -> None:
    """The versions users are told about are the versions the nox session tests."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    prefix = "Programming Language :: Python :: 3."
    versions = [
        c.removeprefix("Programming Language :: Python :: ")
        for c in project["classifiers"]
        if c.startswith(prefix)
    ]
    assert versions == TESTED_PYTHONS
    assert project["requires-python"] == f">={TESTED_PYTHONS[0]}"
    noxfile = (ROOT / "noxfile.py").read_text(encoding="utf-8")
    assert f"PYTHONS = {TESTED_PYTHONS!r}".replace("'", '"') in noxfile
    assert sys.version_info >= (3, 10)
