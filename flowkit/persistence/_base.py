"""The interface between the flow engine and storage: :class:`FlowPersistence`.

Every operation exists twice, ``op(...)`` and ``await aop(...)``. A backend overrides the
flavour that suits it and this module derives the other one, in one place
(:meth:`FlowPersistence._derived_sync` / :meth:`FlowPersistence._derived_async`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from abc import ABC
from collections.abc import Coroutine, Mapping
from types import TracebackType
from typing import Any, ClassVar

from flowkit.exceptions import FlowConfigurationError, UnsupportedOperationError
from flowkit.persistence._portal import Portal
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

_sync_portal = Portal("flowkit-persistence-sync")


def _run_coroutine_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Block until ``coro`` is done, whether or not this thread runs an event loop."""
    if _sync_portal.in_portal_thread():
        # An async backend method called a derived sync one: waiting on our own loop
        # would deadlock, so that one call gets a loop of its own in a worker thread.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, coro).result()
    return _sync_portal.run(coro)


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

    Subclasses must define at least one flavour of each required operation, and every
    operation of each capability whose flag they set; otherwise the class statement raises
    :class:`~flowkit.exceptions.FlowConfigurationError`. Calling an optional operation the
    backend lacks raises :class:`~flowkit.exceptions.UnsupportedOperationError`.

    Derivation: a missing async flavour runs the sync one in a worker thread
    (``asyncio.to_thread``); a missing sync flavour runs the coroutine on a private
    background event loop and waits, which works with or without a running loop in the
    calling thread and never nests loops.
    """

    supports_history: ClassVar[bool] = False
    supports_runs: ClassVar[bool] = False
    supports_cas: ClassVar[bool] = False
    supports_leases: ClassVar[bool] = False

    secret_key: str | bytes | None = None
    """Key the engine uses to encrypt secret state fields; backends only carry it."""

    _native_ops: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        native = {
            name
            for op in ALL_OPS
            for name in (op, "a" + op)
            if getattr(cls, name) is not getattr(FlowPersistence, name)
        }
        cls._native_ops = frozenset(native)
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

    def _derived_sync(self, op: str, *args: Any, **kwargs: Any) -> Any:
        if "a" + op in self._native_ops:
            return _run_coroutine_sync(getattr(self, "a" + op)(*args, **kwargs))
        if op in COMPOSITE_OPS:
            return _run_coroutine_sync(getattr(self, "_composed_" + op)(*args, **kwargs))
        return self._unsupported(op)

    async def _derived_async(self, op: str, *args: Any, **kwargs: Any) -> Any:
        if op in self._native_ops:
            return await asyncio.to_thread(getattr(self, op), *args, **kwargs)
        if op in COMPOSITE_OPS:
            return await getattr(self, "_composed_" + op)(*args, **kwargs)
        return self._unsupported(op)

    async def _composed_begin_run(
        self,
        run_id: str,
        flow_name: str,
        *,
        owner: str | None,
        ttl: float | None,
        fingerprint: str | None,
        info: dict[str, Any] | None,
        method_name: str,
        state: dict[str, Any],
        meta: dict[str, Any] | None,
        expected_seq: int | None,
    ) -> tuple[RunRecord, Checkpoint]:
        from flowkit.persistence import _rules

        run = await self.acreate_run(
            run_id, flow_name, fingerprint=fingerprint, info=info, exist_ok=True
        )
        _rules.check_flow(run, flow_name)
        if owner is not None:
            run = await self.aacquire_lease(run_id, owner, _rules.lease_ttl(ttl))
        try:
            saved = await self.asave_checkpoint(
                run_id,
                method_name,
                state,
                expected_seq=expected_seq,
                meta=meta,
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

    async def _composed_end_run(
        self,
        run_id: str,
        method_name: str,
        state: dict[str, Any],
        *,
        owner: str | None,
        expected_seq: int | None,
        meta: dict[str, Any] | None,
        status: str,
    ) -> Checkpoint:
        saved = await self.asave_checkpoint(
            run_id,
            method_name,
            state,
            expected_seq=expected_seq,
            meta=meta,
            status=status,
            lease_owner=owner,
        )
        if owner is not None:
            await self.arelease_lease(run_id, owner)
        return saved

    # -- required (CrewAI-compatible) --------------------------------------------------

    def save_state(self, flow_uuid: str, method_name: str, state_data: dict[str, Any]) -> None:
        """Append a checkpoint to run ``flow_uuid`` (creating the run if needed).

        Args:
            flow_uuid: The run id (the state's ``id``).
            method_name: The method that just finished.
            state_data: The state as a JSON-ready dict; the backend keeps its own copy.

        Raises:
            UnserializableStateError: ``state_data`` is not JSON-ready (built-in backends).
            PersistenceError: The storage failed.
        """
        return self._derived_sync("save_state", flow_uuid, method_name, state_data)  # type: ignore[no-any-return]

    async def asave_state(
        self, flow_uuid: str, method_name: str, state_data: dict[str, Any]
    ) -> None:
        """Awaitable :meth:`save_state`."""
        return await self._derived_async("save_state", flow_uuid, method_name, state_data)  # type: ignore[no-any-return]

    def load_state(self, flow_uuid: str) -> dict[str, Any] | None:
        """Return the state of the run's latest checkpoint, or None for an unknown run.

        Args:
            flow_uuid: The run id.

        Returns:
            A fresh dict (mutating it does not change what is stored), or None.

        Raises:
            CorruptCheckpointError: The latest checkpoint cannot be read back.
        """
        return self._derived_sync("load_state", flow_uuid)  # type: ignore[no-any-return]

    async def aload_state(self, flow_uuid: str) -> dict[str, Any] | None:
        """Awaitable :meth:`load_state`."""
        return await self._derived_async("load_state", flow_uuid)  # type: ignore[no-any-return]

    def init_db(self) -> None:
        """Prepare the storage (create tables, folders). Optional; idempotent.

        Built-in backends call it lazily on first use, so calling it is never required.
        """
        return self._derived_sync("init_db")  # type: ignore[no-any-return]

    async def ainit_db(self) -> None:
        """Awaitable :meth:`init_db`."""
        return await self._derived_async("init_db")  # type: ignore[no-any-return]

    def close(self) -> None:
        """Release connections, threads and file handles. Optional; idempotent.

        The backend may be used again afterwards (it reconnects on demand).
        """
        return self._derived_sync("close")  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        """Awaitable :meth:`close`."""
        return await self._derived_async("close")  # type: ignore[no-any-return]

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

    def history(self, run_id: str) -> list[Checkpoint]:
        """Return the run's checkpoints in ascending ``seq`` order ([] for an unknown run).

        Raises:
            CorruptCheckpointError: A checkpoint cannot be read back (names its seq).
            UnsupportedOperationError: The backend has no history capability.
        """
        return self._derived_sync("history", run_id)  # type: ignore[no-any-return]

    async def ahistory(self, run_id: str) -> list[Checkpoint]:
        """Awaitable :meth:`history`."""
        return await self._derived_async("history", run_id)  # type: ignore[no-any-return]

    def load_checkpoint(self, run_id: str, seq: int | None = None) -> Checkpoint | None:
        """Return checkpoint ``seq`` of the run (the latest when ``seq`` is None).

        Returns:
            The checkpoint, or None if the run or that seq does not exist (pruned seqs
            do not exist any more).

        Raises:
            CorruptCheckpointError: The checkpoint cannot be read back.
            UnsupportedOperationError: The backend has no history capability.
        """
        return self._derived_sync("load_checkpoint", run_id, seq)  # type: ignore[no-any-return]

    async def aload_checkpoint(self, run_id: str, seq: int | None = None) -> Checkpoint | None:
        """Awaitable :meth:`load_checkpoint`."""
        return await self._derived_async("load_checkpoint", run_id, seq)  # type: ignore[no-any-return]

    # -- runs (supports_runs) ----------------------------------------------------------

    def create_run(
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
        return self._derived_sync(  # type: ignore[no-any-return]
            "create_run",
            run_id,
            flow_name,
            parent_run_id=parent_run_id,
            parent_seq=parent_seq,
            fingerprint=fingerprint,
            info=info,
            exist_ok=exist_ok,
        )

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
        """Awaitable :meth:`create_run`."""
        return await self._derived_async(  # type: ignore[no-any-return]
            "create_run",
            run_id,
            flow_name,
            parent_run_id=parent_run_id,
            parent_seq=parent_seq,
            fingerprint=fingerprint,
            info=info,
            exist_ok=exist_ok,
        )

    def get_run(self, run_id: str) -> RunRecord | None:
        """Return the run's record, or None if unknown."""
        return self._derived_sync("get_run", run_id)  # type: ignore[no-any-return]

    async def aget_run(self, run_id: str) -> RunRecord | None:
        """Awaitable :meth:`get_run`."""
        return await self._derived_async("get_run", run_id)  # type: ignore[no-any-return]

    def update_run(
        self,
        run_id: str,
        *,
        status: str | None = None,
        fingerprint: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> RunRecord:
        """Change the given fields (``info`` replaces the stored dict); bumps ``updated_at``.

        Raises:
            RunNotFoundError: No run with that id.
            FlowConfigurationError: ``status`` is not a known status.
        """
        return self._derived_sync(  # type: ignore[no-any-return]
            "update_run", run_id, status=status, fingerprint=fingerprint, info=info
        )

    async def aupdate_run(
        self,
        run_id: str,
        *,
        status: str | None = None,
        fingerprint: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> RunRecord:
        """Awaitable :meth:`update_run`."""
        return await self._derived_async(  # type: ignore[no-any-return]
            "update_run", run_id, status=status, fingerprint=fingerprint, info=info
        )

    def list_runs(
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
        return self._derived_sync(  # type: ignore[no-any-return]
            "list_runs",
            flow_name=flow_name,
            status=status,
            parent_run_id=parent_run_id,
            limit=limit,
            offset=offset,
            # only when given: a backend written before the filter existed still lists
            **({} if metadata is None else {"metadata": metadata}),
        )

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
        """Awaitable :meth:`list_runs`."""
        return await self._derived_async(  # type: ignore[no-any-return]
            "list_runs",
            flow_name=flow_name,
            status=status,
            parent_run_id=parent_run_id,
            limit=limit,
            offset=offset,
            **({} if metadata is None else {"metadata": metadata}),
        )

    def delete_run(self, run_id: str) -> bool:
        """Delete the run with its checkpoints and blobs; True if it existed.

        Runs forked from it keep their lineage fields and their own checkpoints.
        """
        return self._derived_sync("delete_run", run_id)  # type: ignore[no-any-return]

    async def adelete_run(self, run_id: str) -> bool:
        """Awaitable :meth:`delete_run`."""
        return await self._derived_async("delete_run", run_id)  # type: ignore[no-any-return]

    def prune(self, run_id: str, *, keep_last: int) -> int:
        """Delete all but the newest ``keep_last`` checkpoints; return how many went.

        ``last_seq`` and the run record (lineage included) are unchanged; an unknown run
        prunes nothing.

        Raises:
            FlowConfigurationError: ``keep_last`` < 1.
        """
        return self._derived_sync("prune", run_id, keep_last=keep_last)  # type: ignore[no-any-return]

    async def aprune(self, run_id: str, *, keep_last: int) -> int:
        """Awaitable :meth:`prune`."""
        return await self._derived_async("prune", run_id, keep_last=keep_last)  # type: ignore[no-any-return]

    # -- compare-and-set (supports_cas) ------------------------------------------------

    def save_checkpoint(
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
        return self._derived_sync(  # type: ignore[no-any-return]
            "save_checkpoint",
            run_id,
            method_name,
            state,
            expected_seq=expected_seq,
            meta=meta,
            status=status,
            flow_name=flow_name,
            lease_owner=lease_owner,
        )

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
        """Awaitable :meth:`save_checkpoint`."""
        return await self._derived_async(  # type: ignore[no-any-return]
            "save_checkpoint",
            run_id,
            method_name,
            state,
            expected_seq=expected_seq,
            meta=meta,
            status=status,
            flow_name=flow_name,
            lease_owner=lease_owner,
        )

    # -- leases (supports_leases) ------------------------------------------------------

    def acquire_lease(self, run_id: str, owner: str, ttl: float) -> RunRecord:
        """Take (or extend) the run's lease for ``ttl`` seconds.

        Succeeds when the lease is free, expired, already held by ``owner``, or held by
        an owner known to be dead (see :meth:`claim_run`).

        Returns:
            The run with ``lease_owner`` = owner and ``lease_expires_at`` = now + ttl.

        Raises:
            RunNotFoundError: No run with that id.
            RunLockedError: A live owner holds an unexpired lease (names holder, expiry).
        """
        return self._derived_sync("acquire_lease", run_id, owner, ttl)  # type: ignore[no-any-return]

    async def aacquire_lease(self, run_id: str, owner: str, ttl: float) -> RunRecord:
        """Awaitable :meth:`acquire_lease`."""
        return await self._derived_async("acquire_lease", run_id, owner, ttl)  # type: ignore[no-any-return]

    def renew_lease(self, run_id: str, owner: str, ttl: float) -> None:
        """Push our lease's expiry to now + ``ttl``.

        Raises:
            LeaseLostError: ``owner`` does not hold the lease any more.
        """
        return self._derived_sync("renew_lease", run_id, owner, ttl)  # type: ignore[no-any-return]

    async def arenew_lease(self, run_id: str, owner: str, ttl: float) -> None:
        """Awaitable :meth:`renew_lease`."""
        return await self._derived_async("renew_lease", run_id, owner, ttl)  # type: ignore[no-any-return]

    def release_lease(self, run_id: str, owner: str) -> None:
        """Give the lease up; does nothing unless ``owner`` holds it."""
        return self._derived_sync("release_lease", run_id, owner)  # type: ignore[no-any-return]

    async def arelease_lease(self, run_id: str, owner: str) -> None:
        """Awaitable :meth:`release_lease`."""
        return await self._derived_async("release_lease", run_id, owner)  # type: ignore[no-any-return]

    # -- one transaction per kickoff boundary (composed from the above by default) -------

    def begin_run(
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
        return self._derived_sync(  # type: ignore[no-any-return]
            "begin_run",
            run_id,
            flow_name,
            owner=owner,
            ttl=ttl,
            fingerprint=fingerprint,
            info=info,
            method_name=method_name,
            state=state,
            meta=meta,
            expected_seq=expected_seq,
        )

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
        """Awaitable :meth:`begin_run`."""
        return await self._derived_async(  # type: ignore[no-any-return]
            "begin_run",
            run_id,
            flow_name,
            owner=owner,
            ttl=ttl,
            fingerprint=fingerprint,
            info=info,
            method_name=method_name,
            state=state,
            meta=meta,
            expected_seq=expected_seq,
        )

    def end_run(
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
        return self._derived_sync(  # type: ignore[no-any-return]
            "end_run",
            run_id,
            method_name,
            state,
            owner=owner,
            expected_seq=expected_seq,
            meta=meta,
            status=status,
        )

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
        """Awaitable :meth:`end_run`."""
        return await self._derived_async(  # type: ignore[no-any-return]
            "end_run",
            run_id,
            method_name,
            state,
            owner=owner,
            expected_seq=expected_seq,
            meta=meta,
            status=status,
        )

    def claim_run(self, run_id: str, owner: str, ttl: float) -> tuple[RunRecord, Checkpoint | None]:
        """Take the run for executing it: its lease, its record and its latest checkpoint.

        In one transaction (built-in backends): take the run's lease for ``owner`` for
        ``ttl`` seconds, and read the run record (lease held) and its latest checkpoint.
        Everything the engine executes after a claim comes from what the claim returned,
        so a run advanced or finished by someone else is never re-executed from a stale
        read. The lease can be taken when it is free, expired, already held by
        ``owner``, or held by an owner known to be dead: an owner on this host whose
        process is gone (see ``flowkit.persistence._owner``), or, on PostgreSQL, an owner
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
        return self._derived_sync("claim_run", run_id, owner, ttl)  # type: ignore[no-any-return]

    async def aclaim_run(
        self, run_id: str, owner: str, ttl: float
    ) -> tuple[RunRecord, Checkpoint | None]:
        """Awaitable :meth:`claim_run`."""
        return await self._derived_async("claim_run", run_id, owner, ttl)  # type: ignore[no-any-return]
