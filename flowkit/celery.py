"""Run flows on Celery workers (``pip install flowkit[celery]``).

Register flow classes with a Celery app; :meth:`CeleryFlows.enqueue` starts a run on
a worker and returns its id at once, :meth:`CeleryFlows.enqueue_resume` answers an
interrupt. Runs are stored in the flows' persistence (PostgreSQL when workers run on
several machines); messages carry only a flow name, a run id and JSON made by flowkit's
codec -- never pickle, and a worker only runs classes registered with it.

A worker that dies mid-run does not lose the run: the tasks are acknowledged late and
rejected when their worker is lost, so the broker hands the message to another worker,
which resumes the run from its last checkpoint (methods that completed do not run
again). :meth:`CeleryFlows.schedule_recovery` adds a Celery beat entry that resumes
orphaned runs whose message is gone (:meth:`flowkit.Flow.recover`).

Example (``myapp/tasks.py``, the module the workers import)::

    from celery import Celery
    from flowkit.celery import CeleryFlows
    from flowkit.persistence import SQLAlchemyFlowPersistence

    app = Celery("myapp", broker="amqp://guest:guest@localhost:5672//")
    app.conf.worker_prefetch_multiplier = 1
    flows = CeleryFlows(app, persistence=lambda: SQLAlchemyFlowPersistence(DB_URL))
    flows.register(ReviewFlow)

    run_id = flows.enqueue(ReviewFlow, inputs={"topic": "tides"})  # from the web app
    flows.enqueue_resume(run_id, "approved")                         # later, an answer

Start the workers with ``celery -A myapp.tasks worker --pool=threads --concurrency=4``
(or prefork): on RabbitMQ a ``--pool=solo`` worker at times idles for up to 10 s between
tasks, and flowkit warns when one starts.

See ``docs/many-machines.md`` for the settings and what happens when a worker dies.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from celery import Celery, Task, signals  # type: ignore[import-untyped]

from ._flow import MISSING, Flow
from ._interrupt import Interrupted
from .exceptions import (
    ConcurrentUpdateError,
    FlowConfigurationError,
    ResumeError,
    RunExistsError,
    RunLockedError,
    RunNotFoundError,
)
from .persistence import FlowPersistence

if TYPE_CHECKING:
    from ._recover import RecoveryReport
    from .persistence import RunRecord

__all__ = ["CeleryFlows"]

log = logging.getLogger("flowkit.celery")

F = TypeVar("F", bound=type[Flow[Any]])

#: The options every flowkit task is declared with, and why:
#: acks_late -- the message is acknowledged when the task ends, so a worker that dies
#: mid-run leaves it unacknowledged and the broker delivers it again;
#: reject_on_worker_lost -- a prefork child killed mid-task requeues its message instead
#: of failing it; ignore_result -- the outcome is in flowkit's store, no result backend
#: is needed; serializer json -- no pickle on the wire.
TASK_OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
    "serializer": "json",
    "max_retries": None,
}


class CeleryFlows:
    """Flow classes registered with a Celery app, and the tasks that run them.

    Args:
        app: the Celery app; three tasks are declared on it, named ``PREFIX.start``,
            ``PREFIX.resume`` and ``PREFIX.recover``.
        persistence: where runs are stored: a backend, or a zero-argument function that
            makes one (called once per worker process, after Celery forks its children;
            the recommended form). ``None``: each flow's own ``@persist`` backend.
        prefix: the task-name prefix (two ``CeleryFlows`` on one app need two prefixes).
        retry_delay: seconds before a task retries a run that another process holds (the
            first delivery may still be finishing, or a dead owner's lease is about to be
            taken over); doubled at each retry, up to 30 s.
        flow_options: keyword arguments for every flow's constructor (``lease_ttl=``, ...).

    Example::

        flows = CeleryFlows(app, persistence=lambda: SQLAlchemyFlowPersistence(url))

        @flows.register
        class ReviewFlow(Flow[Review]):
            ...
    """

    def __init__(
        self,
        app: Celery,
        *,
        persistence: FlowPersistence | Callable[[], FlowPersistence] | None = None,
        prefix: str = "flowkit",
        retry_delay: float = 1.0,
        flow_options: Mapping[str, Any] | None = None,
    ) -> None:
        if retry_delay <= 0:
            raise FlowConfigurationError(
                f"CeleryFlows(retry_delay={retry_delay!r}): use a positive number of seconds."
            )
        self.app = app
        self.prefix = prefix
        self.retry_delay = float(retry_delay)
        self.flow_options = dict(flow_options or {})
        self._persistence = persistence
        self._made: tuple[int, FlowPersistence] | None = None
        self._lock = threading.Lock()
        self._flows: dict[str, type[Flow[Any]]] = {}

        # Plain functions, not bound methods: Celery reads the task's signature to check
        # the arguments of every call, and a bound task's first parameter is the task.
        def start(task: Task, flow: str, run_id: str, inputs: Any) -> dict[str, Any]:
            return self._start(task, flow, run_id, inputs)

        def resume(task: Task, run_id: str, seq: int, value: Any = MISSING) -> dict[str, Any]:
            return self._resume(task, run_id, seq, value)

        def recover(task: Task) -> dict[str, Any]:
            return self._recover()

        self.start_task: Task = app.task(name=f"{prefix}.start", **TASK_OPTIONS)(start)
        self.resume_task: Task = app.task(name=f"{prefix}.resume", **TASK_OPTIONS)(resume)
        self.recover_task: Task = app.task(
            name=f"{prefix}.recover", bind=True, ignore_result=True, serializer="json"
        )(recover)
        # Weakly referenced (the default): a CeleryFlows dropped does not stay alive.
        signals.worker_init.connect(self._check_worker)

    def _check_worker(self, sender: Any = None, **_: Any) -> None:
        """At a worker's start: warn about a pool known to delay runs (see the docs)."""
        ours = getattr(sender, "app", None) is self.app
        if not ours:
            return
        pool = getattr(sender, "pool_cls", "")
        name = pool if isinstance(pool, str) else getattr(pool, "__module__", "")
        if "solo" not in name or self.app.connection_for_read().transport.driver_type != "amqp":
            return
        log.warning(
            "flowkit.celery: this worker runs --pool=solo on RabbitMQ; such a worker now and "
            "then sits idle for up to 10 s between two tasks while messages wait (measured "
            "with Celery 5.7). Start it with --pool=threads (or prefork) and --concurrency=N "
            "instead; see docs/many-machines.md."
        )

    # -- registration ------------------------------------------------------------------

    def register(self, flow_cls: F) -> F:
        """Let workers run ``flow_cls`` (usable as a class decorator); returns it.

        Register in the module the workers import (``celery -A myapp worker``): a worker
        runs only the classes registered with it, looked up by flow name -- never a
        class named in a message or in storage.
        """
        if not (isinstance(flow_cls, type) and issubclass(flow_cls, Flow)):
            raise FlowConfigurationError(
                f"CeleryFlows.register({flow_cls!r}): pass a Flow subclass."
            )
        graph = getattr(flow_cls, "_graph", None)
        if graph is None:
            raise FlowConfigurationError(
                f"CeleryFlows.register({flow_cls.__qualname__}): it is abstract; register "
                "a subclass with a @start() method."
            )
        known = self._flows.get(graph.flow_name)
        if known is not None and known is not flow_cls:
            raise FlowConfigurationError(
                f"CeleryFlows.register({flow_cls.__qualname__}): flow name "
                f"{graph.flow_name!r} is already registered by {known.__qualname__}; give "
                "one of them another name (class Foo(Flow[S], name='...'))."
            )
        self._flows[graph.flow_name] = flow_cls
        return flow_cls

    @property
    def flows(self) -> dict[str, type[Flow[Any]]]:
        """The registered classes by flow name (a copy)."""
        return dict(self._flows)

    def _flow_class(self, flow_name: str | None, what: str) -> type[Flow[Any]]:
        cls = self._flows.get(flow_name or "")
        if cls is None:
            raise FlowConfigurationError(
                f"{what}: flow {flow_name!r} is not registered with this CeleryFlows "
                f"(registered: {sorted(self._flows)}); call flows.register(TheFlow) in the "
                "module both the workers and the caller import."
            )
        return cls

    def _registered_name(self, flow_cls: type[Flow[Any]], what: str) -> str:
        name: str = getattr(getattr(flow_cls, "_graph", None), "flow_name", "")
        if self._flows.get(name) is not flow_cls:
            raise FlowConfigurationError(
                f"{what}: {getattr(flow_cls, '__qualname__', flow_cls)!r} is not registered; "
                "call flows.register(TheFlow) in the module the workers import."
            )
        return name

    # -- storage -----------------------------------------------------------------------

    def backend(self, flow_cls: type[Flow[Any]]) -> FlowPersistence:
        """The backend runs of ``flow_cls`` are stored in (made once per process)."""
        backend = self._flow(flow_cls).persistence
        assert backend is not None  # _flow checked it
        return backend

    def _given_backend(self) -> FlowPersistence | None:
        """The backend passed to the constructor, or made by its function (once per
        process); None: each flow's own."""
        source = self._persistence
        if source is None or isinstance(source, FlowPersistence):
            return source
        pid = os.getpid()
        with self._lock:
            if self._made is None or self._made[0] != pid:
                self._made = (pid, source())
            return self._made[1]

    def _flow(self, cls: type[Flow[Any]]) -> Flow[Any]:
        """A new instance of ``cls`` on the store, checked durable (one object per task)."""
        from ._execution import durable_backend

        flow = cls(self._given_backend(), **self.flow_options)
        durable_backend(flow, "run on Celery")
        return flow

    # -- the caller's side ---------------------------------------------------------------

    def enqueue(
        self,
        flow_cls: type[Flow[Any]],
        inputs: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        **options: Any,
    ) -> str:
        """Start a run of ``flow_cls`` on a worker; return its run id at once.

        ``inputs`` are checked against the state model here (a bad value fails now, not
        on the worker) and sent through flowkit's codec. The run id is ``run_id``, else
        ``inputs["id"]``, else a new UUID. ``options`` go to Celery's ``apply_async``
        (``queue=``, ``countdown=``, ...).
        """
        name = self._registered_name(flow_cls, "enqueue")
        data = dict(inputs or {})
        given = data.pop("id", None)
        if run_id is not None and given is not None and given != run_id:
            raise FlowConfigurationError(
                f"enqueue({flow_cls.__qualname__}, inputs={{'id': {given!r}}}, "
                f"run_id={run_id!r}): two different run ids; pass one."
            )
        run_id = run_id or given or str(uuid.uuid4())
        if not isinstance(run_id, str):
            raise FlowConfigurationError(
                f"enqueue({flow_cls.__qualname__}): a run id is a string, got {run_id!r}."
            )
        flow_cls._adapter.apply_inputs(flow_cls._adapter.new(), data)  # fail early
        payload = {"flow": name, "run_id": run_id, "inputs": self._encode(flow_cls, data)}
        self.start_task.apply_async(kwargs=payload, serializer="json", **options)
        return run_id

    def enqueue_resume(self, run_id: str, value: Any = MISSING, **options: Any) -> None:
        """Resume ``run_id`` on a worker; for an interrupted run, ``value`` is the answer.

        The run is read here (this process needs the store), so a wrong call fails at
        once: an unknown run, a finished one, a missing or unexpected answer. The message
        names the checkpoint answered: delivered twice (after a worker died), it never
        answers a later interrupt of the same run. ``options`` go to ``apply_async``.
        """
        run = self._read_run(run_id)
        cls = self._flow_class(run.flow_name, f"enqueue_resume({run_id!r})")
        if run.status == "completed":
            raise ResumeError(f"run {run_id!r} already completed; nothing to resume.")
        if run.status == "interrupted" and value is MISSING:
            raise ResumeError(
                f"run {run_id!r} is waiting for an answer; pass it: enqueue_resume(run_id, value)."
            )
        if run.status != "interrupted" and value is not MISSING:
            raise ResumeError(
                f"run {run_id!r} is not waiting for input (status {run.status!r}); call "
                "enqueue_resume(run_id) without a value."
            )
        payload: dict[str, Any] = {"run_id": run_id, "seq": run.last_seq}
        if value is not MISSING:
            payload["value"] = self._encode(cls, value, path="value")
        self.resume_task.apply_async(kwargs=payload, serializer="json", **options)

    def recover(self) -> list[RecoveryReport]:
        """Resume the orphaned runs of every registered flow, in this process
        (:meth:`flowkit.Flow.recover` for each class). Returns one report per class."""
        return [cls.recover(self.backend(cls), **self.flow_options) for cls in self._flows.values()]

    def schedule_recovery(self, every: float = 60.0) -> None:
        """Add a Celery beat entry that runs :meth:`recover` on a worker every ``every``
        seconds (run ``celery -A myapp beat`` next to the workers). The entry expires
        after one period, so a backlog of recovery messages never piles up."""
        schedule = dict(self.app.conf.beat_schedule or {})
        schedule[f"{self.prefix}.recover"] = {
            "task": self.recover_task.name,
            "schedule": float(every),
            "options": {"expires": float(every)},
        }
        self.app.conf.beat_schedule = schedule

    def _read_run(self, run_id: str) -> RunRecord:
        backends = {id(b): b for b in (self.backend(c) for c in self._flows.values())}
        for backend in backends.values():
            run = backend.get_run(run_id)
            if run is not None:
                return run
        raise RunNotFoundError(
            f"no run {run_id!r} in the store of the registered flows; check the id, or "
            "wait until a worker has started it (enqueue returns before that)."
        )

    def _encode(self, cls: type[Flow[Any]], value: Any, *, path: str = "inputs") -> Any:
        from ._codec import encode

        return encode(value, path=path, cipher=self._flow(cls)._cipher())

    @staticmethod
    def _decode(flow: Flow[Any], data: Any, run_id: str) -> Any:
        """``data`` from a message, decoded with the cipher of ``flow`` (the instance the
        task runs: making another one per message for its cipher cost 2 flow objects)."""
        from ._codec import decode

        return decode(data, cipher=flow._cipher(), run_id=run_id, path="message")

    # -- the worker's side ---------------------------------------------------------------

    def _start(self, task: Task, flow: str, run_id: str, inputs: Any) -> dict[str, Any]:
        cls = self._flow_class(flow, f"task {task.name} for run {run_id!r}")
        instance = self._flow(cls)
        assert instance.persistence is not None
        data = self._decode(instance, inputs, run_id)
        if not _delivered_before(task):
            # A first delivery: the run almost never exists yet. The kickoff's first write
            # creates it (compare-and-set on seq 0, refused if it exists), so nothing is
            # read or claimed first -- a read and a claim attempt are 6 of a 10-step run's
            # 43 round trips to the database. The id is set on the state, not passed in
            # inputs, which would make kickoff claim an existing run and start it again.
            instance._start_as(run_id)
            try:
                return _result(run_id, instance.kickoff(inputs=data))
            except (RunExistsError, RunLockedError, ConcurrentUpdateError):
                # It exists after all (the message was sent twice, or another process
                # holds the run): decide from what is stored, as for a redelivery.
                instance = self._flow(cls)
        assert instance.persistence is not None
        run = instance.persistence.get_run(run_id)
        if run is not None:  # delivered again: the first delivery created the run
            return self._continue(task, cls, run)
        data = {**data, "id": run_id}
        # The run did not exist a moment ago; kickoff creates it with compare-and-set on
        # seq 0, so a second delivery racing this one is refused, not run twice.
        return self._execute(task, run_id, lambda: instance.kickoff(inputs=data))

    def _resume(self, task: Task, run_id: str, seq: int, value: Any = MISSING) -> dict[str, Any]:
        run = self._read_run(run_id)
        cls = self._flow_class(run.flow_name, f"task {task.name} for run {run_id!r}")
        if value is MISSING:  # "continue": also retries a failed run, once
            return self._continue(task, cls, run, retry_failed_at=seq)
        if run.status != "interrupted":
            # An earlier delivery used the answer and the run moved on (it died midway if
            # the run is still running): continue it if it is unfinished.
            return self._continue(task, cls, run)
        if run.last_seq != seq:  # a later interrupt: this answer was for an earlier one
            return _outcome(run_id, "interrupted", "the answer was already used")
        flow = self._flow(cls)
        answer = self._decode(flow, value, run_id)
        return self._execute(task, run_id, lambda: flow.resume(run_id, answer))

    def _continue(
        self, task: Task, cls: type[Flow[Any]], run: RunRecord, retry_failed_at: int = -1
    ) -> dict[str, Any]:
        resumable = run.status == "running" or (
            run.status == "failed" and run.last_seq == retry_failed_at
        )
        if not resumable:
            return _outcome(run.run_id, run.status, "nothing to do")
        flow = self._flow(cls)
        try:
            return self._execute(task, run.run_id, lambda: flow.resume(run.run_id))
        except ResumeError:
            # The run moved on since it was read: the process executing it reached an
            # interrupt or the end meanwhile (a duplicate message racing the first one).
            now = flow.persistence.get_run(run.run_id) if flow.persistence else None
            if now is None or now.status not in ("interrupted", "completed"):
                raise
            return _outcome(run.run_id, now.status, "nothing to do")

    def _execute(self, task: Task, run_id: str, action: Callable[[], Any]) -> dict[str, Any]:
        try:
            result = action()
        except (RunLockedError, ConcurrentUpdateError) as exc:
            retries = int(task.request.retries or 0)
            delay = min(self.retry_delay * 2 ** min(retries, 8), 30.0)
            log.info("run %s is held elsewhere (%s); retrying in %.1f s", run_id, exc, delay)
            raise task.retry(countdown=delay, exc=exc) from None
        return _result(run_id, result)

    def _recover(self) -> dict[str, Any]:
        return {
            report.flow_name: {r.run_id: r.outcome for r in report.runs}
            for report in self.recover()
        }


def _delivered_before(task: Task) -> bool:
    """Whether this message may have been executed already: a retry, or a message the
    broker redelivered (RabbitMQ marks those; other brokers may not, which only costs the
    fallback in ``_start``)."""
    request = task.request
    return bool(request.retries) or bool((request.delivery_info or {}).get("redelivered"))


def _result(run_id: str, result: Any) -> dict[str, Any]:
    if isinstance(result, Interrupted):
        return _outcome(run_id, "interrupted", result.method_name)
    return _outcome(run_id, "completed")


def _outcome(run_id: str, status: str, detail: str = "") -> dict[str, Any]:
    return {"run_id": run_id, "status": status, "detail": detail}
