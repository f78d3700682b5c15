"""A run's checkpoints: what they record besides the state (the execution position,
typed) and where they go (a :class:`Journal`: nowhere, a CrewAI-style backend, or a
durable one). One job: the runner's commit hands the state and a :class:`Position` to
the journal, which encodes both and writes them in one backend call.

A durable journal (a backend with runs, compare-and-set and history) records the
execution position with every checkpoint and holds a lease on the run while it executes,
so only one writer can ever append to it; the :class:`LeaseKeeper` thread renews it.

The position is stored in a checkpoint's ``meta`` (a JSON object), under keys written
since the first release, so every stored run stays readable:

* ``position``: the scheduler's snapshot (pending calls with the values they receive,
  ``and_`` progress, fired ``or_`` listeners, call counts, next call id), the ids of
  pending calls whose input could not be stored (``lost_payloads``), the last finished
  method and its output (``last``), the answers given to interrupts of pending calls
  (``answers``), and the failed attempts of pending calls that are being retried
  (``retries``: call id -> method, count, last error; written only when there are some);
* ``interrupt``: the interrupt the run is waiting on (method, call id, payload);
* ``retry``: only on the checkpoint written for a failed attempt: which call failed,
  its attempt number, the wait before the next one and the error (with traceback);
* ``state_version``: the state model's version (written by the journal).

:class:`Position` is the engine's decoded, validated form (``to_json`` / ``from_json``);
:class:`PositionSummary` is a lenient read of the stored form for display (the CLI),
which never decodes or decrypts anything; :class:`RunInfo` types the run's ``info``.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._codec_decode import decode
from ._codec_encode import encode
from .exceptions import (
    CorruptCheckpointError,
    LeaseLostError,
    PersistenceError,
    UnserializableStateError,
)
from .persistence._rules import new_owner

if TYPE_CHECKING:
    from ._secrets import SecretCipher as Cipher
    from ._state import StateAdapter
    from .persistence import FlowPersistence, RunRecord

__all__ = [
    "LEASES",
    "BasicJournal",
    "DurableJournal",
    "FailedAttempts",
    "Journal",
    "PendingInterrupt",
    "Position",
    "PositionSummary",
    "RunInfo",
    "new_owner",
]

log = logging.getLogger("flowkit")


# -- what a checkpoint records ---------------------------------------------------------


@dataclass
class PendingInterrupt:
    """The interrupt a paused run waits on: ``resume(run_id, value)`` answers it."""

    method: str
    task_id: int
    payload: Any

    def to_json(self) -> dict[str, Any]:
        # the payload is shown to whoever answers: stored without the secret cipher
        return {
            "method": self.method,
            "task_id": self.task_id,
            "payload": encode(self.payload, path="interrupt payload", cipher=None),
        }

    @classmethod
    def from_json(cls, data: Any, *, run_id: str, seq: int | None) -> PendingInterrupt:
        try:
            return cls(
                str(data["method"]),
                int(data["task_id"]),
                decode(data.get("payload"), cipher=None, run_id=run_id, seq=seq),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _corrupt("interrupt", exc, run_id, seq) from exc


@dataclass
class FailedAttempts:
    """The failed attempts so far of one pending method call under a retry policy."""

    method: str
    #: how many attempts failed (the next one is attempt ``count + 1``)
    count: int
    #: the last failure: ``{"method", "type", "message", "attempt", "attempts"}``
    error: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "count": self.count, "error": self.error}

    @classmethod
    def from_json(cls, data: Any) -> FailedAttempts:
        error = data.get("error")
        count = int(data["count"])
        if count < 0:
            raise ValueError(f"a negative count of failed attempts ({count})")
        return cls(str(data["method"]), count, error if isinstance(error, dict) else {})


@dataclass
class Position:
    """Where a run stands after a checkpoint, with Python values (decoded)."""

    #: :meth:`Scheduler.snapshot` output; pending payloads are Python values
    scheduler: dict[str, Any]
    last: tuple[str, Any] | None = None
    answers: dict[int, list[Any]] = field(default_factory=dict)
    #: pending calls whose input could not be stored (they cannot take it on resume)
    lost_payloads: frozenset[int] = frozenset()
    interrupt: PendingInterrupt | None = None
    #: failed attempts of pending calls, by call id (the retry counters)
    retries: dict[int, FailedAttempts] = field(default_factory=dict)
    #: on the checkpoint written for a failed attempt: ``{"method", "task_id",
    #: "attempt", "attempts", "delay", "error"}`` (the error with its traceback)
    retry: dict[str, Any] | None = None

    def to_json(self, cipher: Any) -> dict[str, Any]:
        """The ``meta`` entries this position is stored as (``position``, ``interrupt``).

        A pending payload or last output that cannot be stored is recorded as lost
        rather than failing the checkpoint; the state itself must be storable."""
        snap = dict(self.scheduler)
        pending = []
        lost = set(self.lost_payloads)
        for item in snap["pending"]:
            item = dict(item)
            try:
                item["payload"] = encode(
                    item["payload"], path=f"payload of {item['method']}", cipher=cipher
                )
            except UnserializableStateError:
                item["payload"] = None
                lost.add(item["id"])
            pending.append(item)
        snap["pending"] = pending
        if snap.get("trigger_payload") is not None:
            snap["trigger_payload"] = encode(
                snap["trigger_payload"], path="inputs.crewai_trigger_payload", cipher=cipher
            )
        snap["lost_payloads"] = sorted(lost)
        if self.last is not None:
            method, output = self.last
            try:
                snap["last"] = {
                    "method": method,
                    "output": encode(output, path="output", cipher=cipher),
                }
            except UnserializableStateError:
                snap["last"] = {"method": method, "output": None, "lost": True}
        snap["answers"] = {
            str(k): encode(v, path="answer", cipher=cipher) for k, v in self.answers.items()
        }
        if self.retries:
            snap["retries"] = {str(k): v.to_json() for k, v in sorted(self.retries.items())}
        meta: dict[str, Any] = {"position": snap}
        if self.interrupt is not None:
            meta["interrupt"] = self.interrupt.to_json()
        if self.retry is not None:
            meta["retry"] = self.retry
        return meta

    @classmethod
    def from_json(
        cls, meta: dict[str, Any], cipher: Any, *, run_id: str, seq: int | None
    ) -> Position | None:
        """The position stored in checkpoint ``meta``; None for a checkpoint written by
        plain ``save_state`` (no position). Malformed data is a CorruptCheckpointError."""
        data = meta.get("position")
        if data is None:
            return None
        try:
            snap = dict(data)
            lost = frozenset(int(i) for i in snap.pop("lost_payloads", ()))
            pending = []
            for item in snap["pending"]:
                item = dict(item)
                if int(item["id"]) in lost:
                    item["payload"] = None
                else:
                    item["payload"] = decode(
                        item.get("payload"), cipher=cipher, run_id=run_id, seq=seq
                    )
                pending.append(item)
            snap["pending"] = pending
            if snap.get("trigger_payload") is not None:
                snap["trigger_payload"] = decode(
                    snap["trigger_payload"], cipher=cipher, run_id=run_id, seq=seq
                )
            raw_last = snap.pop("last", None)
            last = None
            if isinstance(raw_last, dict):
                last = (
                    str(raw_last["method"]),
                    decode(raw_last.get("output"), cipher=cipher, run_id=run_id, seq=seq),
                )
            answers = {
                int(k): list(decode(v, cipher=cipher, run_id=run_id, seq=seq))
                for k, v in snap.pop("answers", {}).items()
            }
            retries = {
                int(k): FailedAttempts.from_json(v) for k, v in snap.pop("retries", {}).items()
            }
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _corrupt("execution position", exc, run_id, seq) from exc
        raw_interrupt = meta.get("interrupt")
        interrupt = (
            PendingInterrupt.from_json(raw_interrupt, run_id=run_id, seq=seq)
            if raw_interrupt is not None
            else None
        )
        return cls(snap, last, answers, lost, interrupt, retries)


@dataclass
class PositionSummary:
    """A lenient, display-only read of a stored position: stored forms, nothing decoded,
    anything malformed left out rather than raised."""

    #: ``{"id", "method", "trigger"}`` of each pending call
    pending: list[dict[str, Any]]
    calls: dict[str, Any]
    last_method: str | None
    #: the last output in its stored form
    last_output: Any
    #: ``{"method", "task_id", "payload"}`` in stored form, when the run waits on one
    interrupt: dict[str, Any] | None
    #: call id (as stored: a string) -> ``{"method", "count", "error"}`` of pending calls
    #: with failed attempts
    retries: dict[str, Any] = field(default_factory=dict)
    #: the failed attempt this checkpoint was written for (see :class:`Position`)
    retry: dict[str, Any] | None = None

    @classmethod
    def read(cls, meta: dict[str, Any]) -> PositionSummary | None:
        """None when the checkpoint has no position (written by plain ``save_state``)."""
        data = meta.get("position")
        if not isinstance(data, dict):
            return None
        raw_pending = data.get("pending")
        pending = [
            {"id": item.get("id"), "method": item.get("method"), "trigger": item.get("trigger")}
            for item in (raw_pending if isinstance(raw_pending, list) else [])
            if isinstance(item, dict)
        ]
        calls = data.get("calls")
        last = data.get("last")
        interrupt = meta.get("interrupt")
        retries = data.get("retries")
        retry = meta.get("retry")
        return cls(
            pending,
            calls if isinstance(calls, dict) else {},
            last.get("method") if isinstance(last, dict) else None,
            last.get("output") if isinstance(last, dict) else None,
            interrupt if isinstance(interrupt, dict) else None,
            {str(k): v for k, v in retries.items() if isinstance(v, dict)}
            if isinstance(retries, dict)
            else {},
            retry if isinstance(retry, dict) else None,
        )


@dataclass
class RunInfo:
    """The run's stored ``info`` object, typed: the flow's wiring when it last ran
    (``definition``, for "what changed" on resume) and the error that failed it."""

    definition: dict[str, Any] | None = None
    #: the exception that failed the run: ``{"method", "type", "message", "attempt",
    #: "attempts", "traceback"}`` (the last three since retries; older runs lack them)
    error: dict[str, Any] | None = None
    #: keys this version does not know, kept as stored
    other: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = dict(self.other)
        if self.definition is not None:
            data["definition"] = self.definition
        if self.error is not None:
            data["error"] = self.error
        return data

    @classmethod
    def from_json(cls, data: Any) -> RunInfo:
        if not isinstance(data, dict):
            return cls()
        other = {k: v for k, v in data.items() if k not in ("definition", "error")}
        definition = data.get("definition")
        error = data.get("error")
        return cls(
            definition if isinstance(definition, dict) else None,
            error if isinstance(error, dict) else None,
            other,
        )


def _corrupt(what: str, exc: Exception, run_id: str, seq: int | None) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        f"the {what} stored in run {run_id!r} checkpoint {seq} cannot be read ({exc!r}); "
        "start a new run or fork from an earlier checkpoint.",
        run_id=run_id,
        seq=seq,
    )


# -- where checkpoints go --------------------------------------------------------------


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


# -- the leases that guard the writes --------------------------------------------------


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
