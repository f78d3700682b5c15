"""claim_run and dead-owner takeover on the memory and file backends (one algorithm,
both stores). Dead owners are owner ids of real processes that have exited."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from flowkit.exceptions import (
    CorruptCheckpointError,
    FlowkitError,
    RunLockedError,
    RunNotFoundError,
)
from flowkit.persistence import FileFlowPersistence, InMemoryFlowPersistence
from flowkit.persistence._rules import new_owner, owner_is_dead
from flowkit.persistence._store_backend import StoreBackend

FLOW = "ClaimFlow"


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreBackend:
    if request.param == "memory":
        return InMemoryFlowPersistence()
    return FileFlowPersistence(tmp_path / "runs")


@pytest.fixture
def run_id() -> str:
    return f"claim-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def dead_owner() -> str:
    """The owner id of a process of this host that has exited."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from flowkit.persistence._rules import new_owner; print(new_owner())",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    owner = done.stdout.strip()
    assert owner_is_dead(owner)
    return owner


def _two_checkpoints(store: StoreBackend, run_id: str) -> None:
    store.create_run(run_id, FLOW)
    store.save_checkpoint(run_id, "a", {"id": run_id, "n": 1}, expected_seq=0)
    store.save_checkpoint(run_id, "b", {"id": run_id, "n": 2}, expected_seq=1)


def test_claim_returns_leased_run_and_latest_checkpoint(store: StoreBackend, run_id: str) -> None:
    """claim_run takes the lease and returns the run with it and the latest checkpoint."""
    _two_checkpoints(store, run_id)
    owner = new_owner()
    run, latest = store.claim_run(run_id, owner, 30)
    assert (run.lease_owner, run.last_seq) == (owner, 2)
    assert run.lease_expires_at is not None and run.lease_expires_at > run.updated_at
    assert latest is not None and (latest.seq, latest.state) == (2, {"id": run_id, "n": 2})
    assert store.get_run(run_id).lease_owner == owner  # type: ignore[union-attr]


def test_claim_of_run_without_checkpoints_returns_none(store: StoreBackend, run_id: str) -> None:
    """A run with no checkpoint yet is claimed with None as its latest checkpoint."""
    store.create_run(run_id, FLOW)
    run, latest = store.claim_run(run_id, "me", 30)
    assert (run.lease_owner, latest) == ("me", None)


def test_claim_of_unknown_run_raises(store: StoreBackend, run_id: str) -> None:
    """claim_run on an unknown id raises RunNotFoundError naming it, storing nothing."""
    with pytest.raises(RunNotFoundError, match=run_id):
        store.claim_run(run_id, "me", 30)
    assert store.get_run(run_id) is None
    assert store.list_runs() == []


def test_claim_refused_while_a_live_owner_holds_the_lease(store: StoreBackend, run_id: str) -> None:
    """A live owner's unexpired lease refuses the claim with RunLockedError naming the
    run, the holder and the expiry; the lease stays the holder's."""
    _two_checkpoints(store, run_id)
    holder = new_owner()  # this very process: alive
    held = store.acquire_lease(run_id, holder, 60)
    with pytest.raises(RunLockedError) as caught:
        store.claim_run(run_id, new_owner(), 30)
    message = str(caught.value)
    assert run_id in message and holder in message
    assert held.lease_expires_at is not None
    assert held.lease_expires_at.isoformat() in message
    assert store.get_run(run_id).lease_owner == holder  # type: ignore[union-attr]


def test_claim_by_the_holder_extends_its_lease(store: StoreBackend, run_id: str) -> None:
    """The holder may claim again; its expiry moves forward."""
    _two_checkpoints(store, run_id)
    first, _ = store.claim_run(run_id, "me", 10)
    second, _ = store.claim_run(run_id, "me", 100)
    assert second.lease_expires_at > first.lease_expires_at  # type: ignore[operator]


