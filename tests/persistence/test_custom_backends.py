"""User-written backends: a CrewAI-style sync class and an async-only class pass the
required part of the contract; the base class derives the missing flavour."""

from __future__ import annotations

import asyncio
import copy
import threading
from typing import Any

import pytest

from flowkit.exceptions import FlowConfigurationError, UnsupportedOperationError
from flowkit.persistence import FlowPersistence, InMemoryFlowPersistence, SQLiteFlowPersistence
from flowkit.persistence._base import CAPABILITY_OPS, REQUIRED_OPS
from flowkit.testing import PersistenceContract


class CrewAIStyle(FlowPersistence):
    """Written for CrewAI: sync save_state / load_state / init_db only."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.init_calls = 0

    def init_db(self) -> None:
        self.init_calls += 1

    def save_state(self, flow_uuid: str, method_name: str, state_data: dict[str, Any]) -> None:
        self.rows[flow_uuid] = copy.deepcopy(state_data)

    def load_state(self, flow_uuid: str) -> dict[str, Any] | None:
        row = self.rows.get(flow_uuid)
        return copy.deepcopy(row) if row is not None else None


class AsyncOnly(FlowPersistence):
    """Written async-first: only the a-prefixed flavour."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.threads: set[str] = set()

    async def asave_state(
        self, flow_uuid: str, method_name: str, state_data: dict[str, Any]
    ) -> None:
        self.threads.add(threading.current_thread().name)
        await asyncio.sleep(0)
        self.rows[flow_uuid] = copy.deepcopy(state_data)

    async def aload_state(self, flow_uuid: str) -> dict[str, Any] | None:
        row = self.rows.get(flow_uuid)
        return copy.deepcopy(row) if row is not None else None


_DELEGATED = (*REQUIRED_OPS, *(op for ops in CAPABILITY_OPS.values() for op in ops))


def _delegate(op: str) -> Any:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.inner, op)(*args, **kwargs)

    method.__name__ = op
    return method


def _init_composed(self: Any) -> None:
    self.inner = InMemoryFlowPersistence()


# A user backend with every capability but not begin_run / end_run: the base class
# composes those from create_run, acquire_lease, save_checkpoint and release_lease.
ComposedOnly: type[FlowPersistence] = type(
    "ComposedOnly",
    (FlowPersistence,),
    {
        "supports_history": True,
        "supports_runs": True,
        "supports_cas": True,
        "supports_leases": True,
        "__init__": _init_composed,
        **{op: _delegate(op) for op in _DELEGATED},
    },
)


class TestComposedOnlyContract(PersistenceContract):
    @pytest.fixture
    def persistence(self) -> FlowPersistence:
        store = ComposedOnly()
        assert not {"begin_run", "abegin_run", "end_run", "aend_run"} & store._native_ops
        return store


class TestCrewAIStyleContract(PersistenceContract):
    @pytest.fixture
    def persistence(self) -> CrewAIStyle:
        return CrewAIStyle()

    def corrupt_latest(self, persistence: FlowPersistence, run_id: str) -> None:
        raise NotImplementedError  # a plain dict has nothing that can be corrupted


class TestAsyncOnlyContract(PersistenceContract):
    @pytest.fixture
    def persistence(self) -> AsyncOnly:
        return AsyncOnly()


def test_crewai_class_has_no_capabilities() -> None:
    """A CrewAI-style class is valid and announces no optional capability."""
    store = CrewAIStyle()
    flags = (store.supports_history, store.supports_runs, store.supports_cas)
    assert flags == (False, False, False)
    assert store.secret_key is None


def test_sync_call_of_async_only_backend_without_loop() -> None:
    """The derived sync flavour works in a thread that runs no event loop."""
    store = AsyncOnly()
    store.save_state("r1", "m", {"id": "r1"})
    assert store.load_state("r1") == {"id": "r1"}


async def test_sync_call_of_async_only_backend_inside_loop() -> None:
    """The derived sync flavour called inside a running loop completes (no nested loop,
    no hang): the coroutine runs on flowkit's private loop thread."""
    store = AsyncOnly()
    store.save_state("r1", "m", {"id": "r1"})
    assert store.threads and threading.current_thread().name not in store.threads


