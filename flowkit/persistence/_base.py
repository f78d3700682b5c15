"""The interface between the flow engine and storage: :class:`FlowPersistence`.

Each operation is written once, as a coroutine method whose docstring is the contract
(``await persistence.asave_state(...)``). Its plain form (``persistence.save_state(...)``)
is derived in one line, ``save_state = blocking(asave_state)``. A backend implements each
operation once, in whichever form suits it: an async form is used as it is and its plain
form waits for it; a plain form (a CrewAI-style class with sync ``save_state`` /
``load_state``) is used as it is and its async form runs it in a worker thread
(:meth:`FlowPersistence._fallback`).

The operations with long keyword lists (``begin_run``, ``save_checkpoint``, ``end_run``,
``create_run``, ``update_run``, ``list_runs``) hand their arguments to the backend as one
frozen value instead (:class:`RunStart`, :class:`CheckpointWrite`, :class:`NewRun`,
:class:`RunUpdate`, :class:`RunQuery`). Their public methods keep the contract and the
keyword arguments, and call a seam one parameter wide that the built-in backends
implement, async (``_abegin_run``, ``_awrite_checkpoint`` for both checkpoint writes,
``_acreate_run``, ``_aupdate_run``, ``_alist_runs``) or plain (the same names without the
``a``; :func:`seam` derives the async form), so no backend writes the keyword lists
again. A backend that defines the public method itself instead is used as before.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from abc import ABC
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Concatenate, ParamSpec, TypeVar, cast

from flowkit._concurrency import (
    NotInline,
    Portal,
    PortalStopped,
    in_thread,
    inline,
    run_inline,
    wait_for,
)
from flowkit.exceptions import FlowConfigurationError, UnsupportedOperationError
from flowkit.persistence import _rules
from flowkit.persistence._records import Checkpoint, RunRecord

REQUIRED_OPS = ("save_state", "load_state")
# Optional operations that quietly do nothing when a backend does not define them.
NO_OP_DEFAULTS = ("init_db", "close")
CAPABILITY_OPS: dict[str, tuple[str, ...]] = {
    "supports_history": ("history", "load_checkpoint"),
    "supports_runs": (
        "create_run",
        "get_run",
        "update_run",
        "list_runs",
        "delete_run",
        "prune",
    ),
    "supports_cas": ("save_checkpoint",),
    "supports_leases": ("acquire_lease", "renew_lease", "release_lease"),
}
# Operations the base class composes from the others when a backend does not define them
# (built-in backends do each in one transaction).
COMPOSITE_OPS = ("begin_run", "end_run", "claim_run")
ALL_OPS = (
    REQUIRED_OPS
    + NO_OP_DEFAULTS
    + tuple(op for ops in CAPABILITY_OPS.values() for op in ops)
    + COMPOSITE_OPS
)

# Operations whose public method hands its arguments to a seam as one value: op -> the
# seam's name (``_a<seam>`` async, ``_<seam>`` plain).
SEAMS = {
    "begin_run": "begin_run",
    "save_checkpoint": "write_checkpoint",
    "end_run": "write_checkpoint",
    "create_run": "create_run",
    "update_run": "update_run",
    "list_runs": "list_runs",
}

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S", bound="FlowPersistence")
F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, Any]])
R = TypeVar("R", bound="Request")


def operation(contract: F) -> F:
    """Declare an operation by its async form: ``contract`` gives its signature and its
    docstring (the contract); its body is never run. A backend that does not define the
    async form gets :meth:`FlowPersistence._fallback` (its plain form in a worker
    thread, a composition, a no-op, or UnsupportedOperationError)."""
    op = contract.__name__.removeprefix("a")
    signature = inspect.signature(contract)

    @functools.wraps(contract)
    async def default(self: FlowPersistence, *args: Any, **kwargs: Any) -> Any:
        call = signature.bind(self, *args, **kwargs)  # the contract's defaults filled in
        call.apply_defaults()
        return await self._fallback(op, *call.args[1:], **call.kwargs)

    return cast(F, default)


def blocking(
    contract: Callable[Concatenate[S, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[S, P], T]:
    """The plain (blocking) form of the async operation ``contract``: it runs the
    backend's async form and waits for it, from any thread, with or without a running
    event loop (:func:`flowkit._concurrency.wait_for`)."""
    name = contract.__name__
    op = name.removeprefix("a")

    def plain(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        if op in NO_OP_DEFAULTS and not {op, name} & self._native_ops:
            return cast(T, None)  # nothing to do: no loop, no thread
        # Reached from a backend's own plain form (super().op()) whose async form runs
        # that plain form: the inherited way is the contract's (to the seam), not that.
        form = contract if _derived(type(self), op) else getattr(type(self), name)
        if op in self._inline_ops:
            try:  # answered on this thread, no loop run and no thread woken
                answer: T = run_inline(form(self, *args, **kwargs))
                return answer
            except NotInline:
                pass  # nothing was done: the usual way below
        home = self._home_portal()
        try:
            result: T = wait_for(form(self, *args, **kwargs), any_loop=self._any_loop, home=home)
        except PortalStopped:
            if home is None:
                raise
            # the database's thread was stopped under the call (close() gave up waiting)
            raise _rules.cut_off(f"{op}()", repr(self)) from None
        return result

    plain.__name__ = plain.__qualname__ = op
    plain.__doc__ = f"Blocking form of :meth:`{name}` (same arguments, result and errors)."
    return plain


def _takes(function: Callable[..., Any], name: str) -> bool:
    """Whether ``function`` accepts the keyword argument ``name``."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


