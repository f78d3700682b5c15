"""Where a run's checkpoints go: nowhere, a CrewAI-style backend, or a durable one.

A durable journal (a backend with runs, compare-and-set and history) records the
execution position with every checkpoint and holds a lease on the run while it executes,
so only one writer can ever append to it.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._codec_encode import encode
from ._position import RunInfo
from .exceptions import LeaseLostError, PersistenceError
from .persistence._owner import new_owner

if TYPE_CHECKING:
    from ._position import Position
    from ._secrets import SecretCipher as Cipher
    from ._state import StateAdapter
    from .persistence import FlowPersistence, RunRecord

__all__ = ["BasicJournal", "DurableJournal", "Journal", "new_owner"]

log = logging.getLogger("flowkit")


class Journal:
    """No persistence: nothing is stored."""

    durable = False

    def wants(self, method: str) -> bool:
        """Whether a checkpoint follows ``method`` (never, without persistence)."""
        return False

    async def checkpoint(self, method: str, state: Any, position: Position, status: str) -> None:
        return None

    async def set_status(self, status: str, error: dict[str, Any] | None = None) -> None:
        return None

    async def close(self) -> None:
        return None

    def committed_state(self) -> Any:
        """The state of the last checkpoint, decoded (None if nothing was stored)."""
        return None


@dataclass
class _EncodeCtx:
    adapter: StateAdapter
    cipher: Cipher | None


class BasicJournal(Journal):
    """A backend with only ``save_state`` / ``load_state`` (e.g. a CrewAI-style class)."""

    def __init__(
        self,
        backend: FlowPersistence,
        run_id: str,
        adapter: StateAdapter,
        cipher: Cipher | None,
        *,
        persist_all: bool,
        methods: Iterable[str],
        verbose: bool,
    ) -> None:
        self.persist_all = persist_all
        self.methods = frozenset(methods)
        self.backend = backend
        self.run_id = run_id
        self.adapter = adapter
        self.cipher = cipher
        self.verbose = verbose
        #: the last state stored, encoded (what an interrupted method rolls back to)
        self.committed: dict[str, Any] | None = None

    def wants(self, method: str) -> bool:
        return self.persist_all or method in self.methods

    def committed_state(self) -> Any:
        if self.committed is None:
            return None
        from ._codec_decode import decode

        data = decode(self.committed, cipher=self.cipher, run_id=self.run_id, seq=None)
        # encoded by this very code: already at the current version, nothing to migrate
        return self.adapter.load(data, version=self.adapter.version, run_id=self.run_id, seq=None)

    def encode_state(self, state: Any) -> dict[str, Any]:
        data: dict[str, Any] = encode(
            self.adapter.dump_for_codec(state), path="state", cipher=self.cipher
        )
        return data

    async def checkpoint(self, method: str, state: Any, position: Position, status: str) -> None:
        data = self.encode_state(state)
        await self.backend.asave_state(self.run_id, method, data)
        self.committed = data
        if self.verbose:
            log.info("flowkit: saved state of run %s after %s", self.run_id, method)


class DurableJournal(BasicJournal):
    """Checkpoints with position, compare-and-set on ``seq`` and a lease on the run."""

    durable = True

    def __init__(
        self,
        backend: FlowPersistence,
        run_id: str,
        adapter: StateAdapter,
        cipher: Cipher | None,
        *,
        persist_all: bool,
        methods: Iterable[str],
        verbose: bool,
        seq: int,
        owner: str | None,
        ttl: float = 30.0,
    ) -> None:
        super().__init__(
            backend,
            run_id,
            adapter,
            cipher,
            persist_all=persist_all,
            methods=methods,
            verbose=verbose,
        )
        self.seq = seq
        self.owner = owner
        #: the lease's ttl (the flow's lease_ttl)
        self.ttl = ttl
        #: True once a final checkpoint (end_run) gave the lease back
        self.released = False
        #: the run's stored info; a status update with an error writes it back whole
        #: (update_run replaces info, and it holds the flow definition)
        self.run_info = RunInfo()

    def _meta(self, position: Position) -> dict[str, Any]:
        meta = position.to_json(self.cipher)
        meta["state_version"] = self.adapter.version
        return meta

    async def begin(
        self,
        method: str,
        state: Any,
        position: Position,
        *,
        flow_name: str,
        fingerprint: str,
        info: dict[str, Any],
        ttl: float,
    ) -> RunRecord:
        """The kickoff checkpoint, in one backend call with creating the run (if missing)
        and taking the lease; the lease keeper takes over the lease once it is held."""
        data = self.encode_state(state)
        asked = time.monotonic()
        run, record = await self.backend.abegin_run(
            self.run_id,
            flow_name,
            owner=self.owner,
            ttl=ttl if self.owner is not None else None,
            fingerprint=fingerprint,
            info=info,
            method_name=method,
            state=data,
            meta=self._meta(position),
            expected_seq=self.seq,
        )
        if self.owner is not None and time.monotonic() - asked > ttl / 2:
            # A late answer: the lease may have expired and the run been taken since
            # (see take_lease); renewing once is fenced.
            await self.backend.arenew_lease(self.run_id, self.owner, ttl)
        if self.owner is not None:
            LEASES.keep(self.backend, self.run_id, self.owner, ttl)
        self.seq = record.seq
        self.committed = data
        if self.verbose:
            log.info("flowkit: run %s checkpoint %d after %s", self.run_id, record.seq, method)
        return run

    async def checkpoint(self, method: str, state: Any, position: Position, status: str) -> None:
        data = self.encode_state(state)
        meta = self._meta(position)
        if status != "running" and self.owner is not None and not self.released:
            # The execution's last checkpoint (completed, or paused by an interrupt): it
            # gives the lease back in the same transaction. The keeper stops first; if
            # the save fails, close() still releases.
            LEASES.forget(self.backend, self.run_id, self.owner)
            record = await self.backend.aend_run(
                self.run_id,
                method,
                data,
                owner=self.owner,
                expected_seq=self.seq,
                meta=meta,
                status=status,
            )
            self.released = True
        else:
            record = await self.backend.asave_checkpoint(
                self.run_id,
                method,
                data,
                expected_seq=self.seq,
                meta=meta,
                status=status,
                lease_owner=self.owner,
            )
        self.seq = record.seq
        self.committed = data
        if self.verbose:
            log.info("flowkit: run %s checkpoint %d after %s", self.run_id, record.seq, method)

    async def set_status(self, status: str, error: dict[str, Any] | None = None) -> None:
        info = None
        if error is not None:
            self.run_info.error = error
            info = self.run_info.to_json()
        if self.owner is not None and not self.released:
            if self.backend.fenced_update_run:
                # Fenced in the update itself: an owner thawed after a takeover gets
                # LeaseLostError (or RunLockedError) and changes nothing.
                await self.backend.aupdate_run(
                    self.run_id, status=status, info=info, lease_owner=self.owner
                )
                return
            # A backend whose update_run is not fenced: renewing first raises
            # LeaseLostError (or RunLockedError) when the lease is no longer ours, and
            # pushes its expiry a whole ttl ahead, so no live claimant can take the run
            # before the update below lands.
            await self.backend.arenew_lease(self.run_id, self.owner, self.ttl)
        await self.backend.aupdate_run(self.run_id, status=status, info=info)

    async def close(self) -> None:
        if self.owner is not None and not self.released:
            LEASES.forget(self.backend, self.run_id, self.owner)
            await self.backend.arelease_lease(self.run_id, self.owner)
            self.released = True


@dataclass
class _Lease:
    backend: weakref.ref[Any]
    run_id: str
    owner: str
    ttl: float
    due: float
    lost: bool = False


@dataclass
class LeaseKeeper:
    """One daemon thread renews every lease this process holds, at a third of its ttl.

    A thread (not an asyncio task) so that a long synchronous method blocking the event
    loop does not let the lease expire under it.
    """

    leases: dict[tuple[int, str, str], _Lease] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    wake: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    #: when the sleeping keeper looks again by itself (monotonic); a new lease due
    #: earlier wakes it, a later one waits for that look -- so a kickoff does not have to
    #: wake the thread (a thread switch) just to register a lease due in ttl / 3
    wakes_at: float = float("-inf")
    #: the longest the keeper sleeps, also with no lease to renew
    idle_look: float = 1.0

    def keep(self, backend: FlowPersistence, run_id: str, owner: str, ttl: float) -> None:
        due = time.monotonic() + ttl / 3
        with self.lock:
            self.leases[(id(backend), run_id, owner)] = _Lease(
                weakref.ref(backend), run_id, owner, ttl, due
            )
            if self.thread is None or not self.thread.is_alive():
                self.wakes_at = float("-inf")
                self.thread = threading.Thread(
                    target=self._loop, name="flowkit-leases", daemon=True
                )
                self.thread.start()
            elif due < self.wakes_at:
                self.wake.set()

    def forget(self, backend: FlowPersistence, run_id: str, owner: str) -> None:
        with self.lock:
            self.leases.pop((id(backend), run_id, owner), None)

    def _loop(self) -> None:
        while True:
            with self.lock:
                now = time.monotonic()
                due = [lease for lease in self.leases.values() if lease.due <= now]
                if not due:
                    # Nothing to renew: sleep until the next lease is due (at most
                    # idle_look). Cleared under the lock, so a keep() after this wakes us.
                    nxt = min((lease.due for lease in self.leases.values()), default=None)
                    timeout = self.idle_look if nxt is None else min(nxt - now, self.idle_look)
                    self.wakes_at = now + timeout
                    self.wake.clear()
            if not due:
                self.wake.wait(timeout)
                continue
            for lease in due:
                backend = lease.backend()
                if backend is None:
                    self.forget_key(lease)
                    continue
                try:
                    backend.renew_lease(lease.run_id, lease.owner, lease.ttl)
                    lease.due = time.monotonic() + lease.ttl / 3
                except LeaseLostError:
                    lease.lost = True
                    self.forget_key(lease)
                except PersistenceError:  # transient storage trouble: retry soon
                    lease.due = time.monotonic() + min(1.0, lease.ttl / 10)
                except Exception:  # never let the keeper thread die
                    log.exception("flowkit: renewing the lease on run %s failed", lease.run_id)
                    lease.due = time.monotonic() + min(1.0, lease.ttl / 10)

    def forget_key(self, lease: _Lease) -> None:
        with self.lock:
            for key, value in list(self.leases.items()):
                if value is lease:
                    del self.leases[key]


LEASES = LeaseKeeper()
