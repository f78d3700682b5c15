"""The typed execution position stored with every checkpoint (issue 10)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from flowkit import Flow, FlowState, listen, persist, start
from flowkit._journal import PendingInterrupt, Position, PositionSummary, RunInfo
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


#: engine modules (flowkit.persistence excluded) a persisted kickoff runs code in
#: (docs/design/kickoff-path.md); 11 before the call context, the key lookup and the
#: position/journal folds
ENGINE_PATH_MODULES = 8
#: all flowkit modules on the same path, storage included (SQLite)
ALL_PATH_MODULES = 14


def _kickoff_path(tmp_path: Path) -> tuple[set[str], set[str]]:
    """The flowkit modules that run code, and the threads they run on, while a
    persisted two-step flow is kicked off on SQLite up to its last committed
    checkpoint (imports and schema paid by a first kickoff beforehand)."""
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
    assert flow.state.n == 2
    return modules, threads


def test_kickoff_path_stays_short(tmp_path: Path) -> None:
    """A persisted two-step kickoff on SQLite, from Flow.kickoff to its committed
    checkpoints, runs engine code in at most ENGINE_PATH_MODULES flowkit modules
    (storage excluded) and on the calling thread only (docs/design/kickoff-path.md)."""
    modules, threads = _kickoff_path(tmp_path)
    engine = sorted(m for m in modules if not m.startswith("flowkit.persistence"))
    assert len(engine) <= ENGINE_PATH_MODULES, engine
    assert threads == {threading.current_thread().name}


def test_kickoff_path_with_storage_stays_short(tmp_path: Path) -> None:
    """The same kickoff runs code in at most ALL_PATH_MODULES flowkit modules in all,
    the SQLite storage modules below the backend calls included."""
    modules, _threads = _kickoff_path(tmp_path)
    assert len(modules) <= ALL_PATH_MODULES, sorted(modules)
