"""How a flow runs against its persistence: kickoff, resume and fork.

Loaded on the first kickoff, not at ``import flowkit``: it pulls in asyncio, the runner
and the journal. :class:`Flow` delegates here; the runner drives the scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import TYPE_CHECKING, Any

from ._flow import MISSING
from ._graph import TRIGGER_PAYLOAD, diff_definitions
from ._journal import (
    LEASES,
    BasicJournal,
    DurableJournal,
    Journal,
    Position,
    PositionSummary,
    RunInfo,
    new_owner,
)
from ._persist import PERSIST_ATTR, PersistConfig, default_persistence
from ._runner import Run
from ._scheduler import Scheduler
from .exceptions import (
    ConcurrentUpdateError,
    CorruptCheckpointError,
    DefinitionChangedError,
    FlowConfigurationError,
    FlowDefinitionError,
    FlowkitError,
    ResumeError,
    RunExistsError,
    RunLockedError,
    RunNotFoundError,
    UnsupportedOperationError,
)
from .persistence._metadata import INFO_KEY as METADATA_KEY
from .persistence._metadata import json_equal, metadata_of

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._flow import Flow
    from .persistence import Checkpoint, FlowPersistence, RunRecord


class _Plan:
    """How one flow class persists: backend, and after which methods."""

    def __init__(self, cls: type[Flow[Any]]) -> None:
        class_cfg: PersistConfig | None = getattr(cls, PERSIST_ATTR, None)
        method_cfgs = {
            name: cfg
            for name in cls._graph.nodes
            if isinstance(cfg := getattr(getattr(cls, name), PERSIST_ATTR, None), PersistConfig)
        }
        backends = {id(c.backend): c.backend for c in method_cfgs.values()}
        if len(backends) > 1:
            raise FlowDefinitionError(
                f"{cls._graph.flow_name}: methods {sorted(method_cfgs)} use different @persist "
                "backends; one run is stored in one place. Use one backend (or put @persist "
                "on the class)."
            )
        self.class_cfg = class_cfg
        self.method_cfgs = method_cfgs
        self.methods = frozenset(method_cfgs)
        self.verbose = bool(
            (class_cfg and class_cfg.verbose) or any(c.verbose for c in method_cfgs.values())
        )
        keys = [c.secret_key for c in (class_cfg, *method_cfgs.values()) if c is not None]
        self.secret_key = next((k for k in keys if k is not None), None)

    def backend(self, override: FlowPersistence | None) -> FlowPersistence | None:
        if override is not None:
            return override
        # `is None`, not `or`: a backend object that is falsy (e.g. defines __len__)
        # is still the one the user chose
        if self.class_cfg is not None:
            chosen = self.class_cfg.backend
            return default_persistence() if chosen is None else chosen
        if self.method_cfgs:
            chosen = next(iter(self.method_cfgs.values())).backend
            return default_persistence() if chosen is None else chosen
        return None

    def persist_all(self, override: FlowPersistence | None) -> bool:
        return self.class_cfg is not None or (override is not None and not self.method_cfgs)


def _is_durable(backend: FlowPersistence) -> bool:
    return bool(backend.supports_runs and backend.supports_cas and backend.supports_history)


def durable_backend(flow: Flow[Any], operation: str) -> FlowPersistence:
    backend = flow._backend()
    if backend is None:
        raise FlowConfigurationError(
            f"{type(flow).__qualname__}.{operation}() needs persistence: add @persist to "
            "the class (or a method), or pass Flow(persistence=...)."
        )
    if not _is_durable(backend):
        missing = [
            f
            for f, ok in (
                ("supports_runs", backend.supports_runs),
                ("supports_cas", backend.supports_cas),
                ("supports_history", backend.supports_history),
            )
            if not ok
        ]
        raise UnsupportedOperationError(
            f"{type(flow).__qualname__}.{operation}() needs a backend with runs, history "
            f"and compare-and-set; {type(backend).__name__} lacks {missing}. Use a built-in "
            "backend or implement those operations."
        )
    return backend


def load_state(
    flow: Flow[Any], data: Any, version: int | None, run_id: str, seq: int | None
) -> Any:
    from ._codec import decode

    cipher = flow._cipher()
    return flow._adapter.load(
        decode(data, cipher=cipher, run_id=run_id, seq=seq),
        version=version,
        run_id=run_id,
        seq=seq,
    )


def check_run(flow: Flow[Any], run: Any, run_id: str, operation: str) -> None:
    # A run written through plain save_state() has no flow name: any flow may adopt it.
    if run.flow_name is not None and run.flow_name != flow._graph.flow_name:
        raise ResumeError(
            f"run {run_id!r} belongs to flow {run.flow_name!r}, not "
            f"{flow._graph.flow_name!r}; {operation} it with that flow class."
        )


async def fork(
    flow: Flow[Any],
    run_id: str,
    seq: int,
    *,
    new_run_id: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> str:
    """Start a new run from checkpoint ``seq`` of ``run_id`` (see :meth:`Flow.fork`);
    ``metadata`` is already checked (``checked_metadata``)."""
    backend = durable_backend(flow, "fork")
    run = await backend.aget_run(run_id)
    if run is None:
        raise RunNotFoundError(f"cannot fork: no run {run_id!r} in {type(backend).__name__}.")
    check_run(flow, run, run_id, "fork")
    # A stored checkpoint never changes, so reading it needs no lease.
    cp = await backend.aload_checkpoint(run_id, seq)
    if cp is None:
        raise RunNotFoundError(
            f"cannot fork: run {run_id!r} has no checkpoint {seq} (it has 1..{run.last_seq}"
            ", minus pruned ones); see its history."
        )
    child = new_run_id or str(uuid.uuid4())
    state = dict(cp.state)
    state["id"] = child
    meta = dict(cp.meta)
    position = meta.get("position") or {}
    if not isinstance(position, dict):
        raise CorruptCheckpointError(
            f"cannot fork: checkpoint {seq} of run {run_id!r} stores an execution position "
            f"that is not an object ({position!r:.60}); fork another checkpoint.",
            run_id=run_id,
            seq=seq,
        )
    # A fork is a new run: its retried methods start a fresh count, and its first
    # checkpoint is not a failed attempt.
    meta.pop("retry", None)
    if "retries" in position:
        meta["position"] = {k: v for k, v in position.items() if k != "retries"}
    summary = PositionSummary.read(meta)
    if summary is None:
        status = "completed"
    elif summary.interrupt is not None:
        status = "interrupted"
    else:
        status = "running" if summary.pending else "completed"
    info = RunInfo(definition=RunInfo.from_json(run.info).definition).to_json()
    # The fork keeps the parent's labels (a tenant's run forks into the tenant's run);
    # the caller's metadata is merged over them, its keys winning.
    labels = {**run.metadata, **(metadata or {})}
    if labels:
        info["metadata"] = labels
    await backend.acreate_run(
        child,
        flow._graph.flow_name,
        parent_run_id=run_id,
        parent_seq=seq,
        fingerprint=run.fingerprint,
        info=info,
    )
    if not backend.supports_leases:
        await backend.asave_checkpoint(
            child, cp.method_name, state, expected_seq=0, meta=meta, status=status
        )
        return child
    # The first write is made under the child's lease (claimed, then given back with the
    # write), like any other execution's.
    owner, _claimed, _latest = await take_lease(flow, backend, child, keep=False)
    assert owner is not None
    try:
        await backend.aend_run(
            child, cp.method_name, state, owner=owner, expected_seq=0, meta=meta, status=status
        )
    except BaseException:
        await _give_back(backend, child, owner)
        raise
    return child


async def prepare_waiting(flow: Flow[Any], prepare: Callable[[], Awaitable[Run]]) -> Run:
    """``prepare()``, retried for up to ``flow.lease_wait`` seconds while another owner
    executes the run. Each try reloads the run, so the state it starts from is the one
    the other writer left."""
    deadline = time.monotonic() + flow.lease_wait
    pause = 0.05
    while True:
        try:
            return await prepare()
        except (RunLockedError, ConcurrentUpdateError):
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 1.0)


def make_journal(
    flow: Flow[Any],
    backend: FlowPersistence | None,
    run_id: str,
    seq: int,
    owner: str | None,
    cipher: Any,
) -> Journal:
    if backend is None:
        return Journal()
    plan = type(flow)._plan()
    persist_all = plan.persist_all(flow._persistence)
    if _is_durable(backend):
        return DurableJournal(
            backend,
            run_id,
            flow._adapter,
            cipher,
            persist_all=persist_all,
            methods=plan.methods,
            verbose=plan.verbose,
            seq=seq,
            owner=owner,
            ttl=flow.lease_ttl,
        )
    return BasicJournal(
        backend,
        run_id,
        flow._adapter,
        cipher,
        persist_all=persist_all,
        methods=plan.methods,
        verbose=plan.verbose,
    )


async def take_lease(
    flow: Flow[Any], backend: FlowPersistence, run_id: str, *, keep: bool = True
) -> tuple[str | None, RunRecord | None, Checkpoint | None]:
    """Claim the run (lease, record and latest checkpoint in one backend call): the owner,
    the record and the checkpoint, or ``(None, None, None)`` for a backend without leases.
    With ``keep`` the lease keeper renews the lease until the journal gives it back."""
    if not backend.supports_leases:
        return None, None, None
    owner = new_owner()
    asked = time.monotonic()
    run, latest = await backend.aclaim_run(run_id, owner, flow.lease_ttl)
    if time.monotonic() - asked > flow.lease_ttl / 2:
        # The answer came late (slow storage): the lease may have expired and another
        # process may have claimed the run and committed steps since. Renewing is fenced
        # (LeaseLostError if the lease is not ours any more); if it is still ours, nobody
        # else has written, so the claimed checkpoint is still the latest. One renewal
        # (not a loop: a ttl shorter than the storage's latency must not spin).
        await backend.arenew_lease(run_id, owner, flow.lease_ttl)
    if keep:
        LEASES.keep(backend, run_id, owner, flow.lease_ttl)
    return owner, run, latest


async def _give_back(backend: FlowPersistence, run_id: str, owner: str) -> None:
    """Release a claimed lease the engine will not execute under (refused or failed)."""
    LEASES.forget(backend, run_id, owner)
    with contextlib.suppress(FlowkitError):  # the original error matters more
        await backend.arelease_lease(run_id, owner)


async def prepare_kickoff(
    flow: Flow[Any],
    inputs: dict[str, Any],
    shown: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Run:
    """A new execution from the flow's starts: the flow's state (or, with
    ``inputs["id"]`` and persistence, the latest stored state of that run, read under
    its lease) with ``inputs`` applied. ``shown``: the inputs as FlowStarted shows them.
    ``metadata`` (checked): stored with a new run in the same write that creates it."""
    backend = flow._backend()
    run_id = inputs.get("id")
    if run_id is not None and not isinstance(run_id, str):
        raise FlowConfigurationError(
            f"kickoff(inputs={{'id': {run_id!r}}}): a run id is a string (e.g. a UUID)."
        )
    state = flow._state  # a second kickoff of one flow object goes on from its state
    seq = 0
    run = None
    owner = None
    durable = backend is not None and _is_durable(backend)
    definition = dict(flow._graph.definition) if durable else {}
    try:
        if backend is not None and run_id is not None:
            if durable and backend.supports_leases:
                # An existing run is claimed: what this kickoff starts from is read under
                # its lease, so no other owner can advance it in between.
                try:
                    owner, run, cp = await take_lease(flow, backend, run_id, keep=False)
                except RunNotFoundError:
                    cp = None  # a new run: begin_run creates it, leased
                if run is not None:
                    check_run(flow, run, run_id, "kick off")
                if cp is not None:
                    state = load_state(flow, cp.state, cp.meta.get("state_version"), run_id, cp.seq)
            elif durable:
                run = await backend.aget_run(run_id)
                if run is not None:
                    check_run(flow, run, run_id, "kick off")
                    cp = await backend.aload_checkpoint(run_id)
                    if cp is not None:
                        state = load_state(
                            flow, cp.state, cp.meta.get("state_version"), run_id, cp.seq
                        )
            else:
                data = await backend.aload_state(run_id)
                if data is not None:
                    state = load_state(flow, data, None, run_id, None)
        if inputs:
            state = flow._adapter.apply_inputs(state, inputs)
        run_id = flow._adapter.state_id(state)
        if backend is not None and durable:
            if run is not None:
                info = RunInfo.from_json(run.info)
                had = metadata_of(info.other)
                labels = {**had, **(metadata or {})}
                # begin_run keeps an existing run's record: the labels are merged into
                # it first, so no crash leaves the kickoff's checkpoint without them.
                if run.fingerprint != flow._graph.fingerprint or not json_equal(labels, had):
                    info.definition = definition
                    if labels:
                        info.other[METADATA_KEY] = labels
                    await backend.aupdate_run(
                        run_id, fingerprint=flow._graph.fingerprint, info=info.to_json()
                    )
                seq = run.last_seq
            if owner is None and backend.supports_leases:
                owner = new_owner()
    except BaseException:
        if owner is not None and backend is not None and run is not None:
            await _give_back(backend, run.run_id, owner)
        raise
    scheduler = Scheduler(flow._graph, max_method_calls=flow.max_method_calls)
    # without a backend nothing is stored, and no key is needed
    cipher = flow._cipher() if backend is not None else None
    journal = make_journal(flow, backend, run_id, seq, owner, cipher)
    tasks = scheduler.begin(trigger_payload=inputs.get(TRIGGER_PAYLOAD))
    prepared = Run(flow, state, scheduler, journal, backend, cipher, tasks, inputs=shown)
    if isinstance(journal, DurableJournal):
        # One backend call (one transaction on the built-in backends): create the run if
        # missing, take (or keep) the lease, store the kickoff checkpoint.
        try:
            stored = await journal.begin(
                "kickoff",
                state,
                prepared.position(),
                flow_name=flow._graph.flow_name,
                fingerprint=flow._graph.fingerprint,
                info=RunInfo(
                    definition=definition, other={METADATA_KEY: metadata} if metadata else {}
                ).to_json(),
                ttl=flow.lease_ttl,
            )
        except RunExistsError:
            # Created meanwhile by another flow: report it as kickoff always has.
            await journal.close()
            found = await journal.backend.aget_run(run_id)
            if found is not None:
                check_run(flow, found, run_id, "kick off")
            raise
        except BaseException:
            await journal.close()
            raise
        journal.run_info = RunInfo.from_json(stored.info)
        journal.run_info.definition = definition
    else:
        prepared.committed_is_current = False
    return prepared


async def prepare_resume(
    flow: Flow[Any], run_id: str, value: Any, force: bool, *, only_running: bool = False
) -> Run:
    """Continue a stored run from its latest checkpoint's position, under a lease.

    ``only_running`` (recovery): refuse, with ResumeError, a run whose status read under
    the lease is not ``"running"`` -- one that failed or finished after the caller's
    own read of it is left to its user."""
    backend = durable_backend(flow, "resume")
    # The claim: lease, record and latest checkpoint in one backend call. Every check
    # below is made on what it returned, and the state executed is its checkpoint.
    run: RunRecord | None = None
    if backend.supports_leases:
        try:
            owner, run, cp = await take_lease(flow, backend, run_id)
        except RunNotFoundError:
            run = None
    else:  # a backend without leases: plain reads, as before
        owner = None
        run = await backend.aget_run(run_id)
        cp = None if run is None else await backend.aload_checkpoint(run_id)
    if run is None:
        raise RunNotFoundError(
            f"cannot resume: no run {run_id!r} in {type(backend).__name__}; check the id "
            "(list runs with `flowkit runs`)."
        )
    try:
        if only_running and run.status != "running":
            raise ResumeError(
                f"run {run_id!r} is {run.status}, no longer running; recovery leaves it "
                "(resume it by hand to continue it)."
            )
        return await _resume_claimed(flow, backend, run, cp, owner, value, force)
    except BaseException:
        if owner is not None:
            await _give_back(backend, run_id, owner)
        raise


async def _resume_claimed(
    flow: Flow[Any],
    backend: FlowPersistence,
    run: RunRecord,
    cp: Checkpoint | None,
    owner: str | None,
    value: Any,
    force: bool,
) -> Run:
    """The resume of a claimed run: refuse it, or build the run from the claim."""
    run_id = run.run_id
    check_run(flow, run, run_id, "resume")
    if run.status == "completed":
        raise ResumeError(
            f"run {run_id!r} already completed; nothing to resume. Use "
            "kickoff(inputs={'id': ...}) to run it again, or fork(run_id, seq) to branch."
        )
    definition = dict(flow._graph.definition)
    info = RunInfo.from_json(run.info)
    if run.fingerprint not in (None, flow._graph.fingerprint) and not force:
        changes = diff_definitions(info.definition or {}, definition)
        raise DefinitionChangedError(
            f"run {run_id!r} was started by a different definition of "
            f"{flow._graph.flow_name}: {'; '.join(changes) or 'the wiring changed'}. "
            "Resume with the old code, or pass resume(..., force=True) to continue with "
            "this one."
        )
    cipher = flow._cipher()
    position = (
        Position.from_json(cp.meta, cipher, run_id=run_id, seq=cp.seq) if cp is not None else None
    )
    if cp is None or position is None:
        raise ResumeError(
            f"run {run_id!r} has no checkpoint with an execution position (it was saved "
            "with save_state only); use kickoff(inputs={'id': ...}) to run it again."
        )
    state = load_state(flow, cp.state, cp.meta.get("state_version"), run_id, cp.seq)
    scheduler = _restore_scheduler(flow, position, run_id, cp)
    # A run cut off between attempts goes on counting; one that failed (its attempts
    # exhausted, or an exception no policy covers) starts every count afresh.
    retries = {} if run.status == "failed" else position.retries
    answers = position.answers
    interrupt = position.interrupt
    if run.status == "interrupted" and interrupt is not None:
        if value is MISSING:
            raise ResumeError(
                f"run {run_id!r} is waiting for an answer to {interrupt.method}'s "
                f"interrupt (payload {interrupt.payload!r}); pass it: "
                "resume(run_id, value)."
            )
        answers.setdefault(interrupt.task_id, []).append(value)
    elif value is not MISSING:
        raise ResumeError(
            f"run {run_id!r} is not waiting for input (status {run.status!r}); call "
            "resume(run_id) without a value."
        )
    info.definition = definition
    if run.fingerprint != flow._graph.fingerprint:
        await backend.aupdate_run(run_id, fingerprint=flow._graph.fingerprint, info=info.to_json())
    journal = make_journal(flow, backend, run_id, cp.seq, owner, cipher)
    assert isinstance(journal, DurableJournal)
    journal.committed = cp.state
    journal.run_info = info
    tasks = sorted(scheduler.pending.values(), key=lambda t: t.id)
    return Run(
        flow,
        state,
        scheduler,
        journal,
        backend,
        cipher,
        tasks,
        resumed=True,
        inputs={},
        answers=answers,
        last=position.last,
        retries=retries,
    )


def _restore_scheduler(
    flow: Flow[Any], position: Position, run_id: str, cp: Checkpoint
) -> Scheduler:
    scheduler = Scheduler.restore(
        flow._graph,
        position.scheduler,
        max_method_calls=flow.max_method_calls,
        run_id=run_id,
        seq=cp.seq,
    )
    for task in scheduler.pending.values():
        if task.id in position.lost_payloads and flow._graph.nodes[task.method].takes_payload:
            raise ResumeError(
                f"run {run_id!r}: {task.method} must run again but its input (the output "
                f"of {task.trigger}) could not be stored; return JSON-compatible values "
                "from methods whose listeners take them."
            )
    return scheduler
