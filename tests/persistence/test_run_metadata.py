"""Run metadata through the public API: ``kickoff(metadata=...)`` / ``resume(metadata=...)``
store it with the run, merged; ``RunRecord.metadata`` reads it; ``list_runs(metadata=...)``
finds runs by it on every backend; bad metadata is refused before anything is stored."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowkit import Flow, FlowState, listen, start
from flowkit.exceptions import (
    FlowConfigurationError,
    InvalidArgumentError,
    UnsupportedOperationError,
)
from flowkit.persistence import (
    FileFlowPersistence,
    FlowPersistence,
    InMemoryFlowPersistence,
    SQLAlchemyFlowPersistence,
    SQLiteFlowPersistence,
    _sql_ops,
)


class Ticket(FlowState):
    steps: list[str] = []
    answer: str = ""


class Triage(Flow[Ticket]):
    fail_at: str | None = None

    @start()
    def look(self) -> str:
        self.state.steps.append("look")
        return "looked"

    @listen(look)
    def decide(self, _: str) -> str:
        if self.fail_at == "decide":
            raise RuntimeError("cannot decide")
        self.state.steps.append("decide")
        return "decided"


class AskFirst(Flow[Ticket]):
    @start()
    def ask(self) -> str:
        self.state.answer = self.interrupt({"question": "go?"})
        return self.state.answer


@pytest.fixture(params=["memory", "file", "sqlite", "postgres", "mysql"])
def persistence(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FlowPersistence]:
    """Every built-in backend (PostgreSQL and MariaDB through their servers)."""
    store: FlowPersistence
    if request.param == "memory":
        store = InMemoryFlowPersistence()
    elif request.param == "file":
        store = FileFlowPersistence(tmp_path / "runs")
    elif request.param == "sqlite":
        store = SQLiteFlowPersistence(tmp_path / "runs.db")
    else:
        store = SQLAlchemyFlowPersistence(request.getfixturevalue(f"{request.param}_url"))
    yield store
    store.close()


def _id() -> str:
    return f"meta-{uuid.uuid4().hex}"


def test_kickoff_metadata_round_trips_and_filters(persistence: FlowPersistence) -> None:
    """Metadata given to kickoff reads back from the run record and finds the run with
    list_runs(metadata=...), alone or with other keys, while other runs are not found."""
    user = f"user-{uuid.uuid4().hex[:8]}"
    mine, other = _id(), _id()
    Triage(persistence=persistence).kickoff(
        inputs={"id": mine}, metadata={"user": user, "ticket": 42, "tags": ["a", "b"]}
    )
    Triage(persistence=persistence).kickoff(
        inputs={"id": other}, metadata={"user": user + "-x", "ticket": 42}
    )
    run = persistence.get_run(mine)
    assert run is not None and run.status == "completed"
    assert run.metadata == {"user": user, "ticket": 42, "tags": ["a", "b"]}
    assert run.info["metadata"] == run.metadata  # stored in the record's info

    def found(**wanted: Any) -> list[str]:
        return [r.run_id for r in persistence.list_runs(metadata=wanted, limit=1000)]

    assert found(user=user) == [mine]
    assert found(user=user, ticket=42.0) == [mine]
    assert found(user=user, ticket=43) == []
    assert found(user=user, tags=["a", "b"]) == [mine]
    assert found(user=user + "-x") == [other]


def test_later_kickoffs_and_resumes_merge_metadata(persistence: FlowPersistence) -> None:
    """A later kickoff of the same run, and a resume, merge their metadata into the
    stored one: new keys are added, a key given again takes the new value, the others
    stay."""
    run_id = _id()
    flow = AskFirst(persistence=persistence)
    flow.kickoff(inputs={"id": run_id}, metadata={"user": "u1", "ticket": 1})
    assert persistence.get_run(run_id).metadata == {"user": "u1", "ticket": 1}
    AskFirst(persistence=persistence).resume(
        run_id, "yes", metadata={"ticket": 2, "approver": "boss"}
    )
    run = persistence.get_run(run_id)
    assert run.status == "completed"
    assert run.metadata == {"user": "u1", "ticket": 2, "approver": "boss"}
    assert persistence.load_state(run_id)["answer"] == "yes"
    AskFirst(persistence=persistence).kickoff(inputs={"id": run_id}, metadata={"again": True})
    assert persistence.get_run(run_id).metadata == {
        "user": "u1",
        "ticket": 2,
        "approver": "boss",
        "again": True,
    }


def test_a_fork_keeps_the_parents_metadata_and_merges_its_own(
    persistence: FlowPersistence,
) -> None:
    """A fork carries its parent's metadata (found by the same filter), with the fork's
    own metadata merged over it; the parent's record is unchanged; the fork resumes."""
    user = f"user-{uuid.uuid4().hex[:8]}"
    parent = _id()
    AskFirst(persistence=persistence).kickoff(
        inputs={"id": parent}, metadata={"user": user, "ticket": 1}
    )
    waiting = persistence.get_run(parent).last_seq  # the interrupted checkpoint
    plain = AskFirst(persistence=persistence).fork(parent, waiting)
    labelled = AskFirst(persistence=persistence).fork(
        parent, waiting, metadata={"ticket": 2, "why": "what-if"}
    )
    assert persistence.get_run(plain).metadata == {"user": user, "ticket": 1}
    assert persistence.get_run(labelled).metadata == {
        "user": user,
        "ticket": 2,
        "why": "what-if",
    }
    assert persistence.get_run(parent).metadata == {"user": user, "ticket": 1}
    found = {r.run_id for r in persistence.list_runs(metadata={"user": user}, limit=1000)}
    assert found == {parent, plain, labelled}
    AskFirst(persistence=persistence).resume(labelled, "yes")
    run = persistence.get_run(labelled)
    assert run.status == "completed" and run.metadata["why"] == "what-if"


