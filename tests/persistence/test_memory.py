"""The contract on InMemoryFlowPersistence, and what is specific to it."""

from __future__ import annotations

import pytest

from flowkit.persistence import FlowPersistence, InMemoryFlowPersistence
from flowkit.testing import PersistenceContract


class TestInMemoryContract(PersistenceContract):
    @pytest.fixture
    def persistence(self) -> InMemoryFlowPersistence:
        return InMemoryFlowPersistence()

    def corrupt_latest(self, persistence: FlowPersistence, run_id: str) -> None:
        assert isinstance(persistence, InMemoryFlowPersistence)
        checkpoints = persistence._store.checkpoints[run_id]
        latest = max(checkpoints)
        checkpoints[latest] = checkpoints[latest].__class__(
            checkpoints[latest].method_name, '{"id": ', "{}", 0.0, frozenset()
        )
