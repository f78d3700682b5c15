"""``kickoff(metadata=...)`` / ``resume(metadata=...)``: the caller's JSON labels for a run,
merged (shallow, the new keys win) into the run's stored ``info["metadata"]`` before its
first method runs: by the kickoff's own writes (``prepare_kickoff``), or, for a resume,
once the run is claimed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from .exceptions import FlowConfigurationError, UnsupportedOperationError
from .persistence._metadata import INFO_KEY, check_metadata, json_equal, metadata_of

if TYPE_CHECKING:
    from ._flow import Flow
    from ._runner import Run

Prepare = Callable[[], Awaitable["Run"]]


def metadata_step(
    flow: Flow[Any], metadata: Mapping[str, Any] | None, operation: str
) -> Callable[[Prepare], Prepare]:
    """Check ``metadata`` now (before anything is stored) and return what wraps a run's
    preparation so that it also stores the metadata, merged (shallow, the new keys win)
    into what the run already has. The identity when ``metadata`` is None."""
    if metadata is None:
        return lambda prepare: prepare
    wanted = checked_metadata(flow, metadata, operation)

    def wrap(prepare: Prepare) -> Prepare:
        async def prepare_and_store() -> Run:
            run = await prepare()
            try:
                await _store(run, wanted)
            except BaseException:
                await run.journal.close()  # gives the claimed lease back
                raise
            return run

        return prepare_and_store

    return wrap


def checked_metadata(
    flow: Flow[Any], metadata: Mapping[str, Any], operation: str
) -> dict[str, Any]:
    """``metadata`` as a plain JSON copy, checked before anything is stored: its values,
    and that ``flow`` has persistence that keeps run records. A kickoff hands the result
    to the write that creates (or re-kicks) the run; a resume merges it with
    :func:`metadata_step`."""
    from ._execution import _is_durable

    call = f"{type(flow).__qualname__}.{operation}(metadata=...)"
    wanted = check_metadata(metadata, what=f"{operation}(metadata=...)")
    backend = flow._backend()
    if backend is None:
        raise FlowConfigurationError(
            f"{call} stores the metadata with the run, which needs persistence: add "
            "@persist to the class (or a method), or pass Flow(persistence=...); or leave "
            "metadata out."
        )
    if not _is_durable(backend):
        raise UnsupportedOperationError(
            f"{call} stores the metadata in the run's record, which "
            f"{type(backend).__name__} does not keep (it needs runs, history and "
            "compare-and-set); use a built-in backend, or leave metadata out."
        )
    return wanted


async def _store(run: Run, wanted: dict[str, Any]) -> None:
    from ._journal import DurableJournal

    journal = run.journal
    assert isinstance(journal, DurableJournal) and run.backend is not None
    # The journal holds the run's info as claimed (under the lease, which no other
    # writer has now); it writes it back whole if the run fails, so it gets the merge too.
    info = journal.run_info
    merged = {**metadata_of(info.other), **wanted}
    # JSON equality, not ==: True == 1 in Python, but a label true is not a label 1
    if json_equal(info.other.get(INFO_KEY), merged):
        return  # already stored by the kickoff's own first write (begin_run)
    info.other[INFO_KEY] = merged
    await run.backend.aupdate_run(run.run_id, info=info.to_json())
