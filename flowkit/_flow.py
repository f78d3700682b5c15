"""``Flow[State]``: the class users subclass. Definition, state and the front doors
(kickoff, resume, fork), and the context a method call runs in (what ``self.state`` and
``self.interrupt()`` read); the execution itself lives in ``_execution`` and loads on the
first kickoff, so that ``import flowkit`` stays light."""

from __future__ import annotations

import contextvars
import os
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from ._bus import GLOBAL_BUS, EventBus
from ._flow_tools import FlowTools
from ._graph import FlowGraph, build_graph
from ._interrupt import InterruptSignal
from ._log import INFO, LOG, log_event
from .exceptions import (
    FlowConfigurationError,
    FlowUsageError,
    InvalidArgumentError,
    StateAssignmentError,
)

if typing.TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Generator

    from ._ask import InputProvider
    from ._execution import _Plan
    from ._recover import RecoveryReport
    from ._retry import Retry
    from ._runner import Run
    from ._state import StateAdapter
    from .events import FlowEvent
    from .persistence import FlowPersistence

__all__ = ["CallContext", "Flow", "current_call"]

T = TypeVar("T")
#: ``resume(run_id)`` without a value (``None`` is a valid answer to an interrupt)
MISSING: Any = object()


def _declared_name(cls: type) -> str | None:
    """CrewAI's way to name a flow: a ``name = "..."`` class attribute (inherited)."""
    for klass in cls.__mro__:
        if klass is Flow:
            return None
        value = vars(klass).get("name")
        if isinstance(value, str) and value:
            return value
    return None


def _state_type_of(cls: type) -> Any:
    for klass in cls.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            if typing.get_origin(base) is Flow:
                args = typing.get_args(base)
                if args and not isinstance(args[0], TypeVar):
                    return args[0]
    return None


@dataclass(slots=True)
class CallContext:
    """The method call a piece of code runs in (``current_call``): what
    :meth:`Flow.interrupt` and :meth:`Flow.ask` answer from and, when the method overlaps
    with others, the private view :attr:`Flow.state` returns. The runner (or a worker
    thread) sets it around each call; only the flow's methods read it."""

    flow: Flow[Any]
    task_id: int
    method: str
    #: answers to this call's interrupts, in order (stored with the position)
    answers: Sequence[Any]
    asked: int = 0
    #: True when the method runs beside others: ``self.state`` is then its own view
    isolated: bool = False
    #: the run's state when the method started (isolated methods; never modified)
    base: Any = None
    #: the method's private copy of ``base``, made on its first read of ``self.state``
    view: Any = None

    def state_view(self) -> Any:
        """This isolated method's view of the state (copied from ``base`` on first use)."""
        view = self.view
        if view is None:
            view = self.view = (_copy_state or _load_copy_state())(self.base)
        return view


#: :func:`flowkit._isolation.copy_state`, imported on first use (it needs pydantic)
_copy_state: Callable[[Any], Any] | None = None


def _load_copy_state() -> Callable[[Any], Any]:
    global _copy_state
    from ._isolation import copy_state

    _copy_state = copy_state
    return copy_state


current_call: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar(
    "flowkit_current_call", default=None
)


class _Engine:
    """What a kickoff runs on, imported on the first one (it loads asyncio, the runner
    and the journal, so ``import flowkit`` stays light) and kept: an import statement
    in a function costs about a microsecond per call, a tenth of a small step."""

    def __init__(self) -> None:
        from ._concurrency import run_sync
        from ._execution import prepare_kickoff, prepare_waiting
        from ._runner import Runner

        self.run_sync = run_sync
        self.prepare_kickoff = prepare_kickoff
        self.prepare_waiting = prepare_waiting
        self.Runner = Runner


_engine: _Engine | None = None


def _load_engine() -> _Engine:
    global _engine
    _engine = _Engine()
    return _engine