def test_claim_takes_an_expired_lease(store: StoreBackend, run_id: str) -> None:
    """An expired lease of a live (or unknown) owner can be claimed."""
    import time

    _two_checkpoints(store, run_id)
    store.acquire_lease(run_id, "someone-else", 0.05)
    time.sleep(0.1)
    run, _ = store.claim_run(run_id, "me", 30)
    assert run.lease_owner == "me"


def test_claim_takes_over_a_dead_owners_live_lease(
    store: StoreBackend, run_id: str, dead_owner: str
) -> None:
    """A lease whose owner process on this host is gone is claimed at once, long before
    it expires."""
    _two_checkpoints(store, run_id)
    store.acquire_lease(run_id, dead_owner, 3600)
    run, latest = store.claim_run(run_id, "me", 30)
    assert run.lease_owner == "me" and latest is not None and latest.seq == 2


def test_acquire_lease_takes_over_a_dead_owner(
    store: StoreBackend, run_id: str, dead_owner: str
) -> None:
    """acquire_lease takes a dead owner's unexpired lease."""
    store.create_run(run_id, FLOW)
    store.acquire_lease(run_id, dead_owner, 3600)
    assert store.acquire_lease(run_id, "me", 30).lease_owner == "me"


def test_begin_run_takes_over_a_dead_owner(
    store: StoreBackend, run_id: str, dead_owner: str
) -> None:
    """begin_run takes a dead owner's unexpired lease and appends its checkpoint."""
    _two_checkpoints(store, run_id)
    store.acquire_lease(run_id, dead_owner, 3600)
    run, saved = store.begin_run(
        run_id,
        FLOW,
        owner="me",
        ttl=30,
        method_name="kickoff",
        state={"id": run_id, "n": 3},
        expected_seq=2,
    )
    assert (run.lease_owner, saved.seq) == ("me", 3)


def test_owner_on_another_host_is_not_taken_over(store: StoreBackend, run_id: str) -> None:
    """An owner of another host is never declared dead here: its live lease holds."""
    store.create_run(run_id, FLOW)
    stranger = "some-other-host.example:4242:123:abcd"
    store.acquire_lease(run_id, stranger, 3600)
    with pytest.raises(RunLockedError, match="some-other-host"):
        store.claim_run(run_id, "me", 30)


def test_claim_needs_a_positive_ttl(store: StoreBackend, run_id: str) -> None:
    """claim_run with ttl <= 0 raises a FlowkitError naming ttl and takes no lease."""
    store.create_run(run_id, FLOW)
    with pytest.raises(FlowkitError, match="ttl"):
        store.claim_run(run_id, "me", 0)
    assert store.get_run(run_id).lease_owner is None  # type: ignore[union-attr]


def test_claim_of_a_damaged_latest_takes_no_lease(store: StoreBackend, run_id: str) -> None:
    """When the latest checkpoint cannot be read back, claim_run raises
    CorruptCheckpointError naming the run and seq, and leaves the lease free."""
    _two_checkpoints(store, run_id)
    if isinstance(store, FileFlowPersistence):
        (store._run_dir(run_id) / "000000000002.json").write_text("{", encoding="utf-8")
    else:
        assert isinstance(store, InMemoryFlowPersistence)
        stored = store._store.checkpoints[run_id][2]
        store._store.checkpoints[run_id][2] = type(stored)("b", "{", "{}", 0.0, frozenset())
    with pytest.raises(CorruptCheckpointError, match=run_id) as caught:
        store.claim_run(run_id, "me", 30)
    assert caught.value.seq == 2
    assert store.get_run(run_id).lease_owner is None  # type: ignore[union-attr]


async def test_aclaim_run_is_the_awaitable_claim(store: StoreBackend, run_id: str) -> None:
    """await aclaim_run(...) claims like claim_run."""
    _two_checkpoints(store, run_id)
    run, latest = await store.aclaim_run(run_id, "me", 30)
    assert run.lease_owner == "me" and latest is not None and latest.seq == 2