# -- the requests: an operation's arguments as one value, for its seam --------------------
#
# Each field means what the parameter of the same name means in the operation's contract
# (FlowPersistence's docstrings); ``op`` names the operation.


@dataclass(frozen=True, slots=True)
class RunStart:
    """The arguments of :meth:`FlowPersistence.begin_run`."""

    op: ClassVar[str] = "begin_run"
    run_id: str
    flow_name: str
    owner: str | None
    ttl: float | None
    fingerprint: str | None
    info: dict[str, Any] | None
    method_name: str
    state: dict[str, Any]
    meta: dict[str, Any] | None
    expected_seq: int | None


@dataclass(frozen=True, slots=True)
class CheckpointWrite:
    """The arguments of :meth:`FlowPersistence.save_checkpoint`, or of
    :meth:`FlowPersistence.end_run`: its ``owner`` as ``lease_owner``, ``flow_name`` None
    and ``release`` True (give the lease up in the same transaction)."""

    op: ClassVar[str] = "save_checkpoint"
    run_id: str
    method_name: str
    state: dict[str, Any]
    expected_seq: int | None
    meta: dict[str, Any] | None
    status: str
    flow_name: str | None
    lease_owner: str | None
    release: bool


@dataclass(frozen=True, slots=True)
class NewRun:
    """The arguments of :meth:`FlowPersistence.create_run`."""

    op: ClassVar[str] = "create_run"
    run_id: str
    flow_name: str
    parent_run_id: str | None
    parent_seq: int | None
    fingerprint: str | None
    info: dict[str, Any] | None
    exist_ok: bool


@dataclass(frozen=True, slots=True)
class RunUpdate:
    """The arguments of :meth:`FlowPersistence.update_run`."""

    op: ClassVar[str] = "update_run"
    run_id: str
    status: str | None
    fingerprint: str | None
    info: dict[str, Any] | None
    lease_owner: str | None


@dataclass(frozen=True, slots=True)
class RunQuery:
    """The arguments of :meth:`FlowPersistence.list_runs`."""

    op: ClassVar[str] = "list_runs"
    flow_name: str | None
    status: str | None
    parent_run_id: str | None
    limit: int
    offset: int
    metadata: Mapping[str, Any] | None


Request = RunStart | CheckpointWrite | NewRun | RunUpdate | RunQuery


def seam(
    plain: Callable[[S, R], T],
) -> Callable[[S, R], Coroutine[Any, Any, T]]:
    """The async seam whose plain form is ``plain`` (``_acreate_run = seam(_create_run)``).
    It runs the backend's plain seam if the backend defines one (on the calling thread
    when run inline by a blocking form, see ``_inline_ops``; in a worker thread
    otherwise); else :meth:`FlowPersistence._hand_on` (a composition, or
    UnsupportedOperationError). A backend that defines the async seam replaces it."""
    name = plain.__name__

    async def default(self: S, request: R) -> T:
        if _own(type(self), name):
            own: Callable[[R], T] = getattr(self, name)
            return own(request) if inline() else await in_thread(own, request)
        answer: T = await self._hand_on(request)
        return answer

    default.__name__ = default.__qualname__ = "_a" + name.removeprefix("_")
    return default