class Flow(FlowTools, Generic[T]):
    """A workflow: methods wired by ``@start`` / ``@listen`` / ``@router`` into an event graph.

    Parametrise with the state type -- a Pydantic model (``Flow[MyState]``) or ``dict``
    (plain ``Flow``). The flow's name (in events and stored runs) is the class attribute
    ``name = "..."`` as in CrewAI (or the class keyword ``name="..."``), else the class's
    ``__name__``. Class keyword ``abstract=True`` marks a base class without a start;
    ``retry=Retry(...)`` is the retry policy of every method that gives none (inherited
    by subclasses; see :class:`flowkit.Retry`).

    Constructor: ``persistence=`` (overrides ``@persist``), ``initial_state=`` (a model
    instance or class, or a dict: this object's starting state, as in CrewAI),
    ``max_method_calls=100`` (per method and kickoff), ``lease_ttl=30.0`` (seconds a
    crashed owner keeps a run locked), ``lease_wait=0.0`` (seconds to wait while another
    process executes the same run before ``RunLockedError``), ``input_provider=`` (what
    :meth:`ask` asks through), ``secret_key=`` (encrypts ``SecretStr`` / ``SecretBytes``
    state fields; overrides ``@persist(secret_key=...)`` and ``$FLOWKIT_SECRET_KEY``).
    Anything else is an error.

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
    #: where :meth:`ask` sends questions (CrewAI's ``input_provider``); None: durable
    #: interrupt with persistence, else the console
    input_provider: InputProvider | None = None
    _graph: ClassVar[FlowGraph]
    _adapter: StateAdapter
    _plan_cache: ClassVar[_Plan | None] = None
    #: every method's retry policy (None: one attempt), worked out when first needed
    _retry_table: ClassVar[dict[str, Retry | None] | None] = None
    #: the class keyword ``retry=``: the policy of methods that give none
    _retry_default: ClassVar[Retry | None] = None

    def __init_subclass__(
        cls,
        *,
        abstract: bool = False,
        name: str | None = None,
        retry: Retry | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        cls._plan_cache = None
        cls._retry_table = None
        if retry is not None:
            from ._retry import check_retry

            cls._retry_default = check_retry(retry, f"class {cls.__qualname__}")
        if abstract:
            cls._graph = None  # type: ignore[assignment]
            return
        flow_name = name or _declared_name(cls) or cls.__name__
        cls._graph = build_graph(cls, flow_name)
        from ._state import StateAdapter  # pydantic: paid when a flow is defined

        cls._adapter = StateAdapter(flow_name, _state_type_of(cls), cls.initial_state)

    def __init__(
        self,
        persistence: FlowPersistence | None = None,
        *,
        initial_state: Any = None,
        max_method_calls: int = 100,
        lease_ttl: float = 30.0,
        lease_wait: float = 0.0,
        input_provider: InputProvider | None = None,
        secret_key: str | bytes | None = None,
        **kwargs: Any,
    ) -> None:
        cls = type(self)
        if kwargs:
            raise FlowConfigurationError(
                f"{cls.__qualname__}() got unexpected keyword argument(s) {sorted(kwargs)}; "
                "Flow accepts persistence=, initial_state=, max_method_calls=, lease_ttl=, "
                "lease_wait=, input_provider= and secret_key=. Pass state values with "
                "kickoff(inputs={...})."
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
        if not isinstance(max_method_calls, int) or isinstance(max_method_calls, bool):
            raise FlowConfigurationError(
                f"{cls.__qualname__}(max_method_calls={max_method_calls!r}): use an int >= 1."
            )
        if max_method_calls < 1:
            raise InvalidArgumentError(
                f"{cls.__qualname__}(max_method_calls={max_method_calls!r}): use an int >= 1 "
                "(how many times one method may run in a kickoff)."
            )
        for name, seconds in (("lease_ttl", lease_ttl), ("lease_wait", lease_wait)):
            if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
                raise FlowConfigurationError(
                    f"{cls.__qualname__}({name}={seconds!r}): use a number of seconds."
                )
        if not lease_ttl > 0:
            raise InvalidArgumentError(
                f"{cls.__qualname__}(lease_ttl={lease_ttl!r}): use a positive number of seconds."
            )
        self._persistence = persistence
        self.max_method_calls = max_method_calls
        if not lease_wait >= 0:
            raise InvalidArgumentError(
                f"{cls.__qualname__}(lease_wait={lease_wait!r}): use 0 (refuse at once) or "
                "a positive number of seconds to wait for another writer."
            )
        self.lease_ttl = float(lease_ttl)
        self.lease_wait = float(lease_wait)
        if secret_key is not None:
            from ._persist import check_secret_key

            check_secret_key(secret_key, f"{cls.__qualname__}")
        self._secret_key = secret_key
        if input_provider is not None:
            self.input_provider = input_provider
        if initial_state is None:
            self._state: Any = cls._adapter.new()
        else:
            self._adapter, self._state = cls._adapter.for_initial(initial_state)
        self._bus = EventBus()
        self._busy = False
        #: the execution in progress (its state is the live one), None between runs
        self._run: Run | None = None
        self._outputs: list[Any] = []
        #: the run id a kickoff executes under (a method must not change state.id)
        self._active_run_id: str | None = None

    # -- state -----------------------------------------------------------------------

    @property
    def state(self) -> T:
        """The live state. Mutate its fields; assigning a new object raises.

        Inside a method that runs at the same time as others, this is that method's own
        copy of the state, merged into the run's state when the method finishes (see
        docs/durable-runs.md, "Parallel methods").
        """
        ctx = current_call.get()
        if ctx is not None and ctx.isolated and ctx.flow is self:
            return ctx.state_view()  # type: ignore[no-any-return]
        run = self._run
        return self._state if run is None else run.state  # type: ignore[no-any-return]

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

    def _start_as(self, run_id: str) -> None:
        """Give the run the next kickoff creates this id, without asking for it through
        ``inputs`` (which would make kickoff claim a stored run of that id and continue
        it): the kickoff's first write then creates the run, or is refused if the id is
        taken. For flowkit's Celery tasks, which know the id of a run not started yet."""
        self._state = self._adapter.apply_inputs(self._state, {"id": run_id})

    def _run_id(self) -> str:
        run = self._run
        return self._adapter.state_id(self._state if run is None else run.state)

    @property
    def flow_id(self) -> str:
        """The run's id: ``state.id`` (CrewAI's ``flow_id``)."""
        return self._run_id()

    @property
    def method_outputs(self) -> list[Any]:
        """What each method returned during the last kickoff (or resume) of this object,
        in the order they finished (CrewAI's ``method_outputs``)."""
        return list(self._outputs)

    def _method_finished(self, method: str, output: Any) -> None:
        """Called by the runner when a method returned: record its output and refuse a
        changed ``state.id`` (the run would be saved under one id while ``state.id``
        named another)."""
        self._outputs.append(output)
        expected = self._active_run_id
        if expected is not None and (found := self._run_id()) != expected:
            raise FlowUsageError(
                f"{self._graph.flow_name}.{method} changed state.id from {expected!r} to "
                f"{found!r}; the id names the run and cannot change while it executes. "
                "Choose the id before the run with kickoff(inputs={'id': ...}), or start "
                "another run from this one with kickoff(restore_from_state_id=...)."
            )

    # -- events ------------------------------------------------------------------------

    def subscribe(
        self, handler: Callable[[FlowEvent], Any], *event_types: type[FlowEvent]
    ) -> Callable[[], None]:
        """Call ``handler`` with this flow's events (of ``event_types``, or all).

        Returns a function that unsubscribes.
        """
        return self._bus.add(handler, event_types)

    def _has_listeners(self) -> bool:
        # The "flowkit" logger counts as a listener once it is enabled for INFO: events
        # are then built and logged (see _log.py). isEnabledFor is a cached lookup.
        return bool(self._bus.handlers or GLOBAL_BUS.handlers) or LOG.isEnabledFor(INFO)

    def _emit(self, event_type: type[FlowEvent], **fields: Any) -> None:
        run = self._run
        seq = getattr(run.journal, "seq", None) if run is not None else None
        event = event_type(
            flow_name=self._graph.flow_name, run_id=self._run_id(), seq=seq, **fields
        )
        log_event(event)
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

    def ask(
        self, message: str, timeout: float | None = None, metadata: dict[str, Any] | None = None
    ) -> str | None:
        """Ask a person for input from inside a method (CrewAI's ``Flow.ask``).

        With an input provider (``input_provider = ...`` on the class, or
        ``Flow(input_provider=...)``) the provider is asked and this call blocks until it
        answers; ``None`` after ``timeout`` seconds or if the provider fails. Without one,
        a flow with durable persistence pauses: ``kickoff`` returns an
        :class:`flowkit.Interrupted` whose payload is ``{"ask": message, "metadata":
        metadata}``, and ``resume(run_id, answer)`` re-runs the method from the state it
        started with, ``ask`` now returning ``answer``. Without provider or persistence
        the console is asked.

        Example::

            @start()
            def topic(self):
                self.state["topic"] = self.ask("What should we research?")
        """
        from ._ask import ask

        return ask(self, message, timeout, metadata)

    # -- streaming ---------------------------------------------------------------------

    def stream_events(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        restore_from_state_id: str | None = None,
    ) -> Generator[FlowEvent, None, None]:
        """Kick off and yield the run's events as they happen, ending with a
        :class:`flowkit.events.FlowResult` carrying what :meth:`kickoff` returns.

        For plain (synchronous) code; inside a running event loop use :meth:`astream`.
        The flow advances while the caller iterates; stopping early cancels the run.

        Example::

            for event in MyFlow().stream_events(inputs={"topic": "tea"}):
                print(type(event).__name__)
        """
        from ._stream import stream_sync

        return stream_sync(self, inputs, restore_from_state_id)

    def astream(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        restore_from_state_id: str | None = None,
    ) -> AsyncGenerator[FlowEvent, None]:
        """Async form of :meth:`stream_events`: ``async for event in flow.astream()``."""
        from ._stream import stream_async

        return stream_async(self, inputs, restore_from_state_id)

    # -- persistence plumbing ----------------------------------------------------------

    @classmethod
    def _plan(cls) -> _Plan:
        plan = cls.__dict__.get("_plan_cache")  # worked out on the first kickoff
        if plan is None:
            # Not at class creation: @persist on the class is applied after it.
            from ._execution import _Plan

            plan = cls._plan_cache = _Plan(cls)
        return plan

    @classmethod
    def _retry_policies(cls) -> dict[str, Retry | None]:
        """Every method's retry policy (None: one attempt), worked out once per class."""
        table = cls.__dict__.get("_retry_table")
        if table is None:
            from ._retry import policies

            table = cls._retry_table = policies(cls)
        return table

    def _stores_runs(self) -> bool:
        """Whether a kickoff stores anything: Ctrl-C then lets it unwind (give its lease
        back) before KeyboardInterrupt is raised (``_concurrency.run_sync``)."""
        plan = self._plan()
        return self._persistence is not None or plan.class_cfg is not None or bool(plan.method_cfgs)

    def _backend(self) -> FlowPersistence | None:
        return self._plan().backend(self._persistence)

    def _cipher(self) -> Any:
        """The cipher for secret state fields: this flow's ``secret_key``, else
        ``@persist(secret_key=...)``, else (deprecated) a ``secret_key`` attribute of the
        backend, else ``$FLOWKIT_SECRET_KEY``; None without any. The whole order is
        decided here, so a flow without a key never enters :mod:`flowkit._secrets`: no
        key, no crypto work."""
        key = self._secret_key
        if key is None:
            key = self._plan().secret_key
        if key is None:
            key = getattr(self._backend(), "secret_key", None)
            if key is not None:
                import warnings

                warnings.warn(
                    f"{type(self).__qualname__}: the secret key was taken from the backend "
                    "(secret_key= on the persistence object), which is deprecated; pass it "
                    "to the flow instead: Flow(secret_key=...) or @persist(..., "
                    "secret_key=...).",
                    DeprecationWarning,
                    stacklevel=2,
                )
        if key is None:
            from ._secrets import ENV_VAR  # a constant: nothing in _secrets runs

            key = os.environ.get(ENV_VAR) or None  # empty counts as unset
            if key is None:
                return None
        from ._secrets import SecretCipher

        return SecretCipher(key)

    # -- kickoff -----------------------------------------------------------------------

    def kickoff(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        restore_from_state_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any:
        """Run the flow and return the output of the last method that finished (or an
        :class:`flowkit.Interrupted` if a method paused the run).

        ``inputs`` set state fields. With persistence, ``inputs={"id": X}`` reloads the
        latest checkpoint of run X first (an unknown X starts a fresh run with id X).
        ``restore_from_state_id=X`` starts a *new* run whose state is run X's latest
        stored state (a fork: X is unchanged and recorded as the parent); ``inputs`` are
        applied on top, and ``inputs["id"]`` names the new run. ``inputs`` may carry
        ``crewai_trigger_payload``: start methods that declare a parameter of that name
        receive it. ``metadata`` (a dict of JSON values, e.g. ``{"user": "u123"}``) is
        stored with the run, merged into what earlier kickoffs or resumes of the same
        run stored (the new keys win); read it as ``RunRecord.metadata``, find runs by it
        with ``list_runs(metadata=...)`` (needs persistence). Works in plain code and
        inside a running event loop.

        Example::

            first = Report()
            first.kickoff()
            again = Report().kickoff(restore_from_state_id=first.flow_id)
        """
        return (_engine or _load_engine()).run_sync(
            self.kickoff_async(
                inputs, restore_from_state_id=restore_from_state_id, metadata=metadata
            ),
            graceful=self._stores_runs(),
        )

    async def kickoff_async(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        restore_from_state_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any:
        """Awaitable form of :meth:`kickoff`."""
        prepare_kickoff = (_engine or _load_engine()).prepare_kickoff
        labels = None  # checked now, before anything is stored
        if metadata is not None:
            from ._run_metadata import checked_metadata

            labels = checked_metadata(self, metadata, "kickoff")

        if restore_from_state_id is not None:
            from ._restore import restore_from

            if self._busy:  # before the fork, so that a refused kickoff stores nothing
                raise FlowUsageError(
                    f"{type(self).__qualname__} instance is already running; create one "
                    "flow object per concurrent kickoff."
                )
            inputs, restored = await restore_from(self, restore_from_state_id, inputs)
            if restored is not None:
                self._state = restored
        given = dict(inputs or {})
        # CrewAI's FlowStartedEvent shows None when no inputs were given
        shown = None if inputs is None else given
        # the labels go into the kickoff's own writes (prepare_kickoff), never a later one
        return await self._execute(lambda: prepare_kickoff(self, given, shown, labels))

    akickoff = kickoff_async

    def resume(
        self,
        run_id: str,
        value: Any = MISSING,
        *,
        force: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any:
        """Continue an unfinished run of this flow, in this or any other process.

        Methods that completed are not run again; the one that was cut off (by a crash
        or ``self.interrupt``) runs again from the state it started with. For an
        interrupted run, ``value`` is what ``self.interrupt()`` returns this time.
        ``force=True`` resumes even if the flow's definition changed since the run
        started. ``metadata`` is merged into the run's stored metadata, as for
        :meth:`kickoff`. Returns what :meth:`kickoff` would have returned.
        """
        from ._concurrency import run_sync

        return run_sync(
            self.resume_async(run_id, value, force=force, metadata=metadata), graceful=True
        )

    async def resume_async(
        self,
        run_id: str,
        value: Any = MISSING,
        *,
        force: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any:
        """Awaitable form of :meth:`resume`."""
        from ._execution import prepare_resume
        from ._run_metadata import metadata_step

        with_metadata = metadata_step(self, metadata, "resume")
        return await self._execute(
            with_metadata(lambda: prepare_resume(self, run_id, value, force))
        )

    async def _execute(self, prepare: Callable[[], Awaitable[Run]]) -> Any:
        """Prepare a run (kickoff or resume), execute it, keep its final state."""
        engine = _engine or _load_engine()

        if self._busy:
            raise FlowUsageError(
                f"{type(self).__qualname__} instance is already running; create one flow "
                "object per concurrent kickoff."
            )
        self._busy = True
        try:
            self._outputs.clear()
            run = await engine.prepare_waiting(self, prepare)
            self._run = run
            self._active_run_id = run.run_id
            try:
                return await engine.Runner(run).execute()
            finally:
                self._state = run.state
                self._run = None
        finally:
            self._busy = False
            self._active_run_id = None

    @classmethod
    def recover(cls, persistence: FlowPersistence | None = None, **options: Any) -> RecoveryReport:
        """Resume every unfinished run of this flow whose owner is dead.

        Finds the flow's runs with status ``"running"`` and resumes each one that no live
        process holds (its owner died, or its lease expired); a run executed by a live
        process is skipped, and so is every interrupted run (it waits for its answer).
        Concurrent recoverers, in any process, resume each run at most once. Call it at
        start-up to finish what the previous incarnation of the process left.
        ``options`` go to the flow's constructor (``lease_ttl=``, ...). Returns a
        :class:`flowkit.RecoveryReport` saying what happened to each run.

        Example::

            report = ReviewFlow.recover()
            print(report.completed, report.failed)
        """
        from ._concurrency import run_sync

        return run_sync(cls.arecover(persistence, **options), graceful=True)

    @classmethod
    async def arecover(
        cls, persistence: FlowPersistence | None = None, **options: Any
    ) -> RecoveryReport:
        """Awaitable form of :meth:`recover`."""
        from ._recover import recover

        return await recover(cls, persistence, options)

    def fork(
        self,
        run_id: str,
        seq: int,
        *,
        new_run_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Start a new run from checkpoint ``seq`` of ``run_id``; return its id.

        The new run records its parent (run and seq); ``resume(new_id)`` continues it
        from that point. The original run is unchanged. The new run keeps the parent's
        metadata, with ``metadata`` (if given) merged over it, its keys winning.
        """
        from ._concurrency import run_sync

        return run_sync(
            self.fork_async(run_id, seq, new_run_id=new_run_id, metadata=metadata), graceful=True
        )

    async def fork_async(
        self,
        run_id: str,
        seq: int,
        *,
        new_run_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Awaitable form of :meth:`fork`."""
        from ._execution import fork

        labels = None
        if metadata is not None:
            from ._run_metadata import checked_metadata

            labels = checked_metadata(self, metadata, "fork")
        return await fork(self, run_id, seq, new_run_id=new_run_id, metadata=labels)
