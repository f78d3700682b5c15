"""The typed execution position stored with every checkpoint (issue 10)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from flowkit import Flow, FlowState, listen, persist, start
from flowkit._position import PendingInterrupt, Position, PositionSummary, RunInfo
from flowkit.exceptions import CorruptCheckpointError


def _position() -> Position:
    scheduler = {
        "pending": [{"id": 3, "method": "b", "trigger": "a", "payload": {"x": [1, 2]}}],
        "calls": {"a": 1, "b": 1},
        "and": {},
        "or_fired": [],
        "next_id": 4,
    }
    return Position(
        scheduler,
        last=("a", {"x": [1, 2]}),
        answers={3: ["yes"]},
        interrupt=PendingInterrupt("b", 3, {"question": "ok?"}),
    )


def test_position_round_trips_through_json() -> None:
    """to_json then from_json gives back the same position, payloads and answers
    included."""
    position = _position()
    meta = position.to_json(None)
    assert set(meta) == {"position", "interrupt"}
    again = Position.from_json(meta, None, run_id="r", seq=1)
    assert again == position


def test_unstorable_payload_and_output_are_recorded_as_lost() -> None:
    """A pending call's input or the last output that cannot be stored is recorded as
    lost (the call cannot take it on resume) instead of failing the checkpoint."""
    position = _position()
    position.scheduler["pending"][0]["payload"] = object()
    position.last = ("a", object())
    again = Position.from_json(position.to_json(None), None, run_id="r", seq=1)
    assert again is not None
    assert again.lost_payloads == frozenset({3})
    assert again.scheduler["pending"][0]["payload"] is None
    assert again.last == ("a", None)


def test_checkpoint_without_position_reads_as_none() -> None:
    """A checkpoint written by plain save_state has no position: from_json gives None."""
    assert Position.from_json({}, None, run_id="r", seq=1) is None


@pytest.mark.parametrize(
    "meta",
    [
        pytest.param({"position": {"pending": "nope"}}, id="pending-not-a-list"),
        pytest.param({"position": {"answers": {"x": []}, "pending": []}}, id="bad-answer-id"),
        pytest.param({"position": {"pending": []}, "interrupt": {"task_id": 1}}, id="interrupt"),
    ],
)
def test_malformed_position_is_a_corrupt_checkpoint_error(meta: dict[str, Any]) -> None:
    """A stored position that cannot be read is a CorruptCheckpointError naming the run
    and the checkpoint."""
    with pytest.raises(CorruptCheckpointError, match=r"run 'r9' checkpoint 7"):
        Position.from_json(meta, None, run_id="r9", seq=7)


def test_summary_reads_garbage_leniently() -> None:
    """The display summary never raises: malformed parts are left out."""
    summary = PositionSummary.read({"position": {"pending": [1, {"method": "m"}], "calls": 3}})
    assert summary is not None
    assert summary.pending == [{"id": None, "method": "m", "trigger": None}]
    assert summary.calls == {} and summary.interrupt is None


def test_run_info_keeps_unknown_keys() -> None:
    """RunInfo types 'definition' and 'error' and keeps any other stored key as is."""
    info = RunInfo.from_json({"definition": {"a": 1}, "owner_note": "x"})
    info.error = {"method": "m", "type": "KeyError", "message": "k"}
    assert info.to_json() == {
        "definition": {"a": 1},
        "error": {"method": "m", "type": "KeyError", "message": "k"},
        "owner_note": "x",
    }


class Count(FlowState):
    n: int = 0


def test_kickoff_path_stays_short(tmp_path: Path) -> None:
    """A persisted two-step kickoff on SQLite, from Flow.kickoff to its committed
    checkpoints, runs engine code in at most 11 flowkit modules (storage excluded) and
    on the calling thread only (docs/design/kickoff-path.md)."""
    from flowkit.persistence import SQLiteFlowPersistence

    store = SQLiteFlowPersistence(tmp_path / "path.db")

    @persist(store)
    class Two(Flow[Count]):
        @start()
        def a(self) -> None:
            self.state.n += 1

        @listen(a)
        def b(self) -> None:
            self.state.n += 1

    Two().kickoff()  # first use: imports and schema, not the path
    flow = Two()
    modules: set[str] = set()
    threads: set[str] = set()

    def profile(frame: Any, event: str, arg: Any) -> None:
        name = frame.f_globals.get("__name__", "")
        if event == "call" and name.startswith("flowkit"):
            threads.add(threading.current_thread().name)
            if not name.startswith("flowkit.persistence"):
                modules.add(name)

    import sys

    threading.setprofile(profile)
    sys.setprofile(profile)
    try:
        flow.kickoff()
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
        store.close()
    assert len(modules) <= 11, sorted(modules)
    assert threads == {threading.current_thread().name}
