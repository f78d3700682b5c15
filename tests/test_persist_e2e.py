"""@persist end to end, through the public API, on every built-in backend (SPEC 3-4)."""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import enum
import json
import logging
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from flowkit import Flow, FlowState, listen, persist, start
from flowkit.exceptions import (
    CorruptCheckpointError,
    FlowConfigurationError,
    UnserializableStateError,
    UnsupportedOperationError,
)
from flowkit.persistence import FlowPersistence, InMemoryFlowPersistence

PG_URL = os.environ.get(
    "FLOWKIT_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def _postgres_up() -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(
    params=[
        "memory",
        "file",
        "sqlite",
        "sqlite-memory",
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Every built-in backend."""
    import flowkit.persistence as fp

    kind = request.param
    if kind == "postgres" and not _postgres_up():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL at 127.0.0.1:5432 is down; CI must run these tests")
        pytest.skip("PostgreSQL is not reachable")
    backend: FlowPersistence = {
        "memory": lambda: fp.InMemoryFlowPersistence(),
        "file": lambda: fp.FileFlowPersistence(tmp_path / "runs"),
        "sqlite": lambda: fp.SQLiteFlowPersistence(tmp_path / "runs.db"),
        "sqlite-memory": lambda: fp.SQLiteFlowPersistence(":memory:"),
        "postgres": lambda: fp.SQLAlchemyFlowPersistence(PG_URL),
    }[kind]()
    yield backend
    backend.close()


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Inner(BaseModel):
    when: dt.datetime
    tags: set[str]


class Rich(FlowState):
    aware: dt.datetime = dt.datetime(
        2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))
    )
    naive: dt.datetime = dt.datetime(2026, 1, 2, 3, 4, 5)
    day: dt.date = dt.date(2026, 11, 22)
    token: uuid.UUID = uuid.UUID("12345678-1234-5678-1234-567812345678")
    price: decimal.Decimal = decimal.Decimal("10.10")
    color: Color = Color.GREEN
    uniq: set[int] = {3, 1, 2}
    pair: tuple[int, str] = (1, "a")
    raw: bytes = b"\xff\x00hello"
    by_id: dict[int, str] = {1: "one"}
    inner: Inner = Inner(when=dt.datetime(2025, 5, 5, tzinfo=dt.timezone.utc), tags={"x"})
    steps: int = 0


class Counter(FlowState):
    count: int = 0
    items: list[Any] = []


def test_class_level_persist_saves_every_method_and_reloads_by_id(store: Any) -> None:
    """@persist(p) on the class: a checkpoint after every method; kickoff(id) reloads the
    latest state, applies other inputs on top, and runs from the starts."""

    @persist(store)
    class Count(Flow[Counter]):
        @start()
        def one(self) -> None:
            self.state.count += 1

        @listen(one)
        def two(self) -> int:
            self.state.count += 1
            return self.state.count

    flow = Count()
    assert flow.kickoff() == 2
    run_id = flow.state.id
    assert [c.method_name for c in store.history(run_id)] == ["kickoff", "one", "two"]
    again = Count()
    assert again.kickoff(inputs={"id": run_id, "items": ["new"]}) == 4
    assert again.state.id == run_id and again.state.items == ["new"]
    assert store.load_state(run_id)["count"] == 4


def test_unknown_id_starts_a_fresh_run_with_that_id(store: Any) -> None:
    """kickoff(inputs={"id": X}) for an unknown X starts fresh, and the run is X."""

    @persist(store)
    class Count(Flow[Counter]):
        @start()
        def one(self) -> int:
            self.state.count += 1
            return self.state.count

    run_id = f"my-id-{uuid.uuid4()}"
    assert Count().kickoff(inputs={"id": run_id}) == 1
    assert store.load_state(run_id)["count"] == 1


def test_method_level_persist_alone_reloads(store: Any) -> None:
    """@persist on one method only: a checkpoint after that method, and kickoff(id)
    reloads (CrewAI's does not)."""

    class Partial(Flow[Counter]):
        @start()
        def one(self) -> None:
            self.state.count += 1

        @persist(store)
        @listen(one)
        def two(self) -> int:
            self.state.count += 10
            return self.state.count

    flow = Partial()
    assert flow.kickoff() == 11
    assert [c.method_name for c in store.history(flow.state.id)] == ["kickoff", "two"]
    assert Partial().kickoff(inputs={"id": flow.state.id}) == 22


def test_constructor_persistence_overrides_decorator(store: Any) -> None:
    """Flow(persistence=p) wins over the backend named by @persist."""
    other = InMemoryFlowPersistence()

    @persist(other)
    class Count(Flow[Counter]):
        @start()
        def one(self) -> None:
            self.state.count += 1

    flow = Count(persistence=store)
    flow.kickoff()
    assert store.load_state(flow.state.id)["count"] == 1
    assert other.load_state(flow.state.id) is None
    assert flow.persistence is store


def test_rich_model_state_round_trips_exactly(store: Any) -> None:
    """Nested models, aware/naive datetimes, dates, UUIDs, Decimals, Enums, sets, tuples,
    bytes (not UTF-8) and int-keyed dicts come back equal after a reload."""

    @persist(store)
    class Keep(Flow[Rich]):
        @start()
        def touch(self) -> None:
            self.state.steps += 1

    flow = Keep()
    flow.kickoff()
    reloaded = Keep()
    reloaded.kickoff(inputs={"id": flow.state.id})
    expected = flow.state.model_copy(update={"steps": 2})
    assert reloaded.state == expected
    assert reloaded.state.naive.tzinfo is None
    assert reloaded.state.aware.utcoffset() == dt.timedelta(hours=5, minutes=30)
    assert isinstance(reloaded.state.inner, Inner) and reloaded.state.color is Color.GREEN


def test_rich_dict_state_round_trips_exactly(store: Any) -> None:
    """A dict state keeps bytes, datetimes, UUIDs, Decimals, sets, tuples and int keys."""
    value = {
        "raw": b"\x00\xfe",
        "when": dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.timezone.utc),
        "naive": dt.datetime(2026, 3, 4),
        "uid": uuid.uuid4(),
        "amount": decimal.Decimal("0.30"),
        "set": {1, 2},
        "tuple": (1, (2, 3)),
        "ints": {1: "a", 2: "b"},
        "nested": [{"deep": b"bytes"}],
    }

    @persist(store)
    class Keep(Flow[dict]):  # type: ignore[type-arg]
        @start()
        def put(self) -> None:
            if "raw" not in self.state:  # only the first kickoff writes the values
                self.state.update(value)
                self.state["first"] = True
            else:
                self.state["first"] = False

    flow = Keep()
    flow.kickoff()
    reloaded = Keep()
    reloaded.kickoff(inputs={"id": flow.state["id"]})
    assert reloaded.state["first"] is False
    assert {k: reloaded.state[k] for k in value} == value


def test_unsupported_value_names_its_path_before_anything_is_written(store: Any) -> None:
    """An object that cannot be stored raises UnserializableStateError naming
    state.items[3].payload, and no checkpoint for that method is written."""

    @persist(store)
    class Bad(Flow[Counter]):
        @start()
        def fill(self) -> None:
            self.state.items = [0, 1, 2, {"payload": object()}]

    flow = Bad()
    with pytest.raises(UnserializableStateError, match=r"state\.items\[3\]\.payload") as info:
        flow.kickoff()
    assert info.value.path == "state.items[3].payload"
    assert [c.method_name for c in store.history(flow.state.id)] == ["kickoff"]


def test_crewai_style_backend_works_and_lacks_resume() -> None:
    """A class with only save_state/load_state works with @persist and reload by id;
    resume names the capabilities it lacks."""

    class DictStore(FlowPersistence):
        def __init__(self) -> None:
            self.rows: dict[str, dict[str, Any]] = {}

        def save_state(self, flow_uuid: str, method_name: str, state_data: dict[str, Any]) -> None:
            self.rows[flow_uuid] = json.loads(json.dumps(state_data))

        def load_state(self, flow_uuid: str) -> dict[str, Any] | None:
            return self.rows.get(flow_uuid)

    store = DictStore()

    @persist(store)
    class Count(Flow[Counter]):
        @start()
        def one(self) -> int:
            self.state.count += 1
            return self.state.count

    flow = Count()
    assert flow.kickoff() == 1
    assert Count().kickoff(inputs={"id": flow.state.id}) == 2
    with pytest.raises(UnsupportedOperationError, match=r"DictStore lacks \['supports_runs'"):
        Count().resume(flow.state.id)


def test_bare_persist_uses_default_sqlite_file_created_on_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bare @persist uses <FLOWKIT_DATA_DIR>/flowkit.db, created at first kickoff, not at
    decoration."""
    import flowkit._persist as persist_module

    data_dir = tmp_path / "data"
    monkeypatch.setenv("FLOWKIT_DATA_DIR", str(data_dir))
    monkeypatch.setattr(persist_module, "_default", None)

    @persist
    class Count(Flow[Counter]):
        @start()
        def one(self) -> int:
            self.state.count += 1
            return self.state.count

    assert not data_dir.exists()
    flow = Count()
    assert flow.kickoff() == 1
    assert (data_dir / "flowkit.db").exists()
    assert Count().kickoff(inputs={"id": flow.state.id}) == 2
    assert flow.persistence is not None
    flow.persistence.close()
    monkeypatch.setattr(persist_module, "_default", None)


def test_verbose_persist_logs_each_save(caplog: pytest.LogCaptureFixture) -> None:
    """@persist(p, verbose=True) logs every checkpoint on the flowkit logger."""
    store = InMemoryFlowPersistence()

    @persist(store, verbose=True)
    class Count(Flow[Counter]):
        @start()
        def one(self) -> None: ...

    with caplog.at_level(logging.INFO, logger="flowkit"):
        flow = Count()
        flow.kickoff()
    assert any(
        flow.state.id in r.getMessage() and "after one" in r.getMessage() for r in caplog.records
    )


def test_persist_rejects_a_non_backend() -> None:
    """@persist("flows.db") is a configuration error saying what to pass."""
    with pytest.raises(FlowConfigurationError, match="FlowPersistence subclass"):
        persist("flows.db")  # type: ignore[call-overload]


def test_corrupted_latest_row_is_an_error_naming_run_and_seq(tmp_path: Path) -> None:
    """A latest checkpoint damaged on disk raises CorruptCheckpointError naming the run id
    and seq on reload -- never a raw JSONDecodeError, never a silent fresh start."""
    from flowkit.persistence import SQLiteFlowPersistence

    db = tmp_path / "corrupt.db"
    store = SQLiteFlowPersistence(db)

    @persist(store)
    class Count(Flow[Counter]):
        @start()
        def one(self) -> None:
            self.state.count += 1

    flow = Count()
    flow.kickoff()
    run_id = flow.state.id
    store.close()
    with contextlib.closing(sqlite3.connect(db)) as raw, raw:
        raw.execute(
            "UPDATE flowkit_checkpoints SET state = ? WHERE run_id = ? AND seq = 2",
            ("{broken", run_id),
        )
    store2 = SQLiteFlowPersistence(db)
    try:
        with pytest.raises(CorruptCheckpointError, match=rf"{run_id}.*\b2\b") as info:
            Count(persistence=store2).kickoff(inputs={"id": run_id})
        assert (info.value.run_id, info.value.seq) == (run_id, 2)
    finally:
        store2.close()


def test_stored_state_no_longer_valid_for_the_model_is_an_error(tmp_path: Path) -> None:
    """A stored state that fails the current model's validation names run id and seq."""
    from flowkit.persistence import SQLiteFlowPersistence

    store = SQLiteFlowPersistence(tmp_path / "drift.db")
    try:
        store.save_state("drifted", "one", {"id": "drifted", "count": "not a number"})

        @persist(store)
        class Count(Flow[Counter]):
            @start()
            def one(self) -> None: ...

        with pytest.raises(CorruptCheckpointError, match=r"'drifted' checkpoint .*state\.count"):
            Count().kickoff(inputs={"id": "drifted"})
    finally:
        store.close()


@pytest.mark.slow
def test_reload_in_a_new_process(tmp_path: Path) -> None:
    """A run written by one process is reloaded by id in another."""
    db = tmp_path / "proc.db"
    script = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent / "durable")!r})
from flows import SixSteps
from flowkit.persistence import SQLiteFlowPersistence
p = SQLiteFlowPersistence({str(db)!r})
print(SixSteps(persistence=p).kickoff(inputs={{"id": "shared-run"}}))
p.close()
"""
    first = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert first.stdout.strip() == "21"
    second = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert second.stdout.strip() == "42"
