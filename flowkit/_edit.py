"""``Flow.update_state``: change a stored run's state by hand, with an audit record.

An edit never changes a stored checkpoint. It appends one (method name ``<edit>``)
whose state is the latest state with the new values, validated by the flow's state
model, and whose meta keeps the latest execution position -- so the run resumes exactly
where it stood -- plus an ``edit`` record: who, why, and the field-level diff.

The write is guarded twice: the run's lease is taken for the duration (a run being
executed by a live process is refused), and the save is compare-and-set on the seq
that was read (a checkpoint written meanwhile makes the edit fail, never lost).
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ._run_path import EDIT_METHOD
from .exceptions import (
    ConcurrentUpdateError,
    FlowUsageError,
    RunLockedError,
    RunNotFoundError,
    StateValidationError,
)

if TYPE_CHECKING:
    from ._flow import Flow
    from .persistence import Checkpoint

__all__ = ["EDIT_KEY", "EDIT_METHOD", "edit_of", "update_state"]

#: the key of the edit record in a checkpoint's meta
EDIT_KEY = "edit"
#: stored diff values are cut to this many characters (both full states stay stored)
VALUE_LIMIT = 200
_INDEX = re.compile(r"^\d+$")


def edit_of(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """The edit record of a checkpoint's meta, or None for an ordinary checkpoint."""
    record = meta.get(EDIT_KEY)
    return record if isinstance(record, dict) else None


def default_actor() -> str:
    """Who edits when no actor is given: the operating-system user."""
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):
        return "unknown"


def _set_path(data: dict[str, Any], path: str, value: Any, run_id: str) -> None:
    parts = path.split(".")
    target: Any = data
    for depth, part in enumerate(parts[:-1]):
        where = ".".join(["state", *parts[: depth + 1]])
        if isinstance(target, dict) and part in target:
            target = target[part]
        elif isinstance(target, list) and _INDEX.match(part) and int(part) < len(target):
            target = target[int(part)]
        else:
            raise StateValidationError(
                f"cannot edit run {run_id!r}: {where} does not exist (editing {path!r}); set "
                "an existing field, or the whole parent value."
            )
    last = parts[-1]
    if isinstance(target, list) and _INDEX.match(last) and int(last) < len(target):
        target[int(last)] = value
    elif isinstance(target, dict):
        target[last] = value
    else:
        raise StateValidationError(
            f"cannot edit run {run_id!r}: state.{path} does not exist; set an existing field, "
            "or the whole parent value."
        )


def _apply(flow: Flow[Any], state: Any, values: Mapping[str, Any], run_id: str) -> Any:
    adapter = flow._adapter
    for path in values:
        if not isinstance(path, str) or not path:
            raise StateValidationError(
                f"cannot edit run {run_id!r}: field paths are non-empty strings, got {path!r}."
            )
        if path.split(".")[0] == "id":
            raise StateValidationError(
                f"cannot edit run {run_id!r}: state.id is the run's id and cannot change; "
                "fork the run to get a new one."
            )
        model = adapter.model
        top = path.split(".")[0]
        if (
            model is not None
            and top not in model.model_fields
            and model.model_config.get("extra") != "allow"
        ):
            raise StateValidationError(
                f"cannot edit run {run_id!r}: {top!r} is not a field of {model.__name__} "
                f"(fields: {sorted(model.model_fields)})."
            )
    data = adapter.dump(state) if adapter.model is not None else dict(state)
    for path, value in values.items():
        _set_path(data, path, value, run_id)
    if adapter.model is None:
        return data
    return adapter._validate(data, f"edited values for run {run_id!r}")


async def update_state(
    flow: Flow[Any],
    run_id: str,
    values: Mapping[str, Any],
    *,
    reason: str,
    actor: str | None,
) -> Checkpoint:
    """See :meth:`flowkit.Flow.update_state`."""
    from ._cli_render import plain
    from ._codec import encode
    from ._execution import check_run, durable_backend, load_state
    from .diff import diff_states
    from .persistence._rules import new_owner

    if not isinstance(reason, str) or not reason.strip():
        raise FlowUsageError(
            f"update_state({run_id!r}, ...) needs a reason: say why the state is changed "
            "(it is stored with the edit)."
        )
    if not isinstance(values, Mapping) or not values:
        raise FlowUsageError(
            f"update_state({run_id!r}, ...) needs values: a dict of field (or dotted path) "
            "to new value."
        )
    who = actor if actor is not None else default_actor()
    backend = durable_backend(flow, "update_state")
    run = await backend.aget_run(run_id)
    if run is None:
        raise RunNotFoundError(f"cannot edit: no run {run_id!r} in {backend!r}.")
    check_run(flow, run, run_id, "edit")
    owner = new_owner() if backend.supports_leases else None
    if owner is not None:
        try:
            run = await backend.aacquire_lease(run_id, owner, flow.lease_ttl)
        except RunLockedError as exc:
            raise RunLockedError(
                f"cannot edit run {run_id!r} while it is being executed ({exc}); edit it "
                "once it has stopped (interrupted, failed, or crashed)."
            ) from None
    try:
        cp = await backend.aload_checkpoint(run_id)
        if cp is None:
            raise RunNotFoundError(f"cannot edit run {run_id!r}: it has no checkpoint yet.")
        if cp.seq != run.last_seq:
            raise ConcurrentUpdateError(
                f"cannot edit run {run_id!r}: checkpoint {run.last_seq} was written while "
                "the edit read the run; try again."
            )
        state = load_state(flow, cp.state, cp.meta.get("state_version"), run_id, cp.seq)
        new_state = _apply(flow, state, values, run_id)
        data = encode(flow._adapter.dump(new_state), path="state", cipher=flow._cipher())
        changes = diff_states(plain(cp.state), plain(data))
        if not changes:
            raise FlowUsageError(
                f"update_state({run_id!r}, ...): the values equal the stored ones; nothing "
                "to change, nothing stored."
            )
        # the position goes on; an edit is not a failed attempt (``retry``) nor an edit
        # of the edit it may be based on
        meta = {key: value for key, value in cp.meta.items() if key not in (EDIT_KEY, "retry")}
        meta["state_version"] = flow._adapter.version
        meta[EDIT_KEY] = {
            "actor": who,
            "reason": reason,
            "at": datetime.now(timezone.utc).isoformat(),
            "base_seq": cp.seq,
            "changes": [change.to_json(limit=VALUE_LIMIT) for change in changes],
        }
        return await backend.asave_checkpoint(
            run_id,
            EDIT_METHOD,
            data,
            expected_seq=cp.seq,
            meta=meta,
            status=run.status,
            lease_owner=owner,
        )
    finally:
        if owner is not None:
            await backend.arelease_lease(run_id, owner)
