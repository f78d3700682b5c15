"""``Flow[State]``: state, kickoff, resume and fork."""

from __future__ import annotations

import typing
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, TypeVar

from ._graph import FlowGraph, build_graph, diff_definitions
from ._journal import LEASES, BasicJournal, DurableJournal, Journal, new_owner
from ._persist import PERSIST_ATTR, PersistConfig, default_persistence
from ._runner import CallContext, Interrupted, InterruptSignal, Runner, current_call
from ._scheduler import Scheduler, Task
from ._state import StateAdapter
from ._sync import run_sync
from .events import GLOBAL_BUS, EventBus, FlowEvent, FlowFinished, FlowStarted
from .exceptions import (
    DefinitionChangedError,
    FlowConfigurationError,
    FlowDefinitionError,
    FlowUsageError,
    ResumeError,
    RunNotFoundError,
    StateAssignmentError,
    UnsupportedOperationError,
)

if typing.TYPE_CHECKING:
    from collections.abc import Callable

    from .persistence import Checkpoint, FlowPersistence

__all__ = ["Flow"]

T = TypeVar("T")
_MISSING: Any = object()


def _state_type_of(cls: type) -> Any:
    for klass in cls.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            if typing.get_origin(base) is Flow:
                args = typing.get_args(base)
                if args and not isinstance(args[0], TypeVar):
                    return args[0]
    return None


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
        if self.class_cfg is not None:
            return self.class_cfg.backend or default_persistence()
        if self.method_cfgs:
            chosen = next(iter(self.method_cfgs.values())).backend
            return chosen or default_persistence()
        return None

    def persist_all(self, override: FlowPersistence | None) -> bool:
        return self.class_cfg is not None or (override is not None and not self.method_cfgs)


def _is_durable(backend: FlowPersistence) -> bool:
    return bool(backend.supports_runs and backend.supports_cas and backend.supports_history)


