"""The contract on FileFlowPersistence, and what is specific to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowkit.persistence import FileFlowPersistence, FlowPersistence
from flowkit.testing import PersistenceContract


class TestFileContract(PersistenceContract):
    @pytest.fixture
    def persistence(self, tmp_path: Path) -> FileFlowPersistence:
        return FileFlowPersistence(tmp_path / "runs")

    def corrupt_latest(self, persistence: FlowPersistence, run_id: str) -> None:
        assert isinstance(persistence, FileFlowPersistence)
        run_dir = persistence._run_dir(run_id)
        latest = max(run_dir.glob("0*.json"))
        latest.write_text('{"seq": 2, "state": {"id": ', encoding="utf-8")
