"""The contract every persistence backend must pass; run it against your own backend.

Subclass :class:`PersistenceContract` in a test module and provide a ``persistence``
fixture; pytest runs every rule against it, in both flavours (``op`` and ``aop``)::

    import pytest
    from flowkit.testing import PersistenceContract

    class TestMyStore(PersistenceContract):
        @pytest.fixture
        def persistence(self, tmp_path):
            store = MyStore(tmp_path)
            yield store
            store.close()

The fixture may be async (``async def`` with ``yield``) when your project runs
pytest-asyncio in auto mode, or decorated with ``@pytest_asyncio.fixture`` in strict
mode. The tests themselves are coroutines marked ``asyncio``, so pytest-asyncio must be
installed.

Groups of rules run only when the backend sets the matching capability flag
(``supports_history``, ``supports_runs``, ``supports_cas``, ``supports_leases``); the
others are skipped with the reason. A minimal CrewAI-style backend passes the required
subset. Implement :meth:`PersistenceContract.corrupt_latest` to also check that damaged
rows are reported. Every test uses fresh random run ids and flow names, so the suite can
share a database with other data; it deletes only runs it created.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import timezone
from typing import Any

import pytest

from flowkit.exceptions import (
    ConcurrentUpdateError,
    CorruptCheckpointError,
    FlowConfigurationError,
    InvalidArgumentError,
    LeaseLostError,
    RunExistsError,
    RunLockedError,
    RunNotFoundError,
    UnsupportedOperationError,
)
from flowkit.persistence import Checkpoint, FlowPersistence, RunRecord
from flowkit.persistence._base import CAPABILITY_OPS

__all__ = ["Flavoured", "PersistenceContract"]

BIG_TEXT = "x" * 5000


class Flavoured:
    """Calls a backend's operations in one flavour: ``await ops.load_state(run_id)``.

    With ``flavour="sync"`` it calls ``load_state`` directly (inside the test's running
    loop, which every backend must tolerate); with ``"async"`` it awaits ``aload_state``.
    """

    def __init__(self, persistence: FlowPersistence, flavour: str) -> None:
        self.persistence = persistence
        self.flavour = flavour

    def __getattr__(self, op: str) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.flavour == "async":
                return await getattr(self.persistence, "a" + op)(*args, **kwargs)
            return getattr(self.persistence, op)(*args, **kwargs)

        return call

    def in_thread(self, op: str, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        """The call, made so that several can overlap (sync calls go to worker threads)."""
        if self.flavour == "async":
            return getattr(self.persistence, "a" + op)(*args, **kwargs)  # type: ignore[no-any-return]
        return asyncio.to_thread(getattr(self.persistence, op), *args, **kwargs)


def _require(persistence: FlowPersistence, *flags: str) -> None:
    for flag in flags:
        if not getattr(persistence, flag):
            pytest.skip(f"{type(persistence).__qualname__}.{flag} is False")


def _state(run_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": run_id, **fields}


@pytest.mark.asyncio
class PersistenceContract:
    """Rules for :class:`~flowkit.persistence.FlowPersistence` backends (see module doc)."""

    @pytest.fixture
    def persistence(self) -> FlowPersistence:
        """Override in the subclass: return (or yield) the backend under test."""
        pytest.fail(f"{type(self).__qualname__} must define a 'persistence' fixture")

    def corrupt_latest(self, persistence: FlowPersistence, run_id: str) -> Any:
        """Override to damage the stored latest checkpoint of ``run_id`` (may be async).

        The corruption tests are skipped while this raises NotImplementedError.
        """
        raise NotImplementedError

    @pytest.fixture(params=["sync", "async"])
    def ops(self, request: pytest.FixtureRequest, persistence: FlowPersistence) -> Flavoured:
        return Flavoured(persistence, request.param)

    @pytest.fixture
    def run_id(self) -> str:
        return f"contract-{uuid.uuid4().hex}"

    @pytest.fixture
    def flow_name(self) -> str:
        return f"ContractFlow{uuid.uuid4().hex[:12]}"

    def _new_id(self) -> str:
        return f"contract-{uuid.uuid4().hex}"

    # -- required: save_state / load_state ----------------------------------------

    async def test_saved_state_loads_back(self, ops: Flavoured, run_id: str) -> None:
        """load_state returns the state saved by save_state, nested values included."""
        state = _state(run_id, n=1, text="héllo ✓", items=[1, 2.5, None, True], nested={"a": []})
        await ops.save_state(run_id, "start", state)
        assert await ops.load_state(run_id) == state

    async def test_unknown_run_loads_none(self, ops: Flavoured) -> None:
        """load_state of a run that was never saved returns None."""
        assert await ops.load_state(self._new_id()) is None

    async def test_latest_save_wins(self, ops: Flavoured, run_id: str) -> None:
        """load_state returns the state of the most recent save."""
        for n in range(3):
            await ops.save_state(run_id, f"step{n}", _state(run_id, n=n))
        assert await ops.load_state(run_id) == _state(run_id, n=2)

    async def test_runs_do_not_mix(self, ops: Flavoured, run_id: str) -> None:
        """Saving one run never changes what another run loads."""
        other = self._new_id()
        await ops.save_state(run_id, "a", _state(run_id, who="first"))
        await ops.save_state(other, "a", _state(other, who="second"))
        assert await ops.load_state(run_id) == _state(run_id, who="first")

    async def test_loaded_state_is_a_copy(self, ops: Flavoured, run_id: str) -> None:
        """Mutating the saved dict or a loaded dict does not change the stored state."""
        state = _state(run_id, items=[1])
        await ops.save_state(run_id, "a", state)
        state["items"].append(2)
        loaded = await ops.load_state(run_id)
        assert loaded is not None
        loaded["items"].append(3)
        assert await ops.load_state(run_id) == _state(run_id, items=[1])

    async def test_init_db_is_idempotent(self, ops: Flavoured, run_id: str) -> None:
        """init_db may be called any number of times and never loses data."""
        await ops.init_db()
        await ops.save_state(run_id, "a", _state(run_id))
        await ops.init_db()
        assert await ops.load_state(run_id) == _state(run_id)

    async def test_flavours_share_data(self, persistence: FlowPersistence, run_id: str) -> None:
        """What the sync flavour saves the async flavour loads, and the other way round."""
        persistence.save_state(run_id, "a", _state(run_id, n=1))
        assert await persistence.aload_state(run_id) == _state(run_id, n=1)
        await persistence.asave_state(run_id, "b", _state(run_id, n=2))
        assert persistence.load_state(run_id) == _state(run_id, n=2)

    async def test_big_fields_load_whole(self, ops: Flavoured, run_id: str) -> None:
        """Large fields, unchanged or changed between saves, always load back whole."""
        big = {"text": BIG_TEXT, "rows": list(range(500))}
        await ops.save_state(run_id, "a", _state(run_id, big=big, n=1))
        await ops.save_state(run_id, "b", _state(run_id, big=big, n=2))
        assert await ops.load_state(run_id) == _state(run_id, big=big, n=2)
        changed = {**big, "text": BIG_TEXT + "!"}
        await ops.save_state(run_id, "c", _state(run_id, big=changed, n=3))
        assert await ops.load_state(run_id) == _state(run_id, big=changed, n=3)

    async def test_marker_lookalike_values_round_trip(self, ops: Flavoured, run_id: str) -> None:
        """A value shaped like flowkit's internal blob marker is ordinary data."""
        state = _state(run_id, odd={"__flowkit_blob__": "not-a-hash"})
        await ops.save_state(run_id, "a", state)
        assert await ops.load_state(run_id) == state

    async def test_missing_capabilities_raise_unsupported(
        self, ops: Flavoured, run_id: str
    ) -> None:
        """Optional operations a backend lacks raise UnsupportedOperationError naming them."""
        persistence = ops.persistence
        missing = [
            op
            for ops_of_flag in CAPABILITY_OPS.values()
            for op in ops_of_flag
            if op not in persistence._native_ops and "a" + op not in persistence._native_ops
        ]
        if not missing:
            pytest.skip(f"{type(persistence).__qualname__} implements every optional operation")
        for op in missing:
            with pytest.raises(UnsupportedOperationError, match=op):
                args, kwargs = _dummy_call(op, run_id)
                await getattr(ops, op)(*args, **kwargs)

    # -- corruption ------------------------------------------------------------------

    async def test_corrupt_latest_is_reported(
        self, ops: Flavoured, persistence: FlowPersistence, run_id: str
    ) -> None:
        """A stored latest checkpoint that cannot be decoded raises CorruptCheckpointError
        naming the run id and the seq, never a silent None or fresh state."""
        await ops.save_state(run_id, "a", _state(run_id, n=1))
        await ops.save_state(run_id, "b", _state(run_id, n=2))
        try:
            result = self.corrupt_latest(persistence, run_id)
            if inspect.isawaitable(result):
                await result
        except NotImplementedError:
            pytest.skip(f"{type(self).__qualname__} does not implement corrupt_latest()")
        with pytest.raises(CorruptCheckpointError) as caught:
            await ops.load_state(run_id)
        assert caught.value.run_id == run_id
        assert run_id in str(caught.value)
        if persistence.supports_history:
            assert caught.value.seq == 2
            assert "seq 2" in str(caught.value)

    # -- history ---------------------------------------------------------------------

    async def test_seq_counts_from_one(self, ops: Flavoured, run_id: str) -> None:
        """Checkpoints of a run are numbered 1, 2, 3, ... in save order."""
        _require(ops.persistence, "supports_history")
        for n in range(3):
            await ops.save_state(run_id, f"step{n}", _state(run_id, n=n))
        history = await ops.history(run_id)
        assert [c.seq for c in history] == [1, 2, 3]

    async def test_history_is_ascending_and_complete(self, ops: Flavoured, run_id: str) -> None:
        """history returns every checkpoint, oldest first, with method names and states."""
        _require(ops.persistence, "supports_history")
        for n in range(3):
            await ops.save_state(run_id, f"step{n}", _state(run_id, n=n))
        history = await ops.history(run_id)
        assert all(isinstance(c, Checkpoint) for c in history)
        assert [(c.method_name, c.state["n"], c.run_id) for c in history] == [
            ("step0", 0, run_id),
            ("step1", 1, run_id),
            ("step2", 2, run_id),
        ]

    async def test_history_of_unknown_run_is_empty(self, ops: Flavoured) -> None:
        """history of a run that was never saved is an empty list."""
        _require(ops.persistence, "supports_history")
        assert await ops.history(self._new_id()) == []

    async def test_load_checkpoint_by_seq(self, ops: Flavoured, run_id: str) -> None:
        """load_checkpoint(run_id, seq) returns that checkpoint; None means the latest."""
        _require(ops.persistence, "supports_history")
        for n in range(3):
            await ops.save_state(run_id, f"step{n}", _state(run_id, n=n))
        second = await ops.load_checkpoint(run_id, 2)
        assert (second.seq, second.method_name, second.state) == (2, "step1", _state(run_id, n=1))
        latest = await ops.load_checkpoint(run_id)
        assert (latest.seq, latest.state) == (3, _state(run_id, n=2))

    async def test_load_checkpoint_unknown_is_none(self, ops: Flavoured, run_id: str) -> None:
        """load_checkpoint returns None for an unknown run or a seq that does not exist."""
        _require(ops.persistence, "supports_history")
        assert await ops.load_checkpoint(run_id) is None
        await ops.save_state(run_id, "a", _state(run_id))
        assert await ops.load_checkpoint(run_id, 7) is None

    async def test_checkpoint_time_is_aware_utc(self, ops: Flavoured, run_id: str) -> None:
        """Checkpoint.created_at is a timezone-aware UTC datetime."""
        _require(ops.persistence, "supports_history")
        await ops.save_state(run_id, "a", _state(run_id))
        checkpoint = await ops.load_checkpoint(run_id)
        assert checkpoint.created_at.utcoffset() == timezone.utc.utcoffset(None)

    async def test_history_states_are_whole_with_big_fields(
        self, ops: Flavoured, run_id: str
    ) -> None:
        """Every checkpoint in history carries its whole state, big fields included."""
        _require(ops.persistence, "supports_history")
        states = [_state(run_id, big=BIG_TEXT, n=n) for n in range(3)]
        states.append(_state(run_id, big=BIG_TEXT + "2", n=3))
        for n, state in enumerate(states):
            await ops.save_state(run_id, f"s{n}", state)
        assert [c.state for c in await ops.history(run_id)] == states

    # -- compare-and-set -------------------------------------------------------------

    async def test_save_checkpoint_returns_what_was_stored(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """save_checkpoint returns the stored checkpoint, numbered last_seq + 1."""
        _require(ops.persistence, "supports_cas")
        first = await ops.save_checkpoint(
            run_id, "a", _state(run_id, n=1), expected_seq=0, flow_name=flow_name
        )
        second = await ops.save_checkpoint(run_id, "b", _state(run_id, n=2), expected_seq=1)
        assert (first.seq, second.seq) == (1, 2)
        assert (second.run_id, second.method_name, second.state) == (
            run_id,
            "b",
            _state(run_id, n=2),
        )
        assert await ops.load_state(run_id) == _state(run_id, n=2)

    async def test_returned_checkpoint_is_a_snapshot(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """The checkpoint save_checkpoint returns holds the state as saved: changing the
        dicts passed in afterwards (small and big fields, meta) does not change it."""
        _require(ops.persistence, "supports_cas")
        state = _state(run_id, small=[1, 2], big=[{"n": n} for n in range(400)])
        meta = {"position": {"done": ["a"]}}
        saved = await ops.save_checkpoint(
            run_id, "a", state, expected_seq=0, meta=meta, flow_name=flow_name
        )
        state["small"].append(3)
        state["big"].append({"n": -1})
        meta["position"]["done"].append("b")
        assert saved.state == _state(run_id, small=[1, 2], big=[{"n": n} for n in range(400)])
        assert saved.meta == {"position": {"done": ["a"]}}
        assert saved == await ops.load_checkpoint(run_id, 1)

    async def test_meta_is_stored_verbatim(self, ops: Flavoured, run_id: str) -> None:
        """The meta dict comes back exactly as saved, in history and load_checkpoint."""
        _require(ops.persistence, "supports_cas", "supports_history")
        meta = {"position": {"done": ["a"], "pending": [["b", 1]]}, "version": 3, "x": None}
        await ops.save_checkpoint(run_id, "a", _state(run_id), expected_seq=0, meta=meta)
        assert (await ops.load_checkpoint(run_id)).meta == meta
        assert (await ops.history(run_id))[0].meta == meta

    async def test_cas_conflict_writes_nothing(self, ops: Flavoured, run_id: str) -> None:
        """A save whose expected_seq is not the stored last_seq raises
        ConcurrentUpdateError naming the run, and stores nothing."""
        _require(ops.persistence, "supports_cas")
        await ops.save_checkpoint(run_id, "a", _state(run_id, n=1), expected_seq=0)
        await ops.save_checkpoint(run_id, "b", _state(run_id, n=2), expected_seq=1)
        with pytest.raises(ConcurrentUpdateError, match=run_id):
            await ops.save_checkpoint(run_id, "stale", _state(run_id, n=99), expected_seq=1)
        assert await ops.load_state(run_id) == _state(run_id, n=2)
        if ops.persistence.supports_history:
            assert [c.seq for c in await ops.history(run_id)] == [1, 2]

    async def test_cas_on_new_run_expects_zero(self, ops: Flavoured, run_id: str) -> None:
        """A run that does not exist has last_seq 0: expecting anything else conflicts."""
        _require(ops.persistence, "supports_cas")
        with pytest.raises(ConcurrentUpdateError, match=run_id):
            await ops.save_checkpoint(run_id, "a", _state(run_id), expected_seq=3)
        assert await ops.load_state(run_id) is None
        if ops.persistence.supports_runs:
            assert await ops.get_run(run_id) is None

    async def test_unconditional_save_appends(self, ops: Flavoured, run_id: str) -> None:
        """expected_seq=None appends whatever the stored last_seq is."""
        _require(ops.persistence, "supports_cas")
        await ops.save_checkpoint(run_id, "a", _state(run_id, n=1), expected_seq=None)
        saved = await ops.save_checkpoint(run_id, "b", _state(run_id, n=2), expected_seq=None)
        assert saved.seq == 2

    async def test_concurrent_cas_saves_one_wins(self, ops: Flavoured, run_id: str) -> None:
        """Of several overlapping saves expecting the same seq, exactly one succeeds."""
        _require(ops.persistence, "supports_cas")
        await ops.save_checkpoint(run_id, "a", _state(run_id, n=0), expected_seq=0)
        results = await asyncio.gather(
            *(
                ops.in_thread(
                    "save_checkpoint", run_id, f"w{n}", _state(run_id, n=n), expected_seq=1
                )
                for n in range(1, 9)
            ),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, Checkpoint)]
        losers = [r for r in results if isinstance(r, ConcurrentUpdateError)]
        assert (len(winners), len(losers)) == (1, 7), results
        assert winners[0].seq == 2
        assert await ops.load_state(run_id) == winners[0].state

    async def test_save_checkpoint_sets_run_fields(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """save_checkpoint creates a missing run with flow_name and sets last_seq, status."""
        _require(ops.persistence, "supports_cas", "supports_runs")
        await ops.save_checkpoint(run_id, "a", _state(run_id), expected_seq=0, flow_name=flow_name)
        await ops.save_checkpoint(run_id, "b", _state(run_id), expected_seq=1, status="completed")
        run = await ops.get_run(run_id)
        assert (run.flow_name, run.last_seq, run.status) == (flow_name, 2, "completed")
        assert run.updated_at >= run.created_at

    async def test_save_refused_while_leased_by_another(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """save_checkpoint with a lease_owner raises RunLockedError, writing nothing, while
        another owner holds an unexpired lease; the holder itself may save."""
        _require(ops.persistence, "supports_cas", "supports_runs", "supports_leases")
        await ops.create_run(run_id, flow_name)
        await ops.acquire_lease(run_id, "holder", 60)
        with pytest.raises(RunLockedError, match="holder"):
            await ops.save_checkpoint(
                run_id, "a", _state(run_id), expected_seq=0, lease_owner="intruder"
            )
        assert await ops.load_state(run_id) is None
        saved = await ops.save_checkpoint(
            run_id, "a", _state(run_id), expected_seq=0, lease_owner="holder"
        )
        assert saved.seq == 1

    # -- runs ------------------------------------------------------------------------

    async def test_create_run_starts_empty(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """create_run makes a running run with last_seq 0 and aware UTC timestamps."""
        _require(ops.persistence, "supports_runs")
        run = await ops.create_run(run_id, flow_name, fingerprint="fp1", info={"k": [1]})
        assert isinstance(run, RunRecord)
        assert (run.run_id, run.flow_name, run.status, run.last_seq) == (
            run_id,
            flow_name,
            "running",
            0,
        )
        assert (run.fingerprint, run.info, run.lease_owner) == ("fp1", {"k": [1]}, None)
        assert run.created_at.utcoffset() == timezone.utc.utcoffset(None)
        assert await ops.get_run(run_id) == run
        assert await ops.load_state(run_id) is None

    async def test_create_taken_id_raises(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """create_run on a taken id raises RunExistsError; exist_ok returns the stored run."""
        _require(ops.persistence, "supports_runs")
        first = await ops.create_run(run_id, flow_name, info={"a": 1})
        with pytest.raises(RunExistsError, match=run_id):
            await ops.create_run(run_id, flow_name)
        again = await ops.create_run(run_id, flow_name, info={"b": 2}, exist_ok=True)
        assert again == first

    async def test_get_unknown_run_is_none(self, ops: Flavoured) -> None:
        """get_run of an unknown id returns None."""
        _require(ops.persistence, "supports_runs")
        assert await ops.get_run(self._new_id()) is None

    async def test_update_run_changes_given_fields(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """update_run changes only the given fields; info replaces the stored dict."""
        _require(ops.persistence, "supports_runs")
        created = await ops.create_run(run_id, flow_name, fingerprint="fp1", info={"a": 1})
        updated = await ops.update_run(run_id, status="interrupted", info={"b": {"c": None}})
        assert (updated.status, updated.fingerprint, updated.info) == (
            "interrupted",
            "fp1",
            {"b": {"c": None}},
        )
        assert updated.updated_at >= created.updated_at
        again = await ops.update_run(run_id, fingerprint="fp2")
        assert (again.status, again.fingerprint, again.info) == (
            "interrupted",
            "fp2",
            {"b": {"c": None}},
        )
        assert await ops.get_run(run_id) == again

    async def test_update_unknown_run_raises(self, ops: Flavoured) -> None:
        """update_run of an unknown id raises RunNotFoundError naming it."""
        _require(ops.persistence, "supports_runs")
        unknown = self._new_id()
        with pytest.raises(RunNotFoundError, match=unknown):
            await ops.update_run(unknown, status="failed")

    async def test_update_run_rejects_unknown_status(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """update_run refuses a status outside running/completed/failed/interrupted."""
        _require(ops.persistence, "supports_runs")
        await ops.create_run(run_id, flow_name)
        with pytest.raises(InvalidArgumentError, match="paused"):
            await ops.update_run(run_id, status="paused")

    async def test_run_info_is_a_copy(self, ops: Flavoured, run_id: str, flow_name: str) -> None:
        """Mutating a returned RunRecord's info does not change the stored info."""
        _require(ops.persistence, "supports_runs")
        info = {"definition": {"methods": ["a", "b"]}}
        run = await ops.create_run(run_id, flow_name, info=info)
        run.info["definition"]["methods"].append("c")
        info["definition"]["methods"].append("d")
        assert (await ops.get_run(run_id)).info == {"definition": {"methods": ["a", "b"]}}

    async def test_list_runs_filters(self, ops: Flavoured, flow_name: str) -> None:
        """list_runs keeps only runs matching every given filter."""
        _require(ops.persistence, "supports_runs")
        parent, done, child = self._new_id(), self._new_id(), self._new_id()
        other_flow = flow_name + "Other"
        await ops.create_run(parent, flow_name)
        await ops.create_run(done, flow_name)
        await ops.update_run(done, status="completed")
        await ops.create_run(child, other_flow, parent_run_id=parent, parent_seq=0)

        def ids(runs: list[RunRecord]) -> set[str]:
            return {run.run_id for run in runs}

        assert ids(await ops.list_runs(flow_name=flow_name)) == {parent, done}
        assert ids(await ops.list_runs(flow_name=flow_name, status="completed")) == {done}
        assert ids(await ops.list_runs(flow_name=flow_name, status="running")) == {parent}
        assert ids(await ops.list_runs(parent_run_id=parent)) == {child}
        assert ids(await ops.list_runs(flow_name=other_flow, parent_run_id=parent)) == {child}
        assert await ops.list_runs(flow_name=other_flow, status="failed") == []

    async def test_list_runs_newest_first_with_paging(self, ops: Flavoured, flow_name: str) -> None:
        """list_runs orders by updated_at, newest first, and pages with limit/offset."""
        _require(ops.persistence, "supports_runs")
        created = [self._new_id() for _ in range(5)]
        for run_id in created:
            await ops.create_run(run_id, flow_name)
        await ops.update_run(created[0], status="running")  # now the most recently updated
        expected = [created[0], *reversed(created[1:])]
        assert [r.run_id for r in await ops.list_runs(flow_name=flow_name)] == expected
        page = await ops.list_runs(flow_name=flow_name, limit=2, offset=1)
        assert [r.run_id for r in page] == expected[1:3]
        assert await ops.list_runs(flow_name=flow_name, offset=5) == []

    async def test_run_metadata_reads_back(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """A run's metadata (``info["metadata"]``) reads back as ``RunRecord.metadata``,
        from get_run and list_runs; a run without it has {}."""
        _require(ops.persistence, "supports_runs")
        metadata = {"user": "u123", "ticket": 42, "tags": ["a"], "nested": {"k": None}}
        await ops.create_run(run_id, flow_name, info={"metadata": metadata, "other": 1})
        plain = self._new_id()
        await ops.create_run(plain, flow_name)
        assert (await ops.get_run(run_id)).metadata == metadata
        listed = {r.run_id: r.metadata for r in await ops.list_runs(flow_name=flow_name)}
        assert listed == {run_id: metadata, plain: {}}

    async def test_list_runs_filters_by_metadata(self, ops: Flavoured, flow_name: str) -> None:
        """list_runs(metadata=...) keeps runs whose metadata has every given key with an
        equal JSON value: numbers by value, true never 1, "42" never 42, arrays in order,
        objects by key; a key absent is not null; the same text elsewhere in info (or in
        another case) does not match; the other filters still apply."""
        _require(ops.persistence, "supports_runs")
        runs = {
            "a": {"user": "u1", "ticket": 42},
            "b": {"user": "u2", "ticket": 42.0},
            "c": {"user": "u1", "flag": True, "tags": ["x", "y"], "where": {"k": 1}},
            "d": {"ticket": "42", "flag": 1, "none": None},
            "f": {"user": "U1"},
        }
        ids = {name: self._new_id() for name in [*runs, "e"]}
        for name, metadata in runs.items():
            await ops.create_run(ids[name], flow_name, info={"metadata": metadata})
        # "user":"u1" appears in its info, but not in its metadata
        await ops.create_run(ids["e"], flow_name, info={"definition": {"user": "u1"}})
        await ops.update_run(ids["a"], status="completed")

        async def found(**filters: Any) -> set[str]:
            listed = await ops.list_runs(flow_name=flow_name, **filters)
            return {name for name, run_id in ids.items() if run_id in {r.run_id for r in listed}}

        assert await found(metadata={"user": "u1"}) == {"a", "c"}
        assert await found(metadata={"user": "u1", "ticket": 42}) == {"a"}
        assert await found(metadata={"ticket": 42}) == {"a", "b"}
        assert await found(metadata={"ticket": "42"}) == {"d"}
        assert await found(metadata={"flag": True}) == {"c"}
        assert await found(metadata={"flag": 1}) == {"d"}
        assert await found(metadata={"tags": ["x", "y"]}) == {"c"}
        assert await found(metadata={"tags": ["y", "x"]}) == set()
        assert await found(metadata={"where": {"k": 1.0}}) == {"c"}
        assert await found(metadata={"none": None}) == {"d"}
        assert await found(metadata={"missing": None}) == set()
        assert await found(metadata={"user": "u1"}, status="running") == {"c"}
        assert await found(metadata={}) == set(ids)
        assert await ops.list_runs(flow_name=flow_name + "x", metadata={"user": "u1"}) == []

    async def test_metadata_filter_pages_by_matching_runs(
        self, ops: Flavoured, flow_name: str
    ) -> None:
        """With a metadata filter, limit and offset count matching runs, newest first,
        however many non-matching runs lie between them."""
        _require(ops.persistence, "supports_runs")
        matching = []
        for n in range(12):
            run_id = self._new_id()
            metadata = {"batch": "m"} if n % 3 == 0 else {"batch": "other"}
            await ops.create_run(run_id, flow_name, info={"metadata": metadata})
            if n % 3 == 0:
                matching.append(run_id)
        newest_first = list(reversed(matching))
        wanted = {"batch": "m"}

        async def page(limit: int, offset: int) -> list[str]:
            runs = await ops.list_runs(
                flow_name=flow_name, metadata=wanted, limit=limit, offset=offset
            )
            return [r.run_id for r in runs]

        assert await page(50, 0) == newest_first
        assert await page(2, 1) == newest_first[1:3]
        assert await page(1, 3) == newest_first[3:]
        assert await page(5, 4) == []
        assert await page(0, 0) == []

    async def test_bad_metadata_filter_is_refused(self, ops: Flavoured, flow_name: str) -> None:
        """A metadata filter that is not a dict of JSON values is refused, naming the key."""
        _require(ops.persistence, "supports_runs")
        with pytest.raises(FlowConfigurationError, match="dict"):
            await ops.list_runs(metadata="user=u1")
        with pytest.raises(FlowConfigurationError, match="'when'"):
            await ops.list_runs(flow_name=flow_name, metadata={"when": object()})

    async def test_delete_run_removes_everything(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """delete_run removes the run and its checkpoints; True once, then False."""
        _require(ops.persistence, "supports_runs")
        await ops.create_run(run_id, flow_name)
        await ops.save_state(run_id, "a", _state(run_id, big=BIG_TEXT))
        assert await ops.delete_run(run_id) is True
        assert await ops.get_run(run_id) is None
        assert await ops.load_state(run_id) is None
        if ops.persistence.supports_history:
            assert await ops.history(run_id) == []
        assert await ops.delete_run(run_id) is False
        assert await ops.list_runs(flow_name=flow_name) == []

    async def test_deleted_id_can_be_reused(self, ops: Flavoured, run_id: str) -> None:
        """After delete_run the id starts afresh at seq 1 with the new state."""
        _require(ops.persistence, "supports_runs", "supports_history")
        await ops.save_state(run_id, "a", _state(run_id, big=BIG_TEXT, n=1))
        await ops.save_state(run_id, "b", _state(run_id, big=BIG_TEXT, n=2))
        await ops.delete_run(run_id)
        await ops.save_state(run_id, "c", _state(run_id, big=BIG_TEXT, n=3))
        history = await ops.history(run_id)
        assert [(c.seq, c.state["n"]) for c in history] == [(1, 3)]
        assert history[0].state["big"] == BIG_TEXT

    async def test_delete_parent_keeps_child(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """Deleting a parent leaves forks intact, lineage fields included."""
        _require(ops.persistence, "supports_runs")
        child = self._new_id()
        await ops.save_state(run_id, "a", _state(run_id, n=1))
        await ops.create_run(child, flow_name, parent_run_id=run_id, parent_seq=1)
        await ops.save_state(child, "a", _state(child, n=1))
        await ops.delete_run(run_id)
        kept = await ops.get_run(child)
        assert (kept.parent_run_id, kept.parent_seq) == (run_id, 1)
        assert await ops.load_state(child) == _state(child, n=1)

    async def test_fork_records_lineage(self, ops: Flavoured, run_id: str, flow_name: str) -> None:
        """A run created with parent fields keeps them; its checkpoints start at seq 1."""
        _require(ops.persistence, "supports_runs", "supports_cas")
        for n in range(3):
            await ops.save_checkpoint(run_id, f"s{n}", _state(run_id, n=n), expected_seq=n)
        fork = self._new_id()
        created = await ops.create_run(
            fork, flow_name, parent_run_id=run_id, parent_seq=2, fingerprint="fp"
        )
        assert (created.parent_run_id, created.parent_seq, created.last_seq) == (run_id, 2, 0)
        first = await ops.save_checkpoint(fork, "s1", _state(fork, n=1), expected_seq=0)
        assert first.seq == 1
        assert [r.run_id for r in await ops.list_runs(parent_run_id=run_id)] == [fork]
        assert await ops.load_state(run_id) == _state(run_id, n=2)

    async def test_prune_keeps_newest(self, ops: Flavoured, run_id: str) -> None:
        """prune(keep_last=N) deletes older checkpoints, returns how many, and keeps
        last_seq: the next save continues the numbering."""
        _require(ops.persistence, "supports_runs", "supports_history")
        for n in range(5):
            await ops.save_state(run_id, f"s{n}", _state(run_id, n=n, big=BIG_TEXT))
        assert await ops.prune(run_id, keep_last=2) == 3
        assert [c.seq for c in await ops.history(run_id)] == [4, 5]
        assert (await ops.get_run(run_id)).last_seq == 5
        assert await ops.load_checkpoint(run_id, 1) is None
        assert await ops.prune(run_id, keep_last=2) == 0
        await ops.save_state(run_id, "s5", _state(run_id, n=5, big=BIG_TEXT))
        history = await ops.history(run_id)
        assert [c.seq for c in history] == [4, 5, 6]
        assert all(c.state["big"] == BIG_TEXT for c in history)

    async def test_prune_keeps_lineage(self, ops: Flavoured, run_id: str, flow_name: str) -> None:
        """prune leaves the run record (lineage, fingerprint, info) untouched."""
        _require(ops.persistence, "supports_runs")
        await ops.create_run(
            run_id, flow_name, parent_run_id="parent-x", parent_seq=4, info={"i": 1}
        )
        for n in range(3):
            await ops.save_state(run_id, f"s{n}", _state(run_id, n=n))
        before = await ops.get_run(run_id)
        await ops.prune(run_id, keep_last=1)
        after = await ops.get_run(run_id)
        assert (after.parent_run_id, after.parent_seq, after.info, after.last_seq) == (
            "parent-x",
            4,
            {"i": 1},
            before.last_seq,
        )
        assert await ops.load_state(run_id) == _state(run_id, n=2)

    async def test_prune_needs_keep_last(self, ops: Flavoured, run_id: str) -> None:
        """prune refuses keep_last < 1 (use delete_run to remove a whole run)."""
        _require(ops.persistence, "supports_runs")
        await ops.save_state(run_id, "a", _state(run_id))
        with pytest.raises(InvalidArgumentError, match="keep_last"):
            await ops.prune(run_id, keep_last=0)
        assert await ops.load_state(run_id) == _state(run_id)

    # -- leases ----------------------------------------------------------------------

    async def test_acquire_free_lease(self, ops: Flavoured, run_id: str, flow_name: str) -> None:
        """acquire_lease on a free run records the owner and an expiry in the future."""
        _require(ops.persistence, "supports_runs", "supports_leases")
        await ops.create_run(run_id, flow_name)
        run = await ops.acquire_lease(run_id, "worker-1", 30)
        assert run.lease_owner == "worker-1"
        assert run.lease_expires_at is not None
        assert run.lease_expires_at > run.updated_at
        assert (await ops.get_run(run_id)).lease_owner == "worker-1"

    async def test_lease_conflict_names_holder(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """acquire_lease while another owner's lease is live raises RunLockedError naming
        the run and the holder."""
        _require(ops.persistence, "supports_runs", "supports_leases")
        await ops.create_run(run_id, flow_name)
        await ops.acquire_lease(run_id, "worker-1", 30)
        with pytest.raises(RunLockedError) as caught:
            await ops.acquire_lease(run_id, "worker-2", 30)
        assert run_id in str(caught.value)
        assert "worker-1" in str(caught.value)

    async def test_owner_reacquires_and_extends(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """The holder may acquire again; the expiry moves forward."""
        _require(ops.persistence, "supports_runs", "supports_leases")
        await ops.create_run(run_id, flow_name)
        first = await ops.acquire_lease(run_id, "worker-1", 10)
        second = await ops.acquire_lease(run_id, "worker-1", 100)
        assert second.lease_expires_at > first.lease_expires_at

    async def test_expired_lease_can_be_taken(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """Once a lease expires another owner may take it; the old owner's renew then
        raises LeaseLostError."""
        _require(ops.persistence, "supports_runs", "supports_leases")
        await ops.create_run(run_id, flow_name)
        await ops.acquire_lease(run_id, "dead-worker", 0.05)
        await asyncio.sleep(0.1)
        run = await ops.acquire_lease(run_id, "worker-2", 30)
        assert run.lease_owner == "worker-2"
        with pytest.raises(LeaseLostError, match=run_id):
            await ops.renew_lease(run_id, "dead-worker", 30)

    async def test_renew_extends_own_lease(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """renew_lease by the holder moves the expiry forward."""
        _require(ops.persistence, "supports_runs", "supports_leases")
        await ops.create_run(run_id, flow_name)
        first = await ops.acquire_lease(run_id, "worker-1", 5)
        await ops.renew_lease(run_id, "worker-1", 500)
        renewed = await ops.get_run(run_id)
        assert renewed.lease_owner == "worker-1"
        assert renewed.lease_expires_at > first.lease_expires_at

    async def test_renew_by_stranger_raises(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """renew_lease by someone who does not hold the lease raises LeaseLostError."""
        _require(ops.persistence, "supports_runs", "supports_leases")
        await ops.create_run(run_id, flow_name)
        with pytest.raises(LeaseLostError):
            await ops.renew_lease(run_id, "nobody", 30)
        await ops.acquire_lease(run_id, "worker-1", 30)
        with pytest.raises(LeaseLostError, match="worker-2"):
            await ops.renew_lease(run_id, "worker-2", 30)

    async def test_release_frees_lease(self, ops: Flavoured, run_id: str, flow_name: str) -> None:
        """release_lease by the holder frees the run; by anyone else it does nothing."""
        _require(ops.persistence, "supports_runs", "supports_leases")
        await ops.create_run(run_id, flow_name)
        await ops.acquire_lease(run_id, "worker-1", 30)
        await ops.release_lease(run_id, "worker-2")
        assert (await ops.get_run(run_id)).lease_owner == "worker-1"
        await ops.release_lease(run_id, "worker-1")
        run = await ops.get_run(run_id)
        assert (run.lease_owner, run.lease_expires_at) == (None, None)
        assert (await ops.acquire_lease(run_id, "worker-2", 30)).lease_owner == "worker-2"

    async def test_lease_on_unknown_run_raises(self, ops: Flavoured) -> None:
        """acquire_lease on an unknown run raises RunNotFoundError naming it."""
        _require(ops.persistence, "supports_leases")
        unknown = self._new_id()
        with pytest.raises(RunNotFoundError, match=unknown):
            await ops.acquire_lease(unknown, "worker-1", 30)

    # -- begin_run / end_run (composed from the above when a backend lacks them) -----

    async def test_begin_run_creates_leases_and_saves(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """begin_run on a missing run creates it (flow name, fingerprint, info), takes the
        lease and stores checkpoint 1, returning both."""
        _require(ops.persistence, "supports_runs", "supports_cas", "supports_leases")
        run, saved = await ops.begin_run(
            run_id,
            flow_name,
            owner="worker-1",
            ttl=30,
            fingerprint="fp1",
            info={"definition": {"a": 1}},
            method_name="kickoff",
            state=_state(run_id, n=1),
            meta={"position": {}},
            expected_seq=0,
        )
        assert (saved.seq, saved.method_name, saved.state) == (1, "kickoff", _state(run_id, n=1))
        assert (run.last_seq, run.status, run.lease_owner) == (1, "running", "worker-1")
        stored = await ops.get_run(run_id)
        assert (stored.flow_name, stored.fingerprint, stored.info) == (
            flow_name,
            "fp1",
            {"definition": {"a": 1}},
        )
        assert (stored.last_seq, stored.lease_owner) == (1, "worker-1")
        assert stored.lease_expires_at is not None
        assert (await ops.load_checkpoint(run_id)).meta == {"position": {}}

    async def test_begin_run_continues_an_existing_run(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """begin_run on an existing run of the same flow keeps its fields and appends
        after its last checkpoint (expected_seq = its last_seq)."""
        _require(ops.persistence, "supports_runs", "supports_cas", "supports_leases")
        await ops.create_run(run_id, flow_name, fingerprint="old", info={"k": "v"})
        await ops.save_checkpoint(run_id, "a", _state(run_id, n=1), expected_seq=0)
        run, saved = await ops.begin_run(
            run_id,
            flow_name,
            owner="worker-1",
            ttl=30,
            fingerprint="new",
            info={"other": 1},
            method_name="kickoff",
            state=_state(run_id, n=2),
            expected_seq=1,
        )
        assert (saved.seq, run.last_seq, run.fingerprint, run.info) == (2, 2, "old", {"k": "v"})
        assert await ops.load_state(run_id) == _state(run_id, n=2)

    async def test_begin_run_refused_writes_nothing(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """begin_run raises RunLockedError while another owner holds the lease,
        ConcurrentUpdateError on a stale expected_seq, RunExistsError for a run of another
        flow; each time nothing is stored and the lease stays as it was."""
        _require(ops.persistence, "supports_runs", "supports_cas", "supports_leases")
        await ops.create_run(run_id, flow_name)
        await ops.acquire_lease(run_id, "holder", 60)
        args = {"method_name": "kickoff", "state": _state(run_id), "ttl": 30}
        with pytest.raises(RunLockedError, match="holder"):
            await ops.begin_run(run_id, flow_name, owner="intruder", expected_seq=0, **args)
        await ops.release_lease(run_id, "holder")
        with pytest.raises(ConcurrentUpdateError, match=run_id):
            await ops.begin_run(run_id, flow_name, owner="late", expected_seq=5, **args)
        with pytest.raises(RunExistsError, match=flow_name):
            await ops.begin_run(run_id, "SomeOtherFlow", owner="other", expected_seq=0, **args)
        run = await ops.get_run(run_id)
        assert (run.last_seq, run.lease_owner, run.flow_name) == (0, None, flow_name)
        assert await ops.load_state(run_id) is None

    async def test_end_run_saves_and_releases(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """end_run appends the checkpoint with the given status and frees the owner's
        lease; a refused end_run (stale seq) stores nothing and keeps the lease."""
        _require(ops.persistence, "supports_runs", "supports_cas", "supports_leases")
        await ops.begin_run(
            run_id,
            flow_name,
            owner="worker-1",
            ttl=30,
            method_name="kickoff",
            state=_state(run_id, n=0),
            expected_seq=0,
        )
        with pytest.raises(ConcurrentUpdateError):
            await ops.end_run(run_id, "last", _state(run_id, n=9), owner="worker-1", expected_seq=7)
        assert (await ops.get_run(run_id)).lease_owner == "worker-1"
        saved = await ops.end_run(
            run_id, "last", _state(run_id, n=1), owner="worker-1", expected_seq=1
        )
        assert (saved.seq, saved.state) == (2, _state(run_id, n=1))
        run = await ops.get_run(run_id)
        assert (run.status, run.last_seq, run.lease_owner, run.lease_expires_at) == (
            "completed",
            2,
            None,
            None,
        )

    # -- claim, owner liveness and fencing (the engine executes only what it claimed) ---

    async def _leased_run(
        self, ops: Flavoured, run_id: str, flow_name: str, owner: str, *, saves: int, ttl: float
    ) -> None:
        """A run with ``saves`` checkpoints written by ``owner``, who holds its lease."""
        await ops.create_run(run_id, flow_name)
        await ops.acquire_lease(run_id, owner, ttl)
        for n in range(1, saves + 1):
            await ops.save_checkpoint(
                run_id, f"step{n}", _state(run_id, n=n), expected_seq=n - 1, lease_owner=owner
            )

    async def test_claim_returns_latest_checkpoint_under_lease(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """claim_run takes the lease and returns the run (lease held, last_seq current) and
        its latest checkpoint."""
        _require(ops.persistence, "supports_runs", "supports_cas", "supports_leases")
        _require(ops.persistence, "supports_history")
        await ops.create_run(run_id, flow_name)
        for n in range(1, 4):
            await ops.save_checkpoint(run_id, f"step{n}", _state(run_id, n=n), expected_seq=n - 1)
        run, latest = await ops.claim_run(run_id, "claimant", 30)
        assert (run.run_id, run.last_seq, run.lease_owner) == (run_id, 3, "claimant")
        assert run.lease_expires_at is not None
        assert latest is not None
        assert (latest.seq, latest.method_name, latest.state) == (3, "step3", _state(run_id, n=3))
        assert (await ops.get_run(run_id)).lease_owner == "claimant"

    async def test_claim_of_run_without_checkpoints_returns_none(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """claim_run of a run with no checkpoint yet takes the lease and returns None as
        its checkpoint."""
        _require(ops.persistence, "supports_runs", "supports_leases", "supports_history")
        await ops.create_run(run_id, flow_name)
        run, latest = await ops.claim_run(run_id, "claimant", 30)
        assert (run.last_seq, run.lease_owner, latest) == (0, "claimant", None)

    async def test_claim_of_unknown_run_raises(self, ops: Flavoured) -> None:
        """claim_run of an unknown run raises RunNotFoundError naming it."""
        _require(ops.persistence, "supports_runs", "supports_leases", "supports_history")
        unknown = self._new_id()
        with pytest.raises(RunNotFoundError, match=unknown):
            await ops.claim_run(unknown, "claimant", 30)

    async def test_claim_of_run_held_by_live_owner_raises(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """claim_run while a live owner holds an unexpired lease raises RunLockedError
        naming the run and the holder; the lease stays the holder's."""
        _require(ops.persistence, "supports_runs", "supports_leases", "supports_history")
        await ops.create_run(run_id, flow_name)
        await ops.acquire_lease(run_id, "holder", 60)
        with pytest.raises(RunLockedError) as caught:
            await ops.claim_run(run_id, "claimant", 30)
        assert run_id in str(caught.value) and "holder" in str(caught.value)
        assert (await ops.get_run(run_id)).lease_owner == "holder"

    async def test_racing_claimant_never_sees_a_stale_checkpoint(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """A save by an owner whose lease just expired, racing a claim: either the save
        lands first and the claim returns it, or the save is refused. What a claim returns
        is always the run's latest checkpoint while the claimant holds the lease."""
        _require(ops.persistence, "supports_runs", "supports_cas", "supports_leases")
        _require(ops.persistence, "supports_history")
        holder, ttl = "owner-0", 0.02
        await self._leased_run(ops, run_id, flow_name, holder, saves=1, ttl=ttl)
        seq = 1
        for round_ in range(1, 21):
            await asyncio.sleep(ttl * 1.5)  # the holder's lease expires, it does not know
            claimant = f"owner-{round_}"

            async def late_save(delay: float, writer: str, expected: int) -> Any:
                # Started a little after the claim (a different delay each round), so
                # that it lands inside the claim for some round if the claim is not
                # atomic (e.g. reads the checkpoint before it takes the lease).
                await asyncio.sleep(delay)
                return await ops.in_thread(
                    "save_checkpoint",
                    run_id,
                    "late",
                    _state(run_id, n=expected + 1),
                    expected_seq=expected,
                    lease_owner=writer,
                )

            claim = ops.in_thread("claim_run", run_id, claimant, ttl)
            delay = (0.0, 0.0005, 0.001, 0.002, 0.004)[round_ % 5]
            outcome: tuple[Any, Any] = await asyncio.gather(
                late_save(delay, holder, seq), claim, return_exceptions=True
            )
            saved, claimed = outcome
            assert not isinstance(claimed, BaseException), claimed
            run, latest = claimed
            if isinstance(saved, BaseException):
                assert isinstance(saved, (LeaseLostError, RunLockedError)), saved
            assert latest is not None
            stored = await ops.load_checkpoint(run_id)
            assert (latest.seq, latest.state) == (stored.seq, stored.state)
            assert run.last_seq == latest.seq
            holder, seq = claimant, latest.seq

    async def test_dead_owner_is_taken_over_at_once(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """A lease held (ttl 60 s) by an owner whose process on this host was SIGKILLed is
        claimed at once; while that process lived the claim was refused."""
        _require(ops.persistence, "supports_runs", "supports_leases", "supports_history")
        await ops.create_run(run_id, flow_name)
        with _owner_process() as (child, owner):
            await ops.acquire_lease(run_id, owner, 60)
            with pytest.raises(RunLockedError, match=run_id):
                await ops.claim_run(run_id, "claimant", 30)
            child.kill()
            child.wait()
        run, _ = await ops.claim_run(run_id, "claimant", 30)
        assert run.lease_owner == "claimant"

    async def test_dead_owner_is_taken_over_by_acquire_lease(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """acquire_lease also takes a SIGKILLed owner's unexpired lease at once."""
        _require(ops.persistence, "supports_runs", "supports_leases")
        await ops.create_run(run_id, flow_name)
        with _owner_process() as (child, owner):
            await ops.acquire_lease(run_id, owner, 60)
            child.kill()
            child.wait()
        assert (await ops.acquire_lease(run_id, "claimant", 30)).lease_owner == "claimant"

    async def test_dead_owner_is_taken_over_by_begin_run(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """begin_run of an existing run also takes a SIGKILLed owner's unexpired lease at
        once and appends."""
        _require(ops.persistence, "supports_runs", "supports_cas", "supports_leases")
        await ops.create_run(run_id, flow_name)
        with _owner_process() as (child, owner):
            await ops.acquire_lease(run_id, owner, 60)
            child.kill()
            child.wait()
        run, saved = await ops.begin_run(
            run_id,
            flow_name,
            owner="claimant",
            ttl=30,
            method_name="kickoff",
            state=_state(run_id),
            expected_seq=0,
        )
        assert (run.lease_owner, saved.seq) == ("claimant", 1)

    async def test_former_owner_cannot_append_after_takeover(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """Fencing: once another owner took the run over (here after the lease expired),
        the former owner's saves are refused, with the right seq too, and nothing of
        theirs is stored."""
        _require(ops.persistence, "supports_runs", "supports_cas", "supports_leases")
        _require(ops.persistence, "supports_history")
        await self._leased_run(ops, run_id, flow_name, "former", saves=1, ttl=0.05)
        await asyncio.sleep(0.1)
        await ops.claim_run(run_id, "successor", 30)
        with pytest.raises((LeaseLostError, RunLockedError), match=run_id):
            await ops.save_checkpoint(
                run_id, "late", _state(run_id, n=2), expected_seq=1, lease_owner="former"
            )
        assert [c.seq for c in await ops.history(run_id)] == [1]

    async def test_free_lease_does_not_admit_a_former_owner(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """Fencing: after a takeover the new owner saved and gave the lease back; the
        former owner still cannot append (a free lease admits no owner but its holder's
        successor claiming it), and gets LeaseLostError."""
        _require(ops.persistence, "supports_runs", "supports_cas", "supports_leases")
        _require(ops.persistence, "supports_history")
        await self._leased_run(ops, run_id, flow_name, "former", saves=1, ttl=0.05)
        await asyncio.sleep(0.1)
        await ops.claim_run(run_id, "successor", 30)
        await ops.end_run(run_id, "done", _state(run_id, n=2), owner="successor", expected_seq=1)
        for expected in (1, 2, None):
            with pytest.raises(LeaseLostError, match="former"):
                await ops.save_checkpoint(
                    run_id, "late", _state(run_id), expected_seq=expected, lease_owner="former"
                )
        assert [c.seq for c in await ops.history(run_id)] == [1, 2]

    async def test_update_run_fenced_by_lease_owner(
        self, ops: Flavoured, run_id: str, flow_name: str
    ) -> None:
        """update_run(lease_owner=...) changes the run only while that owner holds the
        lease: another live owner's lease gives RunLockedError, a lease taken over (then
        given back) LeaseLostError, and nothing changes either way."""
        _require(ops.persistence, "supports_runs", "supports_leases")
        if not ops.persistence.fenced_update_run:
            pytest.skip("this backend's update_run takes no lease_owner")
        await ops.create_run(run_id, flow_name)
        await ops.acquire_lease(run_id, "former", 0.05)
        updated = await ops.update_run(run_id, info={"by": "former"}, lease_owner="former")
        assert updated.info == {"by": "former"}
        await asyncio.sleep(0.1)
        await ops.acquire_lease(run_id, "successor", 30)
        with pytest.raises(RunLockedError, match=run_id):
            await ops.update_run(run_id, status="failed", lease_owner="former")
        await ops.release_lease(run_id, "successor")
        with pytest.raises(LeaseLostError, match="former"):
            await ops.update_run(run_id, status="failed", info={}, lease_owner="former")
        run = await ops.get_run(run_id)
        assert (run.status, run.info) == ("running", {"by": "former"})
        with pytest.raises(RunNotFoundError):
            await ops.update_run(self._new_id(), status="failed", lease_owner="former")


def _dummy_call(op: str, run_id: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Arguments that are valid for ``op`` on a backend that has it."""
    if op in ("acquire_lease", "renew_lease"):
        return (run_id, "owner", 1.0), {}
    if op == "release_lease":
        return (run_id, "owner"), {}
    if op == "create_run":
        return (run_id, "Flow"), {}
    if op == "save_checkpoint":
        return (run_id, "method", {"id": run_id}), {"expected_seq": None}
    if op == "prune":
        return (run_id,), {"keep_last": 1}
    if op == "list_runs":
        return (), {}
    return (run_id,), {}


@contextlib.contextmanager
def _owner_process() -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A real process on this host and a lease owner id made in it (killed on exit)."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from flowkit.persistence._rules import new_owner; "
            "print(new_owner(), flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        yield child, child.stdout.readline().strip()
    finally:
        child.kill()
        child.wait()
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()