async def test_async_call_of_sync_backend_runs_in_worker_thread() -> None:
    """The derived async flavour runs the sync method off the event loop's thread."""
    seen: list[str] = []

    class Recording(CrewAIStyle):
        def save_state(self, flow_uuid: str, method_name: str, state_data: dict[str, Any]) -> None:
            seen.append(threading.current_thread().name)
            super().save_state(flow_uuid, method_name, state_data)

    await Recording().asave_state("r1", "m", {"id": "r1"})
    assert seen and seen[0] != threading.current_thread().name


async def test_init_db_defaults_to_noop() -> None:
    """init_db and close are optional: a backend without them does nothing on both flavours."""
    store = AsyncOnly()
    store.init_db()
    await store.ainit_db()
    store.close()
    await store.aclose()


def test_missing_required_op_is_a_class_error() -> None:
    """A backend without either flavour of load_state fails when the class is created."""
    with pytest.raises(FlowConfigurationError, match=r"load_state\(\) or aload_state\(\)"):

        class NoLoad(FlowPersistence):
            def save_state(
                self, flow_uuid: str, method_name: str, state_data: dict[str, Any]
            ) -> None: ...


def test_capability_flag_without_methods_is_a_class_error() -> None:
    """Setting a capability flag without its methods fails when the class is created,
    naming the missing methods."""
    with pytest.raises(FlowConfigurationError, match=r"load_checkpoint\(\)"):

        class Boasting(CrewAIStyle):
            supports_history = True

            def history(self, run_id: str) -> list[Any]:
                return []


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_unsupported_op_names_method_and_backend(flavour: str) -> None:
    """Calling an optional operation the backend lacks raises UnsupportedOperationError
    naming the backend class, the method and what to do."""
    store = CrewAIStyle()
    with pytest.raises(UnsupportedOperationError) as caught:
        if flavour == "sync":
            store.history("r1")
        else:
            await store.ahistory("r1")
    message = str(caught.value)
    assert "CrewAIStyle" in message and "history()" in message
    assert "supports_history" in message
    assert isinstance(caught.value, NotImplementedError)


def test_async_backend_calling_derived_sync_from_its_own_loop() -> None:
    """An async method that calls a derived sync op of another backend does not deadlock."""

    class Outer(AsyncOnly):
        async def asave_state(
            self, flow_uuid: str, method_name: str, state_data: dict[str, Any]
        ) -> None:
            inner.save_state(flow_uuid, method_name, state_data)  # blocking, on our loop
            await super().asave_state(flow_uuid, method_name, state_data)

    inner = AsyncOnly()
    Outer().save_state("r1", "m", {"id": "r1"})
    assert inner.rows == {"r1": {"id": "r1"}}


@pytest.mark.parametrize("base", [InMemoryFlowPersistence, SQLiteFlowPersistence])
def test_plain_method_written_over_a_builtin_backend_is_the_one_run(
    base: type[FlowPersistence], tmp_path: Any
) -> None:
    """A subclass of a built-in backend that writes the plain save_checkpoint has it run
    by the async form too (the one the engine calls), and its super() call reaches the
    built-in implementation, not itself again."""

    class Counting(base):  # type: ignore[valid-type,misc]
        calls = 0

        def save_checkpoint(self, run_id: str, *args: Any, **kwargs: Any) -> Any:
            type(self).calls += 1
            return super().save_checkpoint(run_id, *args, **kwargs)

    backend = Counting() if base is InMemoryFlowPersistence else Counting(tmp_path / "c.db")
    first = asyncio.run(backend.asave_checkpoint("r", "a", {"id": "r"}, expected_seq=0))
    second = backend.save_checkpoint("r", "b", {"id": "r", "n": 1}, expected_seq=1)
    assert (first.seq, second.seq, Counting.calls) == (1, 2, 2)
    assert backend.load_state("r") == {"id": "r", "n": 1}
    backend.close()
