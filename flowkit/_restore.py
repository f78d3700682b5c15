"""``kickoff(restore_from_state_id=X)``: a new run that starts from run X's latest state.

CrewAI's replacement for reloading by id. Built on :meth:`Flow.fork`: the new run is a
fork of X's latest checkpoint (lineage recorded), and the kickoff then reloads it by id
like any ``inputs={"id": ...}`` kickoff. A backend with only ``save_state`` /
``load_state`` has no runs to fork: the state is loaded and the new run starts from it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .exceptions import FlowConfigurationError, RunNotFoundError

if TYPE_CHECKING:
    from ._flow import Flow

__all__ = ["restore_from"]


async def restore_from(
    flow: Flow[Any], source_id: str, inputs: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Prepare ``flow`` to start a new run from ``source_id``'s latest state; return
    the inputs the kickoff runs with (they name the new run)."""
    from ._execution import _is_durable, load_state

    name = type(flow).__qualname__
    if not isinstance(source_id, str):
        raise FlowConfigurationError(
            f"{name}.kickoff(restore_from_state_id={source_id!r}): pass a run id (a string)."
        )
    backend = flow._backend()
    if backend is None:
        raise FlowConfigurationError(
            f"{name}.kickoff(restore_from_state_id={source_id!r}) needs persistence to read "
            "that run from: add @persist to the class (or a method), or pass "
            "Flow(persistence=...)."
        )
    given = dict(inputs or {})
    new_id = given.get("id")
    if new_id is not None and not isinstance(new_id, str):
        raise FlowConfigurationError(
            f"kickoff(inputs={{'id': {new_id!r}}}): a run id is a string (e.g. a UUID)."
        )
    if _is_durable(backend):
        run = await backend.aget_run(source_id)
        if run is None:
            raise _not_found(name, source_id, backend)
        child = await flow.fork_async(source_id, run.last_seq, new_run_id=new_id)
        return {**given, "id": child}
    data = await backend.aload_state(source_id)
    if data is None:
        raise _not_found(name, source_id, backend)
    state = load_state(flow, data, None, source_id, None)
    flow._state = flow._adapter.apply_inputs(state, {"id": new_id or str(uuid.uuid4())})
    given.pop("id", None)
    return given


def _not_found(name: str, source_id: str, backend: Any) -> RunNotFoundError:
    # CrewAI logs and starts from scratch; a mistyped id must not silently lose the
    # state the caller meant to continue from.
    return RunNotFoundError(
        f"{name}.kickoff(restore_from_state_id={source_id!r}): no stored state for that "
        f"run in {type(backend).__name__}. Check the id (list runs with `flowkit runs`), "
        "or kick off without restore_from_state_id to start fresh."
    )