def _own(cls: type[FlowPersistence], *names: str) -> bool:
    """Whether ``cls`` defines (or inherits from a backend) any of the methods ``names``."""
    return any(getattr(cls, name) is not getattr(FlowPersistence, name) for name in names)


def _derived(cls: type[FlowPersistence], op: str) -> bool:
    """Whether the async form of ``op`` on ``cls`` is the one that runs its plain form."""
    return op in _PLAIN_CALLS and getattr(cls, "a" + op) is _PLAIN_CALLS[op]


class FlowPersistence(ABC):  # noqa: B024  (flavours are checked in __init_subclass__)
    """Where flows keep their checkpoints and runs.

    A CrewAI persistence class works unchanged: define ``save_state`` and ``load_state``
    (and optionally ``init_db``), sync or async (``asave_state`` / ``aload_state``). The
    richer capabilities are optional groups of methods, announced by class flags::

        class MyStore(FlowPersistence):
            def __init__(self) -> None:
                self.states: dict[str, dict] = {}

            def save_state(self, flow_uuid, method_name, state_data):
                self.states[flow_uuid] = dict(state_data)

            def load_state(self, flow_uuid):
                return self.states.get(flow_uuid)

    Every operation is declared once below, async, its docstring being the contract; the
    plain form is derived (``save_state = blocking(asave_state)``). A backend defines each
    operation once, async (``async def asave_state``) or plain (``def save_state``):

    - defined async: the plain form runs it on a private background event loop and
      waits, which works with or without a running loop in the calling thread and never
      nests loops;
    - defined plain: the async form runs it in a worker thread.

    Subclasses must define one form of each required operation, and every operation of
    each capability whose flag they set; otherwise the class statement raises
    :class:`~flowkit.exceptions.FlowConfigurationError`. Calling an optional operation the
    backend lacks raises :class:`~flowkit.exceptions.UnsupportedOperationError`.
    """

    supports_history: ClassVar[bool] = False
    supports_runs: ClassVar[bool] = False
    supports_cas: ClassVar[bool] = False
    supports_leases: ClassVar[bool] = False

    secret_key: str | bytes | None = None
    """Key the engine uses to encrypt secret state fields; backends only carry it."""

    fenced_update_run: ClassVar[bool] = False
    """True when the backend's ``update_run`` takes ``lease_owner`` (worked out from its
    signature when the class is created, unless the class sets it): the engine then
    fences its status updates in the update itself."""

    _native_ops: ClassVar[frozenset[str]] = frozenset()

    _any_loop: bool = False
    """True when every async operation of the backend works from any event loop (holds
    nothing bound to one loop): the blocking forms then run it on the calling thread's
    own loop instead of the shared portal thread (:func:`~flowkit._concurrency.wait_for`).
    A subclass that defines an async operation (or gets one from a mixin) is back to
    False unless it sets the flag in its own body: its resources (a connection made on
    one loop) must keep seeing one loop."""

    _inline_ops: frozenset[str] = frozenset()
    """Operations whose async form answers without awaiting anything when run by
    :func:`~flowkit._concurrency.run_inline` (or raises ``NotInline`` having done
    nothing): their blocking forms run them so, on the calling thread. The operations
    of a plain seam are added by the class statement. Dropped, like
    ``_any_loop``, by a subclass that brings an async operation of its own."""

    def _home_portal(self) -> Portal | None:
        """The portal thread this backend's async operations run on anyway (a server
        database's connections live there), for the blocking forms to send them straight
        to it; None: the shared portal (:func:`~flowkit._concurrency.wait_for`)."""
        return None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        native = {op for op in ALL_OPS if _own(cls, op)}
        native |= {"a" + op for op in ALL_OPS if _own(cls, "a" + op) and not _derived(cls, op)}
        # A public method the backend writes wins over a seam it inherits: its own plain
        # form gets the async form that runs it in a worker thread (@operation's).
        for op in SEAMS:
            if op in native and "a" + op not in native:
                setattr(cls, "a" + op, _PLAIN_CALLS[op])
        seamed = {
            op
            for op, seam in SEAMS.items()
            if not {op, "a" + op} & native and _own(cls, "_a" + seam, "_" + seam)
        }
        # Implementing an operation's seam (async or plain) implements its async form.
        native |= {"a" + op for op in seamed}
        cls._native_ops = frozenset(native)
        # _any_loop and _inline_ops hold for the async operations of the class that set
        # them: a subclass (or a mixin) bringing its own async operation does not inherit them.
        async_forms = [("a" + op, op) for op in ALL_OPS] + [("_a" + s, "") for s in SEAMS.values()]
        for flag, off in (("_any_loop", False), ("_inline_ops", frozenset())):
            owner = next(k for k in cls.__mro__ if flag in k.__dict__)
            if owner is not cls and any(
                getattr(cls, name) is not getattr(owner, name) and not _derived(cls, op)
                for name, op in async_forms
            ):
                setattr(cls, flag, off)
        # The base class's async seam runs a plain seam on the calling thread when run inline.
        plain = {op for op in seamed if not _own(cls, "_a" + SEAMS[op])}
        if not plain <= cls._inline_ops:
            cls._inline_ops = cls._inline_ops | plain
        if "fenced_update_run" not in cls.__dict__:
            form = next((n for n in ("aupdate_run", "update_run") if n in native), None)
            cls.fenced_update_run = form is not None and _takes(getattr(cls, form), "lease_owner")
        missing = [op for op in REQUIRED_OPS if op not in native and "a" + op not in native]
        if missing:
            wanted = " and ".join(f"{op}() or a{op}()" for op in missing)
            raise FlowConfigurationError(
                f"{cls.__qualname__} must define {wanted}: they are the minimum a flow "
                "persistence backend needs."
            )
        for flag, ops in CAPABILITY_OPS.items():
            lacking = [op for op in ops if op not in native and "a" + op not in native]
            if getattr(cls, flag) and lacking:
                names = ", ".join(f"{op}()" for op in lacking)
                raise FlowConfigurationError(
                    f"{cls.__qualname__} sets {flag} = True but does not define {names} "
                    f"(sync or async). Define them, or set {flag} = False."
                )

    # -- derivation, the one place where flavours meet -------------------------------

    def _unsupported(self, op: str) -> Any:
        if op in NO_OP_DEFAULTS:
            return None
        flag = next(flag for flag, ops in CAPABILITY_OPS.items() if op in ops)
        raise UnsupportedOperationError(
            f"{type(self).__qualname__} does not implement {op}() or a{op}(), which this "
            f"feature needs. Implement it in the backend (and set {flag} = True), or use a "
            "built-in backend such as SQLiteFlowPersistence."
        )

    async def _fallback(self, op: str, *args: Any, **kwargs: Any) -> Any:
        """The async form of ``op`` for a backend that does not define it: its plain
        form in a worker thread if it defines that, else the composition of other
        operations (``claim_run``; ``begin_run`` and ``end_run`` are composed behind
        their seams, :meth:`_hand_on`), a no-op (``init_db``, ``close``) or
        UnsupportedOperationError."""
        if op == "list_runs" and kwargs.get("metadata") is None:
            # only when given: a backend written before the filter existed still lists
            kwargs.pop("metadata", None)
        if op == "update_run" and kwargs.get("lease_owner") is None:
            kwargs.pop("lease_owner", None)  # the same for an update_run without fencing
        if op in self._native_ops:
            return await in_thread(getattr(self, op), *args, **kwargs)
        if op in COMPOSITE_OPS:
            return await getattr(self, "_composed_" + op)(*args, **kwargs)
        return self._unsupported(op)

    async def _composed_begin_run(self, start: RunStart) -> tuple[RunRecord, Checkpoint]:
        run_id, owner = start.run_id, start.owner
        run = await self.acreate_run(
            run_id, start.flow_name, fingerprint=start.fingerprint, info=start.info, exist_ok=True
        )
        _rules.check_flow(run, start.flow_name)
        if owner is not None:
            run = await self.aacquire_lease(run_id, owner, _rules.lease_ttl(start.ttl))
        try:
            saved = await self.asave_checkpoint(
                run_id,
                start.method_name,
                start.state,
                expected_seq=start.expected_seq,
                meta=start.meta,
                lease_owner=owner,
            )
        except BaseException:
            if owner is not None:  # the lease was taken for this save: give it back
                with contextlib.suppress(Exception):
                    await self.arelease_lease(run_id, owner)
            raise
        return run.replace(last_seq=saved.seq, status="running", updated_at=saved.created_at), saved

    async def _composed_claim_run(
        self, run_id: str, owner: str, ttl: float
    ) -> tuple[RunRecord, Checkpoint | None]:
        # Valid for any backend whose saves are fenced by the lease: once the lease is
        # ours nobody else can append, so what we read next is the latest and stays so.
        run = await self.aacquire_lease(run_id, owner, ttl)
        try:
            latest = await self.aget_run(run_id)
            checkpoint = await self.aload_checkpoint(run_id)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.arelease_lease(run_id, owner)
            raise
        return (run if latest is None else latest), checkpoint

    async def _composed_end_run(self, write: CheckpointWrite) -> Checkpoint:
        owner = write.lease_owner
        saved = await self.asave_checkpoint(
            write.run_id,
            write.method_name,
            write.state,
            expected_seq=write.expected_seq,
            meta=write.meta,
            status=write.status,
            lease_owner=owner,
        )
        if owner is not None:
            await self.arelease_lease(write.run_id, owner)
        return saved

    # -- the seams (see the module docstring) -------------------------------------------
    #
    # Each is declared by its plain form, whose body is never run (a backend's plain seam
    # replaces it); its async form is derived by seam(). A backend implements one of
    # the two.

    def _begin_run(self, start: RunStart) -> tuple[RunRecord, Checkpoint]:
        raise NotImplementedError  # begin_run's plain seam

    _abegin_run = seam(_begin_run)

    def _write_checkpoint(self, write: CheckpointWrite) -> Checkpoint:
        raise NotImplementedError  # save_checkpoint's and end_run's plain seam

    _awrite_checkpoint = seam(_write_checkpoint)

    def _create_run(self, new: NewRun) -> RunRecord:
        raise NotImplementedError  # create_run's plain seam

    _acreate_run = seam(_create_run)

    def _update_run(self, update: RunUpdate) -> RunRecord:
        raise NotImplementedError  # update_run's plain seam

    _aupdate_run = seam(_update_run)

    def _list_runs(self, query: RunQuery) -> list[RunRecord]:
        raise NotImplementedError  # list_runs' plain seam

    _alist_runs = seam(_list_runs)

    async def _hand_on(self, request: Request) -> Any:
        """What a seam the backend does not implement does: the base class's composition
        (``begin_run``, ``end_run``), or UnsupportedOperationError. (A backend that writes
        the public method itself never gets here: its own async form runs, or the one
        that runs its plain form, see :meth:`__init_subclass__`.)"""
        op = request.op
        if isinstance(request, CheckpointWrite) and request.release:
            op = "end_run"
        if op in COMPOSITE_OPS:
            return await getattr(self, "_composed_" + op)(request)
        return self._unsupported(op)

    # -- required (CrewAI-compatible) --------------------------------------------------

    @operation
    async def asave_state(
        self, flow_uuid: str, method_name: str, state_data: dict[str, Any]
    ) -> None:
        """Append a checkpoint to run ``flow_uuid`` (creating the run if needed).

        Args:
            flow_uuid: The run id (the state's ``id``).
            method_name: The method that just finished.
            state_data: The state as a JSON-ready dict; the backend keeps its own copy.

        Raises:
            UnserializableStateError: ``state_data`` is not JSON-ready (built-in backends).
            PersistenceError: The storage failed.
        """
        raise NotImplementedError  # replaced by @operation

    save_state = blocking(asave_state)

    @operation
    async def aload_state(self, flow_uuid: str) -> dict[str, Any] | None:
        """Return the state of the run's latest checkpoint, or None for an unknown run.

        Args:
            flow_uuid: The run id.

        Returns:
            A fresh dict (mutating it does not change what is stored), or None.

        Raises:
            CorruptCheckpointError: The latest checkpoint cannot be read back.
        """
        raise NotImplementedError  # replaced by @operation

    load_state = blocking(aload_state)

    @operation
    async def ainit_db(self) -> None:
        """Prepare the storage (create tables, folders). Optional; idempotent.

        Built-in backends call it lazily on first use, so calling it is never required.
        """
        raise NotImplementedError  # replaced by @operation

    init_db = blocking(ainit_db)

    @operation
    async def aclose(self) -> None:
        """Release connections, threads and file handles. Optional; idempotent.

        The backend may be used again afterwards (it reconnects on demand).
        """
        raise NotImplementedError  # replaced by @operation

    close = blocking(aclose)

    def __enter__(self) -> FlowPersistence:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> FlowPersistence:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- history (supports_history) ----------------------------------------------------

    @operation
    async def ahistory(self, run_id: str) -> list[Checkpoint]:
        """Return the run's checkpoints in ascending ``seq`` order ([] for an unknown run).

        Raises:
            CorruptCheckpointError: A checkpoint cannot be read back (names its seq).
            UnsupportedOperationError: The backend has no history capability.
        """
        raise NotImplementedError  # replaced by @operation

    history = blocking(ahistory)

    @operation
    async def aload_checkpoint(self, run_id: str, seq: int | None = None) -> Checkpoint | None:
        """Return checkpoint ``seq`` of the run (the latest when ``seq`` is None).

        Returns:
            The checkpoint, or None if the run or that seq does not exist (pruned seqs
            do not exist any more).

        Raises:
            CorruptCheckpointError: The checkpoint cannot be read back.
            UnsupportedOperationError: The backend has no history capability.
        """
        raise NotImplementedError  # replaced by @operation

    load_checkpoint = blocking(aload_checkpoint)

    # -- runs (supports_runs) ----------------------------------------------------------

    async def acreate_run(
        self,
        run_id: str,
        flow_name: str,
        *,
        parent_run_id: str | None = None,
        parent_seq: int | None = None,
        fingerprint: str | None = None,
        info: dict[str, Any] | None = None,
        exist_ok: bool = False,
    ) -> RunRecord:
        """Create a run with no checkpoints (``last_seq`` 0, status ``"running"``).

        Forks pass ``parent_run_id`` / ``parent_seq`` (lineage only: the fork's first
        checkpoint is a copy, so it never depends on the parent's rows).

        Returns:
            The new run, or the existing one when ``exist_ok`` and the id is taken.

        Raises:
            RunExistsError: The id is taken and ``exist_ok`` is False.
        """
        new = NewRun(run_id, flow_name, parent_run_id, parent_seq, fingerprint, info, exist_ok)
        return await self._acreate_run(new)

    create_run = blocking(acreate_run)

    @operation
    async def aget_run(self, run_id: str) -> RunRecord | None:
        """Return the run's record, or None if unknown."""
        raise NotImplementedError  # replaced by @operation

    get_run = blocking(aget_run)

    async def aupdate_run(
        self,
        run_id: str,
        *,
        status: str | None = None,
        fingerprint: str | None = None,
        info: dict[str, Any] | None = None,
        lease_owner: str | None = None,
    ) -> RunRecord:
        """Change the given fields (``info`` replaces the stored dict); bumps ``updated_at``.

        With ``lease_owner`` the update is fenced like :meth:`save_checkpoint`: it is
        made only while the run's lease names that owner (an expired lease nobody took
        is still its own), checked by the storage in the same statement or transaction
        as the write. The engine's status updates (a run that failed) pass their owner,
        so a writer that lost its lease can never change the run.

        A backend written before ``lease_owner`` existed keeps working: when the
        keyword is not given it is not passed on (and the engine then renews the lease
        before an unfenced update, see ``FlowPersistence.fenced_update_run``).

        Raises:
            RunNotFoundError: No run with that id.
            RunLockedError: ``lease_owner`` given, and another owner holds an unexpired
                lease (nothing written).
            LeaseLostError: ``lease_owner`` given, and the lease is free or another
                owner's expired one (nothing written).
            FlowConfigurationError: ``status`` is not a known status.
        """
        return await self._aupdate_run(RunUpdate(run_id, status, fingerprint, info, lease_owner))

    update_run = blocking(aupdate_run)

    async def alist_runs(
        self,
        *,
        flow_name: str | None = None,
        status: str | None = None,
        parent_run_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[RunRecord]:
        """Runs matching every given filter, newest ``updated_at`` first (then run id).

        ``metadata={"user": "u123"}`` keeps runs whose metadata (``RunRecord.metadata``)
        has every given key with an equal JSON value (numbers by value, ``true`` never
        ``1``); ``limit`` and ``offset`` count matching runs.
        """
        query = RunQuery(flow_name, status, parent_run_id, limit, offset, metadata)
        return await self._alist_runs(query)

    list_runs = blocking(alist_runs)

    @operation
    async def adelete_run(self, run_id: str) -> bool:
        """Delete the run with its checkpoints and blobs; True if it existed.

        Runs forked from it keep their lineage fields and their own checkpoints.
        """
        raise NotImplementedError  # replaced by @operation

    delete_run = blocking(adelete_run)

    @operation
    async def aprune(self, run_id: str, *, keep_last: int) -> int:
        """Delete all but the newest ``keep_last`` checkpoints; return how many went.

        ``last_seq`` and the run record (lineage included) are unchanged; an unknown run
        prunes nothing.

        Raises:
            FlowConfigurationError: ``keep_last`` < 1.
        """
        raise NotImplementedError  # replaced by @operation

    prune = blocking(aprune)

    # -- compare-and-set (supports_cas) ------------------------------------------------

    async def asave_checkpoint(
        self,
        run_id: str,
        method_name: str,
        state: dict[str, Any],
        *,
        expected_seq: int | None,
        meta: dict[str, Any] | None = None,
        status: str = "running",
        flow_name: str | None = None,
        lease_owner: str | None = None,
    ) -> Checkpoint:
        """Append checkpoint ``last_seq + 1`` and update the run, in one transaction.

        Args:
            run_id: The run; created (with ``flow_name``) if missing.
            method_name: The method that just finished.
            state: JSON-ready state dict.
            expected_seq: The ``last_seq`` the caller last saw (0 for a new run), or None
                to append unconditionally.
            meta: Engine data stored verbatim with the checkpoint.
            status: The run's status after this checkpoint.
            flow_name: Stored when this save creates the run.
            lease_owner: The writer. Fencing: if not None and the run exists, the save
                is refused unless the run's lease names this owner (a free or expired
                lease does not admit it). None: no lease check (``save_state``).

        Returns:
            The stored checkpoint.

        Raises:
            ConcurrentUpdateError: ``expected_seq`` differs from the stored ``last_seq``.
            RunLockedError: Another owner holds an unexpired lease on the run.
            LeaseLostError: ``lease_owner`` does not hold the lease (it is free, or
                another owner's expired one).
            UnserializableStateError: ``state`` or ``meta`` is not JSON-ready.
                (Nothing is written when any of these is raised.)
        """
        write = CheckpointWrite(
            run_id, method_name, state, expected_seq, meta, status, flow_name, lease_owner, False
        )
        return await self._awrite_checkpoint(write)

    save_checkpoint = blocking(asave_checkpoint)

    # -- leases (supports_leases) ------------------------------------------------------

    @operation
    async def aacquire_lease(self, run_id: str, owner: str, ttl: float) -> RunRecord:
        """Take (or extend) the run's lease for ``ttl`` seconds.

        Succeeds when the lease is free, expired, already held by ``owner``, or held by
        an owner known to be dead (see :meth:`claim_run`).

        Returns:
            The run with ``lease_owner`` = owner and ``lease_expires_at`` = now + ttl.

        Raises:
            RunNotFoundError: No run with that id.
            RunLockedError: A live owner holds an unexpired lease (names holder, expiry).
        """
        raise NotImplementedError  # replaced by @operation

    acquire_lease = blocking(aacquire_lease)

    @operation
    async def arenew_lease(self, run_id: str, owner: str, ttl: float) -> None:
        """Push our lease's expiry to now + ``ttl``.

        Raises:
            LeaseLostError: ``owner`` does not hold the lease any more.
        """
        raise NotImplementedError  # replaced by @operation

    renew_lease = blocking(arenew_lease)

    @operation
    async def arelease_lease(self, run_id: str, owner: str) -> None:
        """Give the lease up; does nothing unless ``owner`` holds it."""
        raise NotImplementedError  # replaced by @operation

    release_lease = blocking(arelease_lease)

    # -- one transaction per kickoff boundary (composed from the above by default) -------

    async def abegin_run(
        self,
        run_id: str,
        flow_name: str,
        *,
        owner: str | None,
        ttl: float | None = None,
        fingerprint: str | None = None,
        info: dict[str, Any] | None = None,
        method_name: str,
        state: dict[str, Any],
        meta: dict[str, Any] | None = None,
        expected_seq: int | None,
    ) -> tuple[RunRecord, Checkpoint]:
        """Start executing a run: create it if missing, take its lease, append a checkpoint.

        Built-in backends do all three in one transaction; for other backends the base
        class calls ``create_run(..., exist_ok=True)``, ``acquire_lease`` and
        ``save_checkpoint`` (giving the lease back if the save fails), so a backend with
        runs, compare-and-set and leases needs nothing more.

        Args:
            run_id: The run; created with ``flow_name``, ``fingerprint`` and ``info`` if
                missing (an existing run keeps its fields).
            flow_name: The flow starting it; an existing run of another flow is refused.
            owner: The lease owner to install for ``ttl`` seconds, or None for no lease.
            ttl: Lease duration in seconds (needed with an owner).
            method_name: Method name of the checkpoint.
            state: JSON-ready state of the checkpoint.
            meta: Engine data stored verbatim with the checkpoint.
            expected_seq: The ``last_seq`` the caller expects (0 for a new run), or None.

        Returns:
            The run after the call (lease held, ``last_seq`` = the new seq, status
            ``"running"``) and the stored checkpoint.

        Raises:
            RunExistsError: The run exists and belongs to another flow.
            RunLockedError: Another owner holds an unexpired lease.
            ConcurrentUpdateError: ``expected_seq`` differs from the stored ``last_seq``.
            UnserializableStateError: ``state``, ``meta`` or ``info`` is not JSON-ready.
                (Built-in backends write nothing when any of these is raised.)
        """
        start = RunStart(
            run_id, flow_name, owner, ttl, fingerprint, info, method_name, state, meta, expected_seq
        )
        return await self._abegin_run(start)

    begin_run = blocking(abegin_run)

    async def aend_run(
        self,
        run_id: str,
        method_name: str,
        state: dict[str, Any],
        *,
        owner: str | None,
        expected_seq: int | None,
        meta: dict[str, Any] | None = None,
        status: str = "completed",
    ) -> Checkpoint:
        """Append the last checkpoint of an execution and give up ``owner``'s lease.

        :meth:`save_checkpoint` with ``lease_owner=owner`` followed by
        :meth:`release_lease`, in one transaction on the built-in backends (composed
        from those two otherwise). The release is skipped when the save is refused.

        Raises:
            The errors of :meth:`save_checkpoint` (nothing written, lease kept).
        """
        write = CheckpointWrite(
            run_id, method_name, state, expected_seq, meta, status, None, owner, True
        )
        return await self._awrite_checkpoint(write)

    end_run = blocking(aend_run)

    @operation
    async def aclaim_run(
        self, run_id: str, owner: str, ttl: float
    ) -> tuple[RunRecord, Checkpoint | None]:
        """Take the run for executing it: its lease, its record and its latest checkpoint.

        In one transaction (built-in backends): take the run's lease for ``owner`` for
        ``ttl`` seconds, and read the run record (lease held) and its latest checkpoint.
        Everything the engine executes after a claim comes from what the claim returned,
        so a run advanced or finished by someone else is never re-executed from a stale
        read. The lease can be taken when it is free, expired, already held by
        ``owner``, or held by an owner known to be dead: an owner on this host whose
        process is gone (see ``flowkit.persistence._rules``), or, on PostgreSQL, an owner
        whose database session ended. The lease's expiry is the last resort.

        The base class composes it as :meth:`acquire_lease` followed by :meth:`get_run`
        and :meth:`load_checkpoint`, which is as safe for any backend whose saves are
        fenced by the lease (a save naming an owner that does not hold the lease is
        refused): the reads are made under the lease::

            run, latest = persistence.claim_run("run-1", owner, ttl=30)
            try:
                ...  # execute from latest.state, save with lease_owner=owner
            finally:
                persistence.release_lease("run-1", owner)

        Args:
            run_id: The run to claim.
            owner: A unique id for this execution. The engine's ids read
                ``host:pid:start:token``, which lets a claimant on the same host tell
                that the owner's process is gone.
            ttl: Lease duration in seconds (renew it with :meth:`renew_lease`).

        Returns:
            The run record as it is with the lease held (``lease_owner`` = owner), and
            its latest checkpoint (None if it has none).

        Raises:
            RunNotFoundError: No run with that id.
            RunLockedError: A live owner holds an unexpired lease (names the holder and
                the expiry, and says what to do).
            FlowConfigurationError: ``ttl`` is not positive.
        """
        raise NotImplementedError  # replaced by @operation

    claim_run = blocking(aclaim_run)


# The async form of a seam operation for a backend that writes its plain form (see
# FlowPersistence.__init_subclass__): @operation's, which runs it in a worker thread.
_PLAIN_CALLS: dict[str, Callable[..., Coroutine[Any, Any, Any]]] = {
    op: operation(getattr(FlowPersistence, "a" + op)) for op in SEAMS
}
