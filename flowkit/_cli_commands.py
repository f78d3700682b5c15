"""The read and retention commands of ``flowkit``: runs, show, history, checkpoint,
delete, prune. Each takes the parsed arguments and an open backend, prints, and returns
the exit code."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from flowkit._cli_backend import CliError, unreadable_runs
from flowkit._cli_render import (
    checkpoint_json,
    checkpoint_summary,
    display_status,
    dump_json,
    edit_of,
    error_line,
    format_time,
    interrupt_of,
    is_stale,
    pending_of,
    plain,
    pretty,
    record_json,
    redacted,
    table,
)
from flowkit._journal import PositionSummary

if TYPE_CHECKING:
    from flowkit.persistence import Checkpoint, FlowPersistence, RunRecord

__all__ = ["cmd_checkpoint", "cmd_delete", "cmd_history", "cmd_prune", "cmd_runs", "cmd_show"]


def _leases(backend: FlowPersistence) -> bool:
    return bool(type(backend).supports_leases)


def _get_run(backend: FlowPersistence, run_id: str) -> RunRecord:
    run = backend.get_run(run_id)
    if run is None:
        raise CliError(f"no run {run_id!r} in this database; list runs with `flowkit runs`.")
    return run


def _parent(run: RunRecord) -> str:
    if run.parent_run_id is None:
        return "-"
    return f"{run.parent_run_id}@{run.parent_seq}"


def _print(text: str) -> None:
    sys.stdout.write(text + "\n")


# --- runs ---------------------------------------------------------------------------------


# Exit code of `runs` when it listed what it could read but skipped damaged runs.
UNREADABLE_EXIT = 3


def _where_filter(pairs: list[tuple[str, Any]] | None) -> dict[str, Any] | None:
    """``--where`` pairs as a metadata filter (None without any)."""
    if not pairs:
        return None
    wanted: dict[str, Any] = {}
    for key, value in pairs:
        if key in wanted:
            raise CliError(
                f"--where names {key!r} twice; a run's metadata holds one value per key."
            )
        wanted[key] = value
    return wanted


def cmd_runs(args: argparse.Namespace, backend: FlowPersistence) -> int:
    metadata = _where_filter(args.where)
    with unreadable_runs() as unreadable:
        runs = backend.list_runs(
            flow_name=args.flow,
            status=args.status,
            limit=args.limit,
            offset=args.offset,
            metadata=metadata,
        )
    for run_id, error in unreadable.items():
        sys.stderr.write(f"flowkit runs: skipped unreadable run {run_id!r}: {error}\n")
    code = UNREADABLE_EXIT if unreadable else 0
    leases = _leases(backend)
    if args.json:
        _print(dump_json([record_json(run, leases=leases) for run in runs]))
        return code
    if not runs:
        filtered = args.flow or args.status or args.where
        _print("no runs" + (" match these filters" if filtered else ""))
        return code
    rows = [
        [
            run.run_id,
            run.flow_name or "-",
            display_status(run, leases=leases),
            str(run.last_seq),
            format_time(run.updated_at),
            _parent(run),
        ]
        for run in runs
    ]
    _print(table(["RUN ID", "FLOW", "STATUS", "LAST SEQ", "UPDATED (UTC)", "PARENT"], rows))
    if len(runs) + len(unreadable) == args.limit:
        _print(f"(first {args.limit} from offset {args.offset}; see more with --offset)")
    return code


# --- show ---------------------------------------------------------------------------------


def _last_unfinished(backend: FlowPersistence, run: RunRecord) -> int | None:
    """The newest checkpoint of a completed run after which methods were still pending:
    a fork of it has something to resume."""
    if run.status != "completed":
        return None
    for cp in reversed(backend.history(run.run_id)):
        if pending_of(cp.meta) and "interrupt" not in cp.meta:
            return cp.seq
    return None


def _how_to_continue(
    run: RunRecord, latest: Checkpoint | None, stale: bool, branch: int | None = None
) -> dict[str, Any]:
    """What a user can do next with the run: a command line and the Python call."""
    flow_name = run.flow_name or "FlowClass"
    flow = f"MODULE:{flow_name}"
    cls = flow_name.rsplit(".", 1)[-1]
    rid = run.run_id
    if run.status == "completed":
        python = f"{cls}().kickoff(inputs={{'id': {rid!r}}})"
        if branch is None:
            return {
                "resumable": False,
                "note": "completed: nothing to resume; run it again on top of its state",
                "command": None,
                "python": python,
            }
        return {
            "resumable": False,
            "note": (
                f"completed: nothing to resume; to redo its last step(s), fork checkpoint "
                f"{branch} (the last one with methods still to run) and resume the fork, "
                "or run it again on top of its state"
            ),
            "command": f"flowkit fork {flow} {rid} {branch}",
            "python": f"{cls}().fork({rid!r}, {branch})  # or: {python}",
        }
    if latest is None or PositionSummary.read(latest.meta) is None:
        return {
            "resumable": False,
            "note": "no checkpoint with an execution position; kick it off again by id",
            "command": None,
            "python": f"{cls}().kickoff(inputs={{'id': {rid!r}}})",
        }
    if run.status == "interrupted":
        return {
            "resumable": True,
            "note": "waiting for an answer to the interrupt (any JSON value)",
            "command": f"flowkit resume {flow} {rid} --value JSON",
            "python": f"{cls}().resume({rid!r}, value)",
        }
    if run.status == "running" and not stale and run.lease_owner is not None:
        note = (
            f"being executed by {run.lease_owner} (lease until "
            f"{format_time(run.lease_expires_at)}); resume is refused while that owner "
            "is alive, and takes over at once when it is gone (or after the lease expires)"
        )
    elif run.status == "failed":
        note = "failed: fix the cause, then resume (the failed method runs again)"
    else:
        note = "cut off while running: resume continues where it stopped"
    return {
        "resumable": True,
        "note": note,
        "command": f"flowkit resume {flow} {rid}",
        "python": f"{cls}().resume({rid!r})",
    }


def _show_data(
    backend: FlowPersistence, run: RunRecord, latest: Checkpoint | None
) -> dict[str, Any]:
    leases = _leases(backend)
    children = backend.list_runs(parent_run_id=run.run_id, limit=1000)
    error = run.info.get("error") if run.status == "failed" else None
    interrupt = (
        interrupt_of(latest.meta) if latest is not None and run.status == "interrupted" else None
    )
    return {
        "run": record_json(run, leases=leases),
        "metadata": run.metadata,
        "lineage": {
            "parent_run_id": run.parent_run_id,
            "parent_seq": run.parent_seq,
            "children": [
                {"run_id": child.run_id, "parent_seq": child.parent_seq} for child in children
            ],
        },
        "latest_checkpoint": (None if latest is None else checkpoint_json(latest, state=True)),
        "pending": [] if latest is None else pending_of(latest.meta),
        "interrupt": redacted(interrupt),
        "error": error if isinstance(error, dict) else None,
        "next": _how_to_continue(
            run, latest, is_stale(run, leases=leases), _last_unfinished(backend, run)
        ),
    }


def cmd_show(args: argparse.Namespace, backend: FlowPersistence) -> int:
    run = _get_run(backend, args.run_id)
    latest_cp = backend.load_checkpoint(run.run_id)
    data = _show_data(backend, run, latest_cp)
    if args.json:
        _print(dump_json(data))
        return 0
    lineage = data["lineage"]
    lines = [
        f"Run          {run.run_id}",
        f"Flow         {run.flow_name or '- (saved with save_state only)'}",
        f"Status       {display_status(run, leases=_leases(backend))}",
        f"Created      {format_time(run.created_at)}",
        f"Updated      {format_time(run.updated_at)}",
        f"Last seq     {run.last_seq}",
        f"Fingerprint  {run.fingerprint or '-'}",
        f"Parent       {_parent(run)}",
    ]
    if run.metadata:
        lines.append(f"Metadata     {json.dumps(run.metadata, ensure_ascii=False)}")
    if lineage["children"]:
        forks = ", ".join(
            f"{c['run_id']} (from seq {c['parent_seq']})" for c in lineage["children"]
        )
        lines.append(f"Forks        {forks}")
    if run.lease_owner is not None:
        lines.append(f"Lease        {run.lease_owner} until {format_time(run.lease_expires_at)}")
    if latest_cp is None:
        lines.append("\nNo checkpoints.")
    else:
        lines.append(
            f"\nLatest checkpoint: seq {latest_cp.seq} after {latest_cp.method_name} "
            f"at {format_time(latest_cp.created_at)}"
        )
        lines.append("State:")
        lines.append(_indent(pretty(latest_cp.state)))
    if data["pending"]:
        lines.append("\nPending methods:")
        lines.extend(_pending_line(item) for item in data["pending"])
    interrupt = data["interrupt"]
    if interrupt is not None:
        lines.append(f"\nInterrupted in method {interrupt.get('method')}; payload:")
        lines.append(_indent(pretty(interrupt.get("payload"))))
    error = data["error"]
    if error is not None:
        lines.append(f"\nError in method {error_line(error)}")
        if error.get("traceback"):
            lines.append(_indent(str(error["traceback"]).rstrip()))
    step = data["next"]
    lines.append(f"\nNext: {step['note']}.")
    if step["command"]:
        lines.append(f"  {step['command']}")
    lines.append(f"  {step['python']}")
    if step["command"] and "MODULE:" in step["command"]:
        lines.append(f"  (MODULE is the module that defines the flow class of {run.flow_name})")
    _print("\n".join(lines))
    return 0


def _pending_line(item: dict[str, Any]) -> str:
    trigger = item["trigger"]
    line = f"  {item['method']} ({'a start' if trigger is None else f'triggered by {trigger}'})"
    error = item.get("last_error")
    if isinstance(error, dict):
        line += f"; failed {item.get('failed_attempts')} time(s), last: {error_line(error)}"
    return line


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


# --- history / checkpoint -----------------------------------------------------------------


def cmd_history(args: argparse.Namespace, backend: FlowPersistence) -> int:
    run = _get_run(backend, args.run_id)
    checkpoints = backend.history(run.run_id)
    if args.json:
        _print(dump_json([checkpoint_json(cp, state=args.states) for cp in checkpoints]))
        return 0
    if not checkpoints:
        _print(f"run {run.run_id} has no checkpoints")
        return 0
    _print(f"run {run.run_id} ({run.flow_name}, {run.status})")
    if checkpoints[0].seq > 1:
        _print(f"(checkpoints 1..{checkpoints[0].seq - 1} were pruned)")
    rows = [
        [str(cp.seq), cp.method_name, format_time(cp.created_at), checkpoint_summary(cp)]
        for cp in checkpoints
    ]
    error = run.info.get("error") if run.status == "failed" else None
    failed = f"\nFailed in {error_line(error)}" if isinstance(error, dict) else None
    if not args.states:
        _print(table(["SEQ", "METHOD", "TIME (UTC)", "AFTER IT"], rows))
        if failed:
            _print(failed)
        return 0
    for row, cp in zip(rows, checkpoints, strict=True):
        _print(f"\n#{row[0]}  {row[1]}  {row[2]}  {row[3]}")
        _print(_indent(pretty(cp.state)))
    if failed:
        _print(failed)
    return 0


def cmd_checkpoint(args: argparse.Namespace, backend: FlowPersistence) -> int:
    run = _get_run(backend, args.run_id)
    cp = backend.load_checkpoint(run.run_id, args.seq)
    if cp is None:
        raise CliError(
            f"run {run.run_id!r} has no checkpoint {args.seq} (its checkpoints are "
            f"numbered 1..{run.last_seq}; pruned ones are gone); see `flowkit history "
            f"{run.run_id}`."
        )
    summary = PositionSummary.read(cp.meta)
    if args.json:
        data = checkpoint_json(cp, state=True)
        data["position"] = redacted(cp.meta["position"]) if summary is not None else None
        _print(dump_json(data))
        return 0
    lines = [
        f"Run      {cp.run_id} ({run.flow_name})",
        f"Seq      {cp.seq} of {run.last_seq}",
        f"Method   {cp.method_name}",
        f"Time     {format_time(cp.created_at)}",
        f"After it {checkpoint_summary(cp)}",
        "State:",
        _indent(pretty(cp.state)),
    ]
    if summary is not None:
        lines.append("Position:")
        if summary.pending:
            lines.append(
                "  pending: "
                + ", ".join(f"{p['method']} (after {p['trigger']})" for p in summary.pending)
            )
        if summary.calls:
            lines.append(
                "  calls:   "
                + ", ".join(f"{name} x{n}" for name, n in sorted(summary.calls.items()))
            )
        if summary.last_method is not None:
            output = _inline(plain(summary.last_output))
            lines.append(f"  last:    {summary.last_method} returned {output}")
    edit = edit_of(cp.meta)
    if edit is not None:
        lines.append(
            f"Edit     by {edit.get('actor')} at {edit.get('at')} on top of seq "
            f"{edit.get('base_seq')}: {edit.get('reason')}"
        )
        for change in edit.get("changes") or []:
            old, new = change.get("old"), change.get("new")
            arrow = {"added": f"+ {new}", "removed": f"- {old}"}.get(
                str(change.get("kind")), f"{old} -> {new}"
            )
            lines.append(f"  {change.get('path')}: {arrow}")
    interrupt = summary.interrupt if summary is not None else None
    if interrupt is not None:
        lines.append(f"Interrupt in {interrupt.get('method')}; payload:")
        lines.append(_indent(pretty(interrupt.get("payload"))))
    _print("\n".join(lines))
    return 0


def _inline(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- retention ----------------------------------------------------------------------------


def _confirm(question: str) -> bool:
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def cmd_delete(args: argparse.Namespace, backend: FlowPersistence) -> int:
    run = _get_run(backend, args.run_id)
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError(
                f"refusing to delete run {run.run_id!r} without confirmation (no terminal "
                "to ask on); pass --yes."
            )
        question = (
            f"Delete run {run.run_id} ({run.flow_name}, {run.status}, "
            f"{run.last_seq} checkpoints)? Forks of it keep their own checkpoints."
        )
        if not _confirm(question):
            raise CliError(f"run {run.run_id!r} not deleted.")
    backend.delete_run(run.run_id)
    _print(f"deleted run {run.run_id}")
    return 0


def cmd_prune(args: argparse.Namespace, backend: FlowPersistence) -> int:
    run = _get_run(backend, args.run_id)
    removed = backend.prune(run.run_id, keep_last=args.keep_last)
    kept = backend.history(run.run_id)
    span = f"{kept[0].seq}..{kept[-1].seq}" if kept else "none"
    _print(f"pruned {removed} checkpoint(s) of run {run.run_id}; kept seq {span}")
    return 0
