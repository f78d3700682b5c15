"""``flowkit plot``, ``flowkit diff`` and ``flowkit edit``: see a flow, compare two
checkpoints, change a run's state with an audit record."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowkit._cli_backend import CliError
from flowkit._cli_flows import load_flow_class, require_run
from flowkit._cli_render import dump_json

if TYPE_CHECKING:
    from flowkit.persistence import FlowPersistence

__all__ = ["cmd_diff", "cmd_edit", "cmd_plot", "parse_assignment"]


def _print(text: str) -> None:
    sys.stdout.write(text + "\n")


def cmd_plot(args: argparse.Namespace, backend: FlowPersistence | None) -> int:
    from flowkit._plot import flow_html, flow_mermaid

    cls = load_flow_class(args.flow)
    if args.run is not None:
        assert backend is not None
        require_run(args, backend, args.run)
    text = (flow_mermaid if args.mermaid else flow_html)(cls, backend, args.run)
    if args.output is None or args.output == "-":
        sys.stdout.write(text)
        return 0
    path = Path(args.output)
    path.write_text(text, encoding="utf-8")
    what = "Mermaid flowchart" if args.mermaid else "HTML page (works offline)"
    run = f" with the path of run {args.run}" if args.run else ""
    _print(f"wrote {path}: {what} of {cls._graph.flow_name}{run}")
    return 0


def cmd_diff(args: argparse.Namespace, backend: FlowPersistence) -> int:
    from flowkit.diff import diff_checkpoints

    require_run(args, backend, args.run_id)
    try:
        changes = diff_checkpoints(backend, args.run_id, args.seq_a, args.seq_b)
    except LookupError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        data = {
            "run_id": args.run_id,
            "from_seq": args.seq_a,
            "to_seq": args.seq_b,
            "changes": [change.to_json() for change in changes],
        }
        _print(dump_json(data))
        return 0
    if not changes:
        _print(f"run {args.run_id}: no changes from checkpoint {args.seq_a} to {args.seq_b}")
        return 0
    _print(
        f"run {args.run_id}: {len(changes)} change(s) from checkpoint {args.seq_a} to {args.seq_b}"
    )
    for change in changes:
        _print(f"  {change}")
    return 0


def parse_assignment(text: str) -> tuple[str, Any]:
    """``field=JSON`` (or ``a.b.3=JSON``) -> (path, value)."""
    path, sep, raw = text.partition("=")
    if not sep or not path:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not FIELD=JSON (e.g. --set category='\"refund\"' or --set count=3)"
        )
    try:
        return path, json.loads(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--set {path}: {raw!r} is not valid JSON ({exc}); quote strings twice, e.g. "
            f"--set {path}='\"text\"'"
        ) from None


def cmd_edit(args: argparse.Namespace, backend: FlowPersistence) -> int:
    from flowkit._edit import edit_of

    cls = load_flow_class(args.flow)
    require_run(args, backend, args.run_id)
    values = dict(args.values)
    if len(values) != len(args.values):
        raise CliError("a field is --set twice; set each field once.")
    flow = cls(persistence=backend)
    cp = flow.update_state(args.run_id, values, reason=args.reason, actor=args.actor)
    record = edit_of(cp.meta) or {}
    if args.json:
        _print(dump_json({"run_id": cp.run_id, "seq": cp.seq, "edit": record}))
        return 0
    _print(
        f"run {cp.run_id}: checkpoint {cp.seq} records the edit by {record.get('actor')} "
        f"({record.get('reason')}):"
    )
    for change in record.get("changes", []):
        if change["kind"] == "changed":
            _print(f"  changed {change['path']}: {change['old']} -> {change['new']}")
        elif change["kind"] == "added":
            _print(f"  added {change['path']}: {change['new']}")
        else:
            _print(f"  removed {change['path']}: {change['old']}")
    _print(f"see it with: flowkit history {cp.run_id}")
    return 0