class Flow(Generic[T]):
    """A workflow: methods wired by ``@start`` / ``@listen`` / ``@router`` into an event graph.

    Parametrise with the state type -- a Pydantic model (``Flow[MyState]``) or ``dict``
    (plain ``Flow``). Class keywords: ``abstract=True`` for a base class without a start,
    ``name="..."`` for the name runs are stored under (default: the class's qualified name).

    Example::

        class Greeter(Flow[dict]):
            @start()
            def hello(self):
                return "hello"

            @listen(hello)
            def shout(self, text):
                return text.upper()

        assert Greeter().kickoff() == "HELLO"
    """

    initial_state: ClassVar[Any] = None
    _graph: ClassVar[FlowGraph]
    _adapter: ClassVar[StateAdapter]
    _plan_cache: ClassVar[_Plan | None] = None

    def __init_subclass__(
        cls, *, abstract: bool = False, name: str | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        cls._plan_cache = None
        if abstract:
            cls._graph = None  # type: ignore[assignment]
            return
        flow_name = name or cls.__qualname__
        cls._graph = build_graph(cls, flow_name)
        cls._adapter = StateAdapter(flow_name, _state_type_of(cls), cls.initial_state)

    def __init__(
        self,
        persistence: FlowPersistence | None = None,
        *,
        max_method_calls: int = 100,
        lease_ttl: float = 30.0,
        **kwargs: Any,
    ) -> None:
        cls = type(self)
        if kwargs:
            raise FlowConfigurationError(
                f"{cls.__qualname__}() got unexpected keyword argument(s) {sorted(kwargs)}; "
                "Flow accepts persistence=, max_method_calls= and lease_ttl=. Pass state "
                "values with kickoff(inputs={...})."
            )
        if getattr(cls, "_graph", None) is None:
            raise FlowConfigurationError(
                f"{cls.__qualname__} is abstract (or is Flow itself); subclass it and add a "
                "@start() method."
            )
        if persistence is not None:
            from .persistence import FlowPersistence

            if not isinstance(persistence, FlowPersistence):
                raise FlowConfigurationError(
                    f"{cls.__qualname__}(persistence={persistence!r}): pass an instance of a "
                    "flowkit.persistence.FlowPersistence subclass."
                )
        if not isinstance(max_method_calls, int) or max_method_calls < 1:
            raise FlowConfigurationError(
                f"{cls.__qualname__}(max_method_calls={max_method_calls!r}): use a positive int."
            )
        if lease_ttl <= 0:
            raise FlowConfigurationError(
                f"{cls.__qualname__}(lease_ttl={lease_ttl!r}): use a positive number of seconds."
            )
        self._persistence = persistence
        self.max_method_calls = max_method_calls
        self.lease_ttl = float(lease_ttl)
        self._state: Any = cls._adapter.new()
        self._bus = EventBus()
        self._busy = False
        self._journal: Journal = Journal()

    # -- state -----------------------------------------------------------------------

    @property
    def state(self) -> T:
        """The live state. Mutate its fields; assigning a new object raises."""
        return self._state  # type: ignore[no-any-return]

    @state.setter
    def state(self, value: Any) -> None:
        raise StateAssignmentError(
            f"{type(self).__qualname__}.state cannot be replaced; set its fields instead "
            "(self.state.x = ... or self.state['x'] = ...)."
        )

    @property
    def persistence(self) -> FlowPersistence | None:
        """The backend this flow stores its runs in (None without persistence): the
        ``Flow(persistence=...)`` argument, else the ``@persist`` backend, else the
        default SQLite file when ``@persist`` names none."""
        return self._backend()

    def _run_id(self) -> str:
        return self._adapter.state_id(self._state)

    # -- events ------------------------------------------------------------------------

    def subscribe(
        self, handler: Callable[[FlowEvent], Any], *event_types: type[FlowEvent]
    ) -> Callable[[], None]:
        """Call ``handler`` with this flow's events (of ``event_types``, or all).

        Returns a function that unsubscribes.
        """
        return self._bus.add(handler, event_types)

    def _has_listeners(self) -> bool:
        return bool(self._bus.handlers or GLOBAL_BUS.handlers)

    def _emit(self, event_type: type[FlowEvent], **fields: Any) -> None:
        event = event_type(flow_name=self._graph.flow_name, run_id=self._run_id(), **fields)
        self._bus.emit(event)
        GLOBAL_BUS.emit(event)

    # -- interrupts --------------------------------------------------------------------

    def interrupt(self, payload: Any = None) -> Any:
        """Pause the run for outside input (e.g. a human's approval).

        The first time, this stops the method: the run is stored as interrupted and
        ``kickoff`` returns :class:`flowkit.Interrupted`. ``resume(run_id, value)`` -- in
        any process -- re-runs the method from the state it started with, and this call
        then returns ``value``. Several calls in one method are answered in order.

        Example::

            @listen(draft)
            def review(self, text):
                verdict = self.interrupt({"question": "approve?", "draft": text})
                self.state.approved = verdict == "yes"
        """
        ctx: CallContext | None = current_call.get()
        if ctx is None or ctx.flow is not self:
            raise FlowUsageError(
                "self.interrupt() was called outside a running flow method; call it from "
                "inside a @start/@listen/@router method during kickoff or resume."
            )
        index = ctx.asked
        ctx.asked += 1
        if index < len(ctx.answers):
            return ctx.answers[index]
        raise InterruptSignal(payload)

    async def _rollback(self) -> None:
        committed = getattr(self._journal, "committed", None)
        if committed is not None:
            self._state = self._load_state(committed, None, self._run_id(), None)

    # -- persistence plumbing ----------------------------------------------------------

    @classmethod
    def _plan(cls) -> _Plan:
        if cls.__dict__.get("_plan_cache") is None:
            cls._plan_cache = _Plan(cls)
        assert cls._plan_cache is not None
        return cls._plan_cache

    def _backend(self) -> FlowPersistence | None:
        return self._plan().backend(self._persistence)

    def _durable_backend(self, operation: str) -> FlowPersistence:
        backend = self._backend()
        if backend is None:
            raise FlowConfigurationError(
                f"{type(self).__qualname__}.{operation}() needs persistence: add @persist to "
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
                f"{type(self).__qualname__}.{operation}() needs a backend with runs, history "
                f"and compare-and-set; {type(backend).__name__} lacks {missing}. Use a built-in "
                "backend or implement those operations."
            )
        return backend

    def _cipher(self, backend: FlowPersistence | None) -> Any:
        from ._secrets import resolve_cipher

        return resolve_cipher(getattr(backend, "secret_key", None))

    def _load_state(self, data: Any, version: int | None, run_id: str, seq: int | None) -> Any:
        from ._codec import decode

        cipher = self._cipher(self._backend())
        return self._adapter.load(
            decode(data, cipher=cipher, run_id=run_id, seq=seq),
            version=version,
            run_id=run_id,
            seq=seq,
        )

    def _check_run(self, run: Any, run_id: str, operation: str) -> None:
        # A run written through plain save_state() has no flow name: any flow may adopt it.
        if run.flow_name is not None and run.flow_name != self._graph.flow_name:
            raise ResumeError(
                f"run {run_id!r} belongs to flow {run.flow_name!r}, not "
                f"{self._graph.flow_name!r}; {operation} it with that flow class."
            )

    # -- kickoff -----------------------------------------------------------------------

    def kickoff(self, inputs: Mapping[str, Any] | None = None) -> Any:
        """Run the flow and return the output of the last method that finished (or an
        :class:`flowkit.Interrupted` if a method paused the run).

        ``inputs`` set state fields. With persistence, ``inputs={"id": X}`` reloads the
        latest checkpoint of run X first (an unknown X starts a fresh run with id X).
        Works in plain code and inside a running event loop.
        """
        return run_sync(self.kickoff_async(inputs))

    async def kickoff_async(self, inputs: Mapping[str, Any] | None = None) -> Any:
        """Awaitable form of :meth:`kickoff`."""
        return await self._execute(dict(inputs or {}), None)

    akickoff = kickoff_async

    def resume(self, run_id: str, value: Any = _MISSING, *, force: bool = False) -> Any:
        """Continue an unfinished run of this flow, in this or any other process.

        Methods that completed are not run again; the one that was cut off (by a crash
        or ``self.interrupt``) runs again from the state it started with. For an
        interrupted run, ``value`` is what ``self.interrupt()`` returns this time.
        ``force=True`` resumes even if the flow's definition changed since the run
        started. Returns what :meth:`kickoff` would have returned.
        """
        return run_sync(self.resume_async(run_id, value, force=force))

    async def resume_async(self, run_id: str, value: Any = _MISSING, *, force: bool = False) -> Any:
        """Awaitable form of :meth:`resume`."""
        return await self._execute({}, (run_id, value, force))

    def fork(self, run_id: str, seq: int, *, new_run_id: str | None = None) -> str:
        """Start a new run from checkpoint ``seq`` of ``run_id``; return its id.

        The new run records its parent (run and seq); ``resume(new_id)`` continues it
        from that point. The original run is unchanged.
        """
        return run_sync(self.fork_async(run_id, seq, new_run_id=new_run_id))

    async def fork_async(self, run_id: str, seq: int, *, new_run_id: str | None = None) -> str:
        """Awaitable form of :meth:`fork`."""
        backend = self._durable_backend("fork")
        run = await backend.aget_run(run_id)
        if run is None:
            raise RunNotFoundError(f"cannot fork: no run {run_id!r} in {type(backend).__name__}.")
        self._check_run(run, run_id, "fork")
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
            self._graph.flow_name,
            parent_run_id=run_id,
            parent_seq=seq,
            fingerprint=run.fingerprint,
            info={"definition": run.info.get("definition")},
        )
        await backend.asave_checkpoint(
            child, cp.method_name, state, expected_seq=0, meta=meta, status=status
        )
        return child

    # -- the one execution path ----------------------------------------------------------

    async def _execute(self, inputs: dict[str, Any], resume: tuple[str, Any, bool] | None) -> Any:
        if self._busy:
            raise FlowUsageError(
                f"{type(self).__qualname__} instance is already running; create one flow "
                "object per concurrent kickoff."
            )
        self._busy = True
        try:
            if resume is None:
                runner, tasks = await self._prepare_kickoff(inputs)
            else:
                runner = await self._prepare_resume(*resume)
                tasks = sorted(runner.scheduler.pending.values(), key=lambda t: t.id)
            try:
                if self._has_listeners():
                    self._emit(FlowStarted, inputs=inputs, resumed=resume is not None)
                if not tasks:  # a resumed run that had finished its last method
                    await self._journal.set_status("completed")
                    result = runner.last[1] if runner.last else None
                else:
                    result = await runner.run(tasks)
                if self._has_listeners() and not isinstance(result, Interrupted):
                    self._emit(FlowFinished, output=result)
                return result
            finally:
                await self._journal.close()
        finally:
            self._busy = False

    def _make_journal(
        self, backend: FlowPersistence | None, run_id: str, seq: int, owner: str | None
    ) -> Journal:
        plan = self._plan()
        if backend is None:
            return Journal()
        persist_all = plan.persist_all(self._persistence)
        cipher = self._cipher(backend)
        if _is_durable(backend):
            return DurableJournal(
                backend,
                run_id,
                self._adapter,
                cipher,
                persist_all=persist_all,
                methods=plan.methods,
                verbose=plan.verbose,
                seq=seq,
                owner=owner,
            )
        return BasicJournal(
            backend,
            run_id,
            self._adapter,
            cipher,
            persist_all=persist_all,
            methods=plan.methods,
            verbose=plan.verbose,
        )

    async def _lease(self, backend: FlowPersistence, run_id: str) -> str | None:
        if not backend.supports_leases:
            return None
        owner = new_owner()
        await backend.aacquire_lease(run_id, owner, self.lease_ttl)
        LEASES.keep(backend, run_id, owner, self.lease_ttl)
        return owner

    async def _prepare_kickoff(self, inputs: dict[str, Any]) -> tuple[Runner, list[Task]]:
        backend = self._backend()
        run_id = inputs.get("id")
        if run_id is not None and not isinstance(run_id, str):
            raise FlowConfigurationError(
                f"kickoff(inputs={{'id': {run_id!r}}}): a run id is a string (e.g. a UUID)."
            )
        seq = 0
        run = None
        if backend is not None and run_id is not None:
            if _is_durable(backend):
                run = await backend.aget_run(run_id)
                if run is not None:
                    self._check_run(run, run_id, "kick off")
                    cp = await backend.aload_checkpoint(run_id)
                    if cp is not None:
                        self._state = self._load_state(
                            cp.state, cp.meta.get("state_version"), run_id, cp.seq
                        )
            else:
                data = await backend.aload_state(run_id)
                if data is not None:
                    self._state = self._load_state(data, None, run_id, None)
        if inputs:
            self._state = self._adapter.apply_inputs(self._state, inputs)
        run_id = self._run_id()
        scheduler = Scheduler(self._graph, max_method_calls=self.max_method_calls)
        owner = None
        if backend is not None and _is_durable(backend):
            if run is None:
                run = await backend.acreate_run(
                    run_id,
                    self._graph.flow_name,
                    fingerprint=self._graph.fingerprint,
                    info={"definition": dict(self._graph.definition)},
                    exist_ok=True,
                )
                self._check_run(run, run_id, "kick off")
            elif run.fingerprint != self._graph.fingerprint:
                await backend.aupdate_run(
                    run_id,
                    fingerprint=self._graph.fingerprint,
                    info={**run.info, "definition": dict(self._graph.definition)},
                )
            owner = await self._lease(backend, run_id)
            seq = run.last_seq
        self._journal = journal = self._make_journal(backend, run_id, seq, owner)
        if isinstance(journal, DurableJournal) and run is not None:
            journal.run_info = {**run.info, "definition": dict(self._graph.definition)}
        runner = Runner(self, scheduler, journal)
        tasks = scheduler.begin()
        if journal.durable:
            try:
                await journal.checkpoint("kickoff", self._state, scheduler, {}, "running")
            except BaseException:
                await journal.close()
                raise
        return runner, tasks

    async def _prepare_resume(self, run_id: str, value: Any, force: bool) -> Runner:
        from ._codec import decode

        backend = self._durable_backend("resume")
        run = await backend.aget_run(run_id)
        if run is None:
            raise RunNotFoundError(
                f"cannot resume: no run {run_id!r} in {type(backend).__name__}; check the id "
                "(list runs with `flowkit runs`)."
            )
        self._check_run(run, run_id, "resume")
        if run.status == "completed":
            raise ResumeError(
                f"run {run_id!r} already completed; nothing to resume. Use "
                "kickoff(inputs={'id': ...}) to run it again, or fork(run_id, seq) to branch."
            )
        definition = dict(self._graph.definition)
        if run.fingerprint not in (None, self._graph.fingerprint) and not force:
            changes = diff_definitions(run.info.get("definition") or {}, definition)
            raise DefinitionChangedError(
                f"run {run_id!r} was started by a different definition of "
                f"{self._graph.flow_name}: {'; '.join(changes) or 'the wiring changed'}. "
                "Resume with the old code, or pass resume(..., force=True) to continue with "
                "this one."
            )
        cp = await backend.aload_checkpoint(run_id)
        position = cp.meta.get("position") if cp is not None else None
        if cp is None or not isinstance(position, dict):
            raise ResumeError(
                f"run {run_id!r} has no checkpoint with an execution position (it was saved "
                "with save_state only); use kickoff(inputs={'id': ...}) to run it again."
            )
        cipher = self._cipher(backend)
        self._state = self._load_state(cp.state, cp.meta.get("state_version"), run_id, cp.seq)
        scheduler = _restore_scheduler(self, position, cipher, run_id, cp)
        answers = {
            int(k): list(decode(v, cipher=cipher, run_id=run_id, seq=cp.seq))
            for k, v in position.get("answers", {}).items()
        }
        interrupt = cp.meta.get("interrupt")
        if run.status == "interrupted" and isinstance(interrupt, dict):
            if value is _MISSING:
                raise ResumeError(
                    f"run {run_id!r} is waiting for an answer to {interrupt['method']}'s "
                    f"interrupt (payload {interrupt.get('payload')!r}); pass it: "
                    "resume(run_id, value)."
                )
            answers.setdefault(int(interrupt["task_id"]), []).append(value)
        elif value is not _MISSING:
            raise ResumeError(
                f"run {run_id!r} is not waiting for input (status {run.status!r}); call "
                "resume(run_id) without a value."
            )
        owner = await self._lease(backend, run_id)
        try:
            if run.fingerprint != self._graph.fingerprint:
                await backend.aupdate_run(
                    run_id,
                    fingerprint=self._graph.fingerprint,
                    info={**run.info, "definition": definition},
                )
            self._journal = journal = self._make_journal(backend, run_id, cp.seq, owner)
            assert isinstance(journal, DurableJournal)
            journal.committed = cp.state
            journal.run_info = {**run.info, "definition": definition}
        except BaseException:
            if owner is not None:
                LEASES.forget(backend, run_id, owner)
                await backend.arelease_lease(run_id, owner)
            raise
        last = position.get("last")
        runner = Runner(self, scheduler, journal, answers=answers)
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
