"""Automatic recovery: finish the runs of a flow that a dead process left behind.

``MyFlow.recover()`` lists the flow's unfinished runs (status ``"running"``; interrupted
runs are not unfinished, they wait for an answer) and resumes each one. Whether a run is
orphaned is decided by the storage when the resume takes the run: a run whose owner is
alive is refused with :class:`~flowkit.exceptions.RunLockedError` and skipped, so the
liveness rules (same-host process checks, the database session, lease expiry) live in
one place and this module does not repeat them. Two recoverers racing for one run: one
takes it, the other is refused -- each run is resumed at most once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ._flow import Flow
    from .persistence import FlowPersistence

__all__ = ["RecoveredRun", "RecoveryReport", "recover"]

log = logging.getLogger("flowkit.recover")

Outcome = Literal["completed", "interrupted", "failed", "skipped"]
#: runs listed per storage call while looking for unfinished runs
_PAGE = 200


@dataclass(frozen=True, slots=True)
class RecoveredRun:
    """What recovery did with one unfinished run.

    ``outcome``: ``"completed"`` (resumed to the end), ``"interrupted"`` (resumed, now
    waiting for an answer), ``"failed"`` (resumed, and a method raised; ``detail`` names
    the error) or ``"skipped"`` (not resumed; ``detail`` says why, e.g. its owner is
    alive or another recoverer took it).
    """

    run_id: str
    outcome: Outcome
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """The result of :meth:`flowkit.Flow.recover`: one entry per unfinished run found.

    Example::

        report = MyFlow.recover()
        print(f"resumed {len(report.resumed)} runs, {len(report.failed)} failed")
    """

    flow_name: str
    runs: tuple[RecoveredRun, ...] = field(default=())

    def _with(self, *outcomes: str) -> list[str]:
        return [r.run_id for r in self.runs if r.outcome in outcomes]

    @property
    def resumed(self) -> list[str]:
        """Ids of the runs this call resumed (whatever their outcome)."""
        return self._with("completed", "interrupted", "failed")

    @property
    def completed(self) -> list[str]:
        """Ids of the resumed runs that finished."""
        return self._with("completed")

    @property
    def interrupted(self) -> list[str]:
        """Ids of the resumed runs that now wait for an answer."""
        return self._with("interrupted")

    @property
    def failed(self) -> list[str]:
        """Ids of the resumed runs in which a method raised (see ``runs`` for the error)."""
        return self._with("failed")

    @property
    def skipped(self) -> list[str]:
        """Ids of the unfinished runs left alone (owner alive, taken by another
        recoverer, finished meanwhile)."""
        return self._with("skipped")


async def unfinished_run_ids(backend: FlowPersistence, flow_name: str) -> list[str]:
    """Every run of ``flow_name`` whose status is ``"running"``, oldest update first.

    Collected before anything is resumed: resuming changes a run's status and
    ``updated_at``, which would shift the pages of a listing still in progress.
    """
    found: dict[str, None] = {}
    offset = 0
    while True:
        page = await backend.alist_runs(
            flow_name=flow_name, status="running", limit=_PAGE, offset=offset
        )
        for run in page:
            found.setdefault(run.run_id)
        if len(page) < _PAGE:
            break
        offset += _PAGE
    return list(reversed(found))


async def recover(
    cls: type[Flow[Any]], persistence: FlowPersistence | None, options: dict[str, Any]
) -> RecoveryReport:
    """Resume every orphaned unfinished run of ``cls`` (see :meth:`Flow.recover`)."""
    from ._execution import durable_backend

    probe = cls(persistence=persistence, **options)  # validates the options once
    backend = durable_backend(probe, "recover")
    flow_name = cls._graph.flow_name
    results = [
        await recover_run(cls, backend, run_id, options)
        for run_id in await unfinished_run_ids(backend, flow_name)
    ]
    return RecoveryReport(flow_name, tuple(results))


async def recover_run(
    cls: type[Flow[Any]], backend: FlowPersistence, run_id: str, options: dict[str, Any]
) -> RecoveredRun:
    """Resume one run if it is still unfinished and nobody alive holds it."""
    from ._execution import prepare_resume
    from ._flow import MISSING
    from ._interrupt import Interrupted
    from .exceptions import (
        ConcurrentUpdateError,
        DefinitionChangedError,
        FlowkitError,
        ResumeError,
        RunLockedError,
    )

    # Read again: another recoverer may have finished (or failed) it since the listing,
    # and a failed run must not be retried behind its user's back.
    run = await backend.aget_run(run_id)
    if run is None or run.status != "running":
        status = "deleted" if run is None else run.status
        return _skipped(run_id, f"no longer running ({status})")
    flow = cls(persistence=backend, **options)
    try:
        # The status is checked again under the lease the resume takes: a run that
        # failed (or finished) between the read above and the claim is not resumed.
        result = await flow._execute(
            lambda: prepare_resume(flow, run_id, MISSING, False, only_running=True)
        )
    except RunLockedError:
        return _skipped(run_id, "its owner is alive (or its lease has not expired yet)")
    except ConcurrentUpdateError:
        return _skipped(run_id, "another process took it first")
    except DefinitionChangedError as exc:
        return _skipped(run_id, str(exc))
    except ResumeError as exc:
        # Refused before anything ran: finished by someone else since the read above, or
        # not resumable at all (which the error explains).
        now = await backend.aget_run(run_id)
        if now is None or now.status != "running":
            return _skipped(
                run_id, f"no longer running ({'deleted' if now is None else now.status})"
            )
        return _failed(run_id, exc)
    except FlowkitError as exc:
        # Resumed, then refused or failed inside flowkit (e.g. a method call limit):
        # report it like a method's error.
        return _failed(run_id, exc)
    except Exception as exc:  # a user method raised: the run is stored as failed
        return _failed(run_id, exc)
    if isinstance(result, Interrupted):
        log.info("recovered run %s: waiting for input in %s", run_id, result.method_name)
        return RecoveredRun(run_id, "interrupted", f"waiting for input in {result.method_name}")
    log.info("recovered run %s: completed", run_id)
    return RecoveredRun(run_id, "completed")


def _skipped(run_id: str, why: str) -> RecoveredRun:
    log.debug("recovery skipped run %s: %s", run_id, why)
    return RecoveredRun(run_id, "skipped", why)


def _failed(run_id: str, exc: BaseException) -> RecoveredRun:
    log.info("recovered run %s: failed with %s: %s", run_id, type(exc).__name__, exc)
    return RecoveredRun(run_id, "failed", f"{type(exc).__name__}: {exc}")
