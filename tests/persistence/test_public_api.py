"""flowkit.persistence exposes exactly its public names."""

from __future__ import annotations

import pytest

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


def test_checkpoint_record_is_frozen_and_compares_by_value() -> None:
    """Checkpoint is an immutable value: equal fields compare equal, whether the state
    was given or parsed on first access, and assigning a field raises."""
    import dataclasses
    from datetime import datetime, timezone

    from flowkit.persistence import Checkpoint

    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    calls = []

    def parse() -> tuple[dict[str, object], dict[str, object]]:
        calls.append(1)
        return {"n": 1}, {"m": 2}

    eager = Checkpoint("r", 1, "a", {"n": 1}, at, {"m": 2})
    lazy = Checkpoint.deferred("r", 1, "a", at, parse)
    assert calls == []
    assert lazy == eager and lazy.state == {"n": 1} and lazy.meta == {"m": 2}
    assert calls == [1]  # parsed once
    assert repr(lazy) == repr(eager) and "state={'n': 1}" in repr(eager)
    assert Checkpoint("r", 1, "a", {"n": 2}, at) != eager
    assert Checkpoint("r", 1, "a", {"n": 1}, at).meta == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        eager.seq = 2  # type: ignore[misc]