def test_bad_fork_metadata_is_refused_before_anything_is_stored(tmp_path: Path) -> None:
    """fork(metadata=) with a value that is not JSON is refused, naming the key, and no
    run is created."""
    store = SQLiteFlowPersistence(tmp_path / "runs.db")
    try:
        parent = _id()
        AskFirst(persistence=store).kickoff(inputs={"id": parent})
        with pytest.raises(FlowConfigurationError, match=r"fork\(metadata=\.\.\.\)\['when'\]"):
            AskFirst(persistence=store).fork(parent, 1, metadata={"when": object()})
        assert [r.run_id for r in store.list_runs()] == [parent]
    finally:
        store.close()


async def test_async_kickoff_and_resume_take_metadata(tmp_path: Path) -> None:
    """akickoff / kickoff_async / resume_async store and merge metadata like the sync
    forms."""
    store = SQLiteFlowPersistence(tmp_path / "runs.db")
    try:
        run_id = _id()
        await AskFirst(persistence=store).akickoff(inputs={"id": run_id}, metadata={"a": 1})
        await AskFirst(persistence=store).resume_async(run_id, "no", metadata={"b": 2})
        assert (await store.aget_run(run_id)).metadata == {"a": 1, "b": 2}
        other = _id()
        await Triage(persistence=store).kickoff_async(inputs={"id": other}, metadata={"c": 3})
        assert [r.run_id for r in await store.alist_runs(metadata={"c": 3})] == [other]
    finally:
        await store.aclose()


def test_a_failed_run_keeps_its_metadata(tmp_path: Path) -> None:
    """When a method fails, the run's error is recorded and its metadata stays."""
    store = SQLiteFlowPersistence(tmp_path / "runs.db")
    run_id = _id()
    flow = Triage(persistence=store)
    flow.fail_at = "decide"
    with pytest.raises(RuntimeError, match="cannot decide"):
        flow.kickoff(inputs={"id": run_id}, metadata={"user": "u9"})
    run = store.get_run(run_id)
    assert run is not None and run.status == "failed"
    assert run.metadata == {"user": "u9"}
    assert run.info["error"]["method"] == "decide"
    store.close()


