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
from ._interrupt import Interrupted
from ._journal import LEASES, BasicJournal, DurableJournal, Journal, new_owner
from ._persist import PERSIST_ATTR, PersistConfig, default_persistence
from ._runner import Runner
from ._scheduler import Scheduler, Task
from .events import FlowFinished, FlowStarted
from .exceptions import (
    ConcurrentUpdateError,
    CorruptCheckpointError,
    DefinitionChangedError,
    FlowConfigurationError,
    FlowDefinitionError,
    FlowkitError,
    FlowUsageError,
    ResumeError,
    RunExistsError,
    RunLockedError,
    RunNotFoundError,
    UnsupportedOperationError,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

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


def cipher_for(backend: FlowPersistence | None) -> Any:
    from ._secrets import resolve_cipher

    return resolve_cipher(getattr(backend, "secret_key", None))


def load_state(
    flow: Flow[Any], data: Any, version: int | None, run_id: str, seq: int | None
) -> Any:
    from ._codec import decode

    cipher = cipher_for(flow._backend())
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


async def fork(flow: Flow[Any], run_id: str, seq: int, *, new_run_id: str | None = None) -> str:
    """Start a new run from checkpoint ``seq`` of ``run_id`` (see :meth:`Flow.fork`)."""
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
    pending = (meta.get("position") or {}).get("pending")
    status = "interrupted" if "interrupt" in meta else ("running" if pending else "completed")
    await backend.acreate_run(
        child,
        flow._graph.flow_name,
        parent_run_id=run_id,
        parent_seq=seq,
        fingerprint=run.fingerprint,
        info={"definition": run.info.get("definition")},
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


async def execute(
    flow: Flow[Any], given: Mapping[str, Any] | None, resume: tuple[str, Any, bool] | None
) -> Any:
    inputs = dict(given or {})
    if flow._busy:
        raise FlowUsageError(
            f"{type(flow).__qualname__} instance is already running; create one flow "
            "object per concurrent kickoff."
        )
    flow._busy = True
    try:
        flow._outputs.clear()
        runner, tasks = await _prepare_waiting(flow, inputs, resume)
        journal = flow._journal
        assert journal is not None
        flow._active_run_id = flow._run_id()
        try:
            if flow._has_listeners():
                # None when no inputs were given, as CrewAI's FlowStartedEvent
                shown = None if given is None else inputs
                flow._emit(FlowStarted, inputs=shown, resumed=resume is not None)
            if not tasks:  # a resumed run that had finished its last method
                await journal.set_status("completed")
                result = runner.last[1] if runner.last else None
            else:
                result = await runner.run(tasks)
            if flow._has_listeners() and not isinstance(result, Interrupted):
                flow._emit(FlowFinished, output=result)
            return result
        finally:
            await journal.close()
    finally:
        flow._busy = False
        flow._active_run_id = None


async def _prepare(
    flow: Flow[Any], inputs: dict[str, Any], resume: tuple[str, Any, bool] | None
) -> tuple[Runner, list[Task]]:
    if resume is None:
        return await prepare_kickoff(flow, inputs)
    runner = await prepare_resume(flow, *resume)
    return runner, sorted(runner.scheduler.pending.values(), key=lambda t: t.id)


async def _prepare_waiting(
    flow: Flow[Any], inputs: dict[str, Any], resume: tuple[str, Any, bool] | None
) -> tuple[Runner, list[Task]]:
    """Prepare, waiting up to ``flow.lease_wait`` seconds while another owner executes
    the run. Each try reloads the run, so the state it starts from is the one the other
    writer left."""
    deadline = time.monotonic() + flow.lease_wait
    pause = 0.05
    while True:
        try:
            return await _prepare(flow, inputs, resume)
        except (RunLockedError, ConcurrentUpdateError):
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 1.0)


def make_journal(
    flow: Flow[Any], backend: FlowPersistence | None, run_id: str, seq: int, owner: str | None
) -> Journal:
    plan = plan_for(type(flow))
    if backend is None:
        return Journal()
    persist_all = plan.persist_all(flow._persistence)
    cipher = cipher_for(backend)
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


async def prepare_kickoff(flow: Flow[Any], inputs: dict[str, Any]) -> tuple[Runner, list[Task]]:
    backend = flow._backend()
    run_id = inputs.get("id")
    if run_id is not None and not isinstance(run_id, str):
        raise FlowConfigurationError(
            f"kickoff(inputs={{'id': {run_id!r}}}): a run id is a string (e.g. a UUID)."
        )
    seq = 0
    run = None
    owner = None
    durable = backend is not None and _is_durable(backend)
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
                    flow._state = load_state(
                        flow, cp.state, cp.meta.get("state_version"), run_id, cp.seq
                    )
            elif durable:
                run = await backend.aget_run(run_id)
                if run is not None:
                    check_run(flow, run, run_id, "kick off")
                    cp = await backend.aload_checkpoint(run_id)
                    if cp is not None:
                        flow._state = load_state(
                            flow, cp.state, cp.meta.get("state_version"), run_id, cp.seq
                        )
            else:
                data = await backend.aload_state(run_id)
                if data is not None:
                    flow._state = load_state(flow, data, None, run_id, None)
        if inputs:
            flow._state = flow._adapter.apply_inputs(flow._state, inputs)
        run_id = flow._run_id()
        definition = dict(flow._graph.definition)
        if backend is not None and durable:
            if run is not None:
                if run.fingerprint != flow._graph.fingerprint:
                    await backend.aupdate_run(
                        run_id,
                        fingerprint=flow._graph.fingerprint,
                        info={**run.info, "definition": definition},
                    )
                seq = run.last_seq
            if owner is None and backend.supports_leases:
                owner = new_owner()
    except BaseException:
        if owner is not None and backend is not None and run is not None:
            await _give_back(backend, run.run_id, owner)
        raise
    scheduler = Scheduler(flow._graph, max_method_calls=flow.max_method_calls)
    flow._journal = journal = make_journal(flow, backend, run_id, seq, owner)
    runner = Runner(flow, scheduler, journal)
    tasks = scheduler.begin(trigger_payload=inputs.get(TRIGGER_PAYLOAD))
    if isinstance(journal, DurableJournal):
        # One backend call (one transaction on the built-in backends): create the run if
        # missing, take (or keep) the lease, store the kickoff checkpoint.
        try:
            stored = await journal.begin(
                "kickoff",
                flow._state,
                scheduler,
                flow_name=flow._graph.flow_name,
                fingerprint=flow._graph.fingerprint,
                info={"definition": definition},
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
        journal.run_info = {**stored.info, "definition": definition}
    return runner, tasks


async def prepare_resume(flow: Flow[Any], run_id: str, value: Any, force: bool) -> Runner:
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
) -> Runner:
    """The resume of a claimed run: refuse it, or build the runner from the claim."""
    from ._codec import decode

    run_id = run.run_id
    check_run(flow, run, run_id, "resume")
    if run.status == "completed":
        raise ResumeError(
            f"run {run_id!r} already completed; nothing to resume. Use "
            "kickoff(inputs={'id': ...}) to run it again, or fork(run_id, seq) to branch."
        )
    definition = dict(flow._graph.definition)
    if run.fingerprint not in (None, flow._graph.fingerprint) and not force:
        changes = diff_definitions(run.info.get("definition") or {}, definition)
        raise DefinitionChangedError(
            f"run {run_id!r} was started by a different definition of "
            f"{flow._graph.flow_name}: {'; '.join(changes) or 'the wiring changed'}. "
            "Resume with the old code, or pass resume(..., force=True) to continue with "
            "this one."
        )
    position = cp.meta.get("position") if cp is not None else None
    if cp is not None and position is not None and not isinstance(position, dict):
        # A damaged position is not a state saved without one: never advise a restart.
        raise CorruptCheckpointError(
            f"Stored checkpoint seq {cp.seq} of run {run_id!r} cannot be read back: its "
            f"execution position is a {type(position).__name__}, not an object. Restore "
            "it from a backup, fork the run from an earlier checkpoint, or delete the run.",
            run_id=run_id,
            seq=cp.seq,
        )
    if cp is None or not isinstance(position, dict):
        raise ResumeError(
            f"run {run_id!r} has no checkpoint with an execution position (it was saved "
            "with save_state only); use kickoff(inputs={'id': ...}) to run it again."
        )
    cipher = cipher_for(backend)
    flow._state = load_state(flow, cp.state, cp.meta.get("state_version"), run_id, cp.seq)
    scheduler = _restore_scheduler(flow, position, cipher, run_id, cp)
    answers = {
        int(k): list(decode(v, cipher=cipher, run_id=run_id, seq=cp.seq))
        for k, v in position.get("answers", {}).items()
    }
    interrupt = cp.meta.get("interrupt")
    if run.status == "interrupted" and isinstance(interrupt, dict):
        if value is MISSING:
            raise ResumeError(
                f"run {run_id!r} is waiting for an answer to {interrupt['method']}'s "
                f"interrupt (payload {interrupt.get('payload')!r}); pass it: "
                "resume(run_id, value)."
            )
        answers.setdefault(int(interrupt["task_id"]), []).append(value)
    elif value is not MISSING:
        raise ResumeError(
            f"run {run_id!r} is not waiting for input (status {run.status!r}); call "
            "resume(run_id) without a value."
        )
    if run.fingerprint != flow._graph.fingerprint:
        await backend.aupdate_run(
            run_id,
            fingerprint=flow._graph.fingerprint,
            info={**run.info, "definition": definition},
        )
    flow._journal = journal = make_journal(flow, backend, run_id, cp.seq, owner)
    assert isinstance(journal, DurableJournal)
    journal.committed = cp.state
    journal.run_info = {**run.info, "definition": definition}
    last = position.get("last")
    runner = Runner(flow, scheduler, journal, answers=answers)
    if isinstance(last, dict):
        runner.last = (
            last["method"],
            decode(last.get("output"), cipher=cipher, run_id=run_id, seq=cp.seq),
        )
    return runner


def _restore_scheduler(
    flow: Flow[Any], position: dict[str, Any], cipher: Any, run_id: str, cp: Checkpoint
) -> Scheduler:
    from ._codec import decode

    scheduler = Scheduler.restore(
        flow._graph, position, max_method_calls=flow.max_method_calls, run_id=run_id, seq=cp.seq
    )
    lost = set(position.get("lost_payloads", []))
    for task in scheduler.pending.values():
        if task.id in lost:
            if flow._graph.nodes[task.method].takes_payload:
                raise ResumeError(
                    f"run {run_id!r}: {task.method} must run again but its input (the output "
                    f"of {task.trigger}) could not be stored; return JSON-compatible values "
                    "from methods whose listeners take them."
                )
            task.payload = None
        else:
            task.payload = decode(task.payload, cipher=cipher, run_id=run_id, seq=cp.seq)
    return scheduler


def plan_for(cls: type[Flow[Any]]) -> _Plan:
    """The persistence plan of a flow class, computed once (``@persist`` on the class is
    applied after the class is created, so not at class creation)."""
    plan = cls.__dict__.get("_plan_cache")
    if plan is None:
        plan = _Plan(cls)
        cls._plan_cache = plan
    return plan


def rollback(flow: Flow[Any]) -> None:
    """Put the live state back to the last stored one (an interrupted method's partial
    changes must not be stored, or they would be applied twice on resume)."""
    committed = getattr(flow._journal, "committed", None)
    if committed is not None:
        flow._state = load_state(flow, committed, None, flow._run_id(), None)
