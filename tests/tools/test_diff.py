"""flowkit.diff: field-level changes between two states or two stored checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
from tool_flows import Research

from flowkit.diff import Change, diff_checkpoints, diff_states
from flowkit.exceptions import RunNotFoundError
from flowkit.persistence import SQLiteFlowPersistence


def test_nested_paths_name_the_innermost_value() -> None:
    """A change deep inside lists and dicts is reported at its full path."""
    old = {"items": [{"title": "a"}, {"title": "b"}]}
    new = {"items": [{"title": "a"}, {"title": "B"}]}
    assert diff_states(old, new) == [Change("changed", "state.items[1].title", "b", "B")]


def test_added_and_removed_fields_and_items() -> None:
    """New keys and list items are added, missing ones removed."""
    old = {"a": 1, "tags": ["x"]}
    new = {"tags": ["x", "y"], "b": 2}
    assert [str(c) for c in diff_states(old, new)] == [
        "removed state.a: 1",
        'added state.tags[1]: "y"',
        "added state.b: 2",
    ]


def test_keys_that_are_not_identifiers_are_quoted() -> None:
    assert diff_states({"a b": 1}, {"a b": 2})[0].path == 'state["a b"]'


def test_a_type_change_is_a_change() -> None:
    """1 and 1.0 / True are different stored values."""
    assert diff_states({"n": 1}, {"n": True}) == [Change("changed", "state.n", 1, True)]


def test_long_values_are_abbreviated_in_text_but_whole_in_json() -> None:
    change = diff_states({"t": "x" * 500}, {"t": "y"})[0]
    assert len(str(change)) < 120 and "\u2026" in str(change)
    assert change.to_json()["old"] == "x" * 500


def test_equal_states_have_no_changes() -> None:
    assert diff_states({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]}) == []


def test_diff_checkpoints_reads_two_stored_checkpoints(tmp_path: Path) -> None:
    """Checkpoint 1 (kickoff) against the last one of a real run."""
    with SQLiteFlowPersistence(tmp_path / "d.db") as store:
        flow = Research(persistence=store)
        flow.kickoff(inputs={"topic": "owls"})
        last = store.get_run(flow.state.id).last_seq  # type: ignore[union-attr]
        changes = {c.path: c for c in diff_checkpoints(store, flow.state.id, 1, last)}
    assert changes["state.rounds"] == Change("changed", "state.rounds", 0, 3)
    assert changes["state.notes[2]"] == Change(
        "added", "state.notes[2]", new={"title": "finding 3"}
    )
    assert changes["state.summary"].new == "3 notes on owls"


def test_a_missing_checkpoint_is_named(tmp_path: Path) -> None:
    with SQLiteFlowPersistence(tmp_path / "d.db") as store:
        flow = Research(persistence=store)
        flow.kickoff()
        with pytest.raises(RunNotFoundError, match="no checkpoint 99"):
            diff_checkpoints(store, flow.state.id, 1, 99)
