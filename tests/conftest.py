"""Shared fixtures: keep every test away from the user's real data folder."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_data_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWKIT_DATA_DIR", str(tmp_path_factory.mktemp("flowkit-data")))