@pytest.mark.parametrize(
    ("metadata", "error", "match"),
    [
        pytest.param("user=u1", FlowConfigurationError, "must be a dict", id="not-a-dict"),
        pytest.param({1: "x"}, FlowConfigurationError, "keys must be strings", id="int-key"),
        pytest.param({"when": {1, 2}}, FlowConfigurationError, r"\['when'\] is a set", id="set"),
        pytest.param(
            {"deep": {"list": [1, object()]}},
            FlowConfigurationError,
            r"\['deep'\]\['list'\]\[1\] is a object",
            id="nested-object",
        ),
        pytest.param({"score": float("nan")}, InvalidArgumentError, "'score'", id="nan"),
        pytest.param({"blob": "x" * 70_000}, InvalidArgumentError, "65536", id="too-big"),
    ],
)
def test_bad_metadata_is_refused_before_anything_is_stored(
    tmp_path: Path, metadata: Any, error: type[Exception], match: str
) -> None:
    """Metadata that is not a dict of JSON values (or is over 64 KiB of JSON) is refused
    with an error naming the key; no run is created."""
    store = SQLiteFlowPersistence(tmp_path / "runs.db")
    run_id = _id()
    with pytest.raises(error, match=match):
        Triage(persistence=store).kickoff(inputs={"id": run_id}, metadata=metadata)
    with pytest.raises(error, match=match):
        Triage(persistence=store).resume(run_id, metadata=metadata)
    assert store.get_run(run_id) is None
    store.close()


def test_metadata_needs_persistence_that_keeps_runs() -> None:
    """Without persistence, or with a backend that keeps no run records, metadata is
    refused with what to do (nothing runs)."""

    class Minimal(FlowPersistence):
        def __init__(self) -> None:
            self.saved: list[str] = []

        def save_state(self, flow_uuid: str, method_name: str, state_data: dict) -> None:  # type: ignore[type-arg]
            self.saved.append(method_name)

        def load_state(self, flow_uuid: str) -> None:
            return None

    with pytest.raises(FlowConfigurationError, match="needs persistence"):
        Triage().kickoff(metadata={"user": "u1"})
    minimal = Minimal()
    with pytest.raises(UnsupportedOperationError, match="Minimal"):
        Triage(persistence=minimal).kickoff(metadata={"user": "u1"})
    assert minimal.saved == []


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mysql"])
def test_sql_metadata_filter_reads_in_batches_exactly(
    kind: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With batches of two rows (instead of 100 to 1000), a filtered listing still pages
    by matching runs across many batches; values holding LIKE's wildcards and escape
    character match only themselves."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}"
    if kind != "sqlite":
        url = request.getfixturevalue(f"{kind}_url")
    store = SQLAlchemyFlowPersistence(url)
    monkeypatch.setattr(_sql_ops, "LIST_BATCH", (2, 2))
    flow_name = f"Batches{uuid.uuid4().hex[:8]}"
    try:
        matching = []
        for n in range(15):
            run_id = _id()
            deal = "50%_off!" if n % 4 == 0 else ("50x_off!" if n % 4 == 1 else "other")
            store.create_run(run_id, flow_name, info={"metadata": {"deal": deal, "n": n}})
            if deal == "50%_off!":
                matching.append(run_id)
        newest_first = list(reversed(matching))

        def page(limit: int, offset: int, **wanted: Any) -> list[str]:
            runs = store.list_runs(flow_name=flow_name, metadata=wanted, limit=limit, offset=offset)
            return [r.run_id for r in runs]

        assert page(50, 0, deal="50%_off!") == newest_first
        assert page(2, 1, deal="50%_off!") == newest_first[1:3]
        assert page(50, 3, deal="50%_off!") == newest_first[3:]
        assert len(page(50, 0, deal="50x_off!")) == 4
        assert page(50, 0, deal="50%") == []
        assert page(50, 0, deal="50%_off!", n=14) == []  # run 14 has "other"
        assert page(50, 0, deal="50%_off!", n=12.0) == [newest_first[0]]
    finally:
        store.close()
