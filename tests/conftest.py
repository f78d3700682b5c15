"""Shared fixtures: keep every test away from the user's real data folder."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``soak`` (long attack variants) run only with FLOWKIT_SOAK set."""
    if os.environ.get("FLOWKIT_SOAK"):
        return
    skip = pytest.mark.skip(reason="soak test: run with FLOWKIT_SOAK=1 (nox -s soak-attack)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_data_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWKIT_DATA_DIR", str(tmp_path_factory.mktemp("flowkit-data")))
