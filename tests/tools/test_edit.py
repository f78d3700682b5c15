"""Flow.update_state: an audited, validated edit appended as a checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tool_flows import ApprovalFlow, CrashFlow, OrderFlow

from flowkit import Interrupted
from flowkit.exceptions import FlowUsageError, RunLockedError, StateValidationError
from flowkit.persistence import (
    FileFlowPersistence,
    FlowPersistence,
    SQLAlchemyFlowPersistence,
    SQLiteFlowPersistence,
)
from flowkit.persistence._rules import new_owner


@pytest.fixture(params=["sqlite", "file", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FlowPersistence]:
    backend: FlowPersistence
    if request.param == "sqlite":
        backend = SQLiteFlowPersistence(tmp_path / "e.db")
    elif request.param == "file":
        backend = FileFlowPersistence(tmp_path / "runs")
    else:
        backend = SQLAlchemyFlowPersistence(request.getfixturevalue("postgres_url"))
    yield backend
    backend.close()


def _paused(store: FlowPersistence) -> str:
    flow = ApprovalFlow(persistence=store)
    assert isinstance(flow.kickoff(), Interrupted)
    return flow.state.id


def test_edit_appends_a_checkpoint_with_the_audit_record(store: FlowPersistence) -> None:
    """The edit is a new checkpoint named <edit> carrying actor, reason and the diff."""
    run_id = _paused(store)
    before = store.load_checkpoint(run_id)
    assert before is not None
    cp = ApprovalFlow(persistence=store).update_state(
        run_id, {"budget": 50}, reason="approved by finance", actor="alice"
    )
    assert (cp.seq, cp.method_name) == (before.seq + 1, "<edit>")
    assert cp.state["budget"] == 50
    record = cp.meta["edit"]
    assert (record["actor"], record["reason"], record["base_seq"]) == (
        "alice",
        "approved by finance",
        before.seq,
    )
    assert record["changes"] == [
        {"kind": "changed", "path": "state.budget", "old": "0", "new": "50"}
    ]
    assert store.load_checkpoint(run_id, before.seq) == before, "nothing changed in place"


def test_edit_keeps_the_position_so_the_run_resumes(store: FlowPersistence) -> None:
    """The execution position is copied: resume answers the same interrupt and sees
    the edited state."""
    run_id = _paused(store)
    before = store.load_checkpoint(run_id)
    assert before is not None
    cp = ApprovalFlow(persistence=store).update_state(run_id, {"budget": 7}, reason="r")
    assert cp.meta["position"] == before.meta["position"]
    assert cp.meta["interrupt"] == before.meta["interrupt"]
    assert store.get_run(run_id).status == "interrupted"  # type: ignore[union-attr]
    result = ApprovalFlow(persistence=store).resume(run_id, "yes")
    assert result == "published 'first draft' with budget 7"


def test_edit_of_a_failed_run_then_resume_finishes_it(store: FlowPersistence) -> None:
    """Fix the bad value that made a method fail; resume runs that method again."""
    flow = OrderFlow(persistence=store)
    with pytest.raises(ValueError, match="quantity must be positive"):
        flow.kickoff(inputs={"address": {"city": "Lyon"}})
    run_id = flow.state.id
    OrderFlow(persistence=store).update_state(run_id, {"quantity": 2}, reason="typo in order")
    assert OrderFlow(persistence=store).resume(run_id) == "shipped 2 to Lyon"


def test_dotted_paths_edit_nested_values(store: FlowPersistence) -> None:
    flow = OrderFlow(persistence=store)
    with pytest.raises(ValueError):
        flow.kickoff(inputs={"address": {"city": "Lyon"}})
    cp = OrderFlow(persistence=store).update_state(
        flow.state.id, {"address.city": "Paris"}, reason="moved"
    )
    assert cp.state["address"] == {"city": "Paris"}
    assert cp.meta["edit"]["changes"][0]["path"] == "state.address.city"


def test_a_value_the_model_rejects_is_refused_and_nothing_stored(store: FlowPersistence) -> None:
    """Validation by the state model names the field; the run is unchanged."""
    run_id = _paused(store)
    last = store.get_run(run_id).last_seq  # type: ignore[union-attr]
    with pytest.raises(StateValidationError, match="budget"):
        ApprovalFlow(persistence=store).update_state(run_id, {"budget": "lots"}, reason="r")
    assert store.get_run(run_id).last_seq == last  # type: ignore[union-attr]


def test_an_unknown_field_is_refused(store: FlowPersistence) -> None:
    run_id = _paused(store)
    with pytest.raises(StateValidationError, match="'colour' is not a field of Approval"):
        ApprovalFlow(persistence=store).update_state(run_id, {"colour": "red"}, reason="r")


def test_the_run_id_cannot_be_edited(store: FlowPersistence) -> None:
    run_id = _paused(store)
    with pytest.raises(StateValidationError, match=r"state\.id"):
        ApprovalFlow(persistence=store).update_state(run_id, {"id": "other"}, reason="r")


def test_a_reason_is_required(store: FlowPersistence) -> None:
    run_id = _paused(store)
    with pytest.raises(FlowUsageError, match="needs a reason"):
        ApprovalFlow(persistence=store).update_state(run_id, {"budget": 1}, reason=" ")


def test_an_edit_that_changes_nothing_stores_nothing(store: FlowPersistence) -> None:
    run_id = _paused(store)
    with pytest.raises(FlowUsageError, match="nothing to change"):
        ApprovalFlow(persistence=store).update_state(run_id, {"budget": 0}, reason="r")


def test_a_run_held_by_a_live_owner_is_refused(store: FlowPersistence) -> None:
    """A run being executed (its lease held by a live process) cannot be edited."""
    run_id = _paused(store)
    holder = new_owner()  # this process: alive
    store.acquire_lease(run_id, holder, 60.0)
    last = store.get_run(run_id).last_seq  # type: ignore[union-attr]
    with pytest.raises(RunLockedError, match="while it is being executed"):
        ApprovalFlow(persistence=store).update_state(run_id, {"budget": 1}, reason="r")
    assert store.get_run(run_id).last_seq == last  # type: ignore[union-attr]
    store.release_lease(run_id, holder)


def test_the_edit_gives_its_lease_back(store: FlowPersistence) -> None:
    """After an edit nobody holds the run: it can be resumed at once."""
    run_id = _paused(store)
    ApprovalFlow(persistence=store).update_state(run_id, {"budget": 3}, reason="r")
    assert store.get_run(run_id).lease_owner is None  # type: ignore[union-attr]


@pytest.mark.slow
def test_a_crashed_run_can_be_edited_at_once_and_resumed(tmp_path: Path) -> None:
    """A process killed mid-run leaves its lease behind; its owner is dead (same host),
    so the edit takes the lease at once -- no waiting for the expiry -- and the run then
    resumes with the edited state."""
    db = tmp_path / "crash.db"
    script = (
        "import sys; from tool_flows import CrashFlow; "
        "from flowkit.persistence import SQLiteFlowPersistence; "
        "CrashFlow(persistence=SQLiteFlowPersistence(sys.argv[1]), lease_ttl=600)"
        ".kickoff(inputs={'id': 'c1'})"
    )
    crashed = subprocess.run(
        [sys.executable, "-c", script, str(db)],
        env={**os.environ, "FLOWKIT_TEST_CRASH": "1", "PYTHONPATH": str(Path(__file__).parent)},
        timeout=120,
    )
    assert crashed.returncode == 3
    with SQLiteFlowPersistence(db) as store:
        run = store.get_run("c1")
        assert run is not None and run.lease_owner is not None  # left behind, 10 min to go
        CrashFlow(persistence=store).update_state("c1", {"note": "checked"}, reason="ops")
        assert CrashFlow(persistence=store).resume("c1") == (
            "['first', 'second', 'third'] (checked)"
        )
