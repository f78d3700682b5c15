"""flowkit.persistence exposes exactly its public names."""

from __future__ import annotations

import flowkit.persistence


def test_all_is_the_sorted_public_surface() -> None:
    """__all__ is sorted and lists every public name, each importable."""
    expected = {
        "Checkpoint",
        "FileFlowPersistence",
        "FlowPersistence",
        "InMemoryFlowPersistence",
        "RunRecord",
        "RunStatus",
        "SQLAlchemyFlowPersistence",
        "SQLiteFlowPersistence",
        "default_db_path",
    }
    assert flowkit.persistence.__all__ == sorted(expected)
    for name in expected:
        assert getattr(flowkit.persistence, name) is not None
