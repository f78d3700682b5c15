"""The ``flowkit`` command: list, inspect, diff, edit, resume, fork and clean up stored
runs; draw flows.

Example::

    flowkit runs --status interrupted
    flowkit show 3f2c...
    flowkit resume myapp.flows:ReviewFlow 3f2c... --value '"approved"'
    flowkit diff 3f2c... 2 5
    flowkit plot myapp/flows.py:ReviewFlow --run 3f2c... -o run.html

Exit codes: 0 success, 1 error (a message on stderr says what to do), 2 usage error.
``docs/cli.md`` is generated from this parser: ``python -m flowkit.cli --markdown-help
docs/cli.md`` rewrites its reference section.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowkit.persistence import FlowPersistence

__all__ = ["build_parser", "main", "render_reference", "write_reference"]

Command = Callable[[argparse.Namespace, Any], int]

STATUSES = ("running", "completed", "failed", "interrupted")
DOCS_WIDTH = 88
REFERENCE_BEGIN = (
    "<!-- BEGIN GENERATED REFERENCE: python -m flowkit.cli --markdown-help docs/cli.md -->"
)
REFERENCE_END = "<!-- END GENERATED REFERENCE -->"

_RUN_ID_HELP = "the run's id (see `flowkit runs`)"
_FLOW_HELP = "e.g. myapp.flows:ReviewFlow or path/to/flows.py:ReviewFlow"
_SEQ_HELP = "a checkpoint number (see `flowkit history RUN_ID`)"
_DESCRIPTION = (
    "Inspect, compare, edit, resume, fork and clean up the stored runs of flowkit flows, "
    "and draw the flows."
)
_EPILOG = (
    "Storage: --db takes a SQLite file path or a SQLAlchemy async URL "
    "(sqlite+aiosqlite:///flows.db, postgresql+asyncpg://user:pw@host/db); --dir takes a "
    "FileFlowPersistence folder. Without either: the backend given to @persist(...) by the "
    "flow class named on the command line (resume, fork, edit, plot), else $FLOWKIT_DB_URL "
    "if set, else the default SQLite file (in $FLOWKIT_DATA_DIR or the per-user data "
    "folder). "
    "Exit codes: 0 ok, 1 error (damaged stored data included: one line, no traceback), "
    "2 usage, 3 `runs` skipped damaged runs."
)


class _Formatter(argparse.HelpFormatter):
    """Help wrapped at a fixed width, so the generated reference does not depend on the
    terminal it was generated in."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=DOCS_WIDTH, max_help_position=30)


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _where(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``runs --where``: VALUE as JSON when it parses, else as text."""
    key, found, raw = text.partition("=")
    if not found or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. user=u123), got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _flow_spec(text: str) -> str:
    module, _, attr = text.rpartition(":")
    if not module or not attr:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not MODULE:FlowClass (e.g. myapp.flows:ReviewFlow or "
            "path/to/flows.py:ReviewFlow)"
        )
    return text


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"not valid JSON ({exc}); quote strings twice, e.g. --value '\"yes\"'"
        ) from None


def _storage_options(default: Any) -> argparse.ArgumentParser:
    """--db / --dir, accepted before or after the subcommand."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("storage")
    group.add_argument(
        "--db",
        metavar="PATH_OR_URL",
        default=default,
        help="SQLite file path or SQLAlchemy async URL (default: $FLOWKIT_DB_URL, else the "
        "default SQLite file)",
    )
    group.add_argument(
        "--dir", metavar="PATH", default=default, help="a FileFlowPersistence folder instead"
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The ``flowkit`` argument parser (also the source of the CLI reference)."""
    from flowkit._cli_commands import (
        cmd_checkpoint,
        cmd_delete,
        cmd_history,
        cmd_prune,
        cmd_runs,
        cmd_show,
    )
    from flowkit._cli_flows import cmd_fork, cmd_recover, cmd_resume
    from flowkit._cli_tools import cmd_diff, cmd_edit, cmd_plot, parse_assignment

    parser = argparse.ArgumentParser(
        prog="flowkit",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=_Formatter,
        parents=[_storage_options(None)],
    )
    parser.add_argument("--markdown-help", nargs="?", const="-", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    storage = _storage_options(argparse.SUPPRESS)

    def command(
        name: str, func: Command, summary: str, description: str
    ) -> argparse.ArgumentParser:
        cmd = sub.add_parser(
            name,
            help=summary,
            description=description,
            formatter_class=_Formatter,
            parents=[storage],
        )
        cmd.set_defaults(func=func)
        return cmd

    def json_flag(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument(
            "--json", action="store_true", help="machine-readable output (stable keys)"
        )

    runs = command(
        "runs",
        cmd_runs,
        "list runs, newest first",
        "List runs, most recently updated first. A running run nobody executes any more "
        "(its process on this host died, or its lease expired) is shown as 'running "
        "(stale: resumable)'. A run whose stored record is damaged is skipped with one "
        "line on stderr naming it, and the exit code is 3.",
    )
    runs.add_argument("--flow", metavar="NAME", help="only runs of this flow name")
    runs.add_argument("--status", choices=STATUSES, help="only runs with this status")
    runs.add_argument(
        "--where",
        type=_where,
        action="append",
        metavar="KEY=VALUE",
        help="only runs whose metadata has KEY equal to VALUE; VALUE is read as JSON when "
        "it parses (ticket=42 is a number, flag=true a boolean, id='\"42\"' the text 42), "
        "else as text (user=u123); repeat to require several",
    )
    runs.add_argument(
        "--limit", type=_positive, default=50, metavar="N", help="at most N runs (default: 50)"
    )
    runs.add_argument(
        "--offset", type=_non_negative, default=0, metavar="N", help="skip the first N runs"
    )
    json_flag(runs)

    show = command(
        "show",
        cmd_show,
        "one run: record, lineage, latest state, what to do next",
        "Show a run: its record, lineage (parent and forks), fingerprint, latest state, "
        "pending methods, the interrupt payload (interrupted runs) or the error (failed "
        "runs), and how to resume it.",
    )
    show.add_argument("run_id", metavar="RUN_ID", help=_RUN_ID_HELP)
    json_flag(show)

    history = command(
        "history",
        cmd_history,
        "every checkpoint of a run",
        "List a run's checkpoints: seq, method, time and where the run stood after it.",
    )
    history.add_argument("run_id", metavar="RUN_ID", help=_RUN_ID_HELP)
    history.add_argument("--states", action="store_true", help="include each checkpoint's state")
    json_flag(history)

    checkpoint = command(
        "checkpoint",
        cmd_checkpoint,
        "one checkpoint's state and position",
        "Show one checkpoint: its state and the execution position stored with it.",
    )
    checkpoint.add_argument("run_id", metavar="RUN_ID", help=_RUN_ID_HELP)
    checkpoint.add_argument("seq", metavar="SEQ", type=_positive, help=_SEQ_HELP)
    json_flag(checkpoint)

    delete = command(
        "delete",
        cmd_delete,
        "delete a run and its checkpoints",
        "Delete a run with all its checkpoints. Forks of it keep their own checkpoints and "
        "their lineage fields. Asks for confirmation on a terminal; elsewhere needs --yes.",
    )
    delete.add_argument("run_id", metavar="RUN_ID", help=_RUN_ID_HELP)
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    prune = command(
        "prune",
        cmd_prune,
        "delete all but the newest checkpoints of a run",
        "Delete all but the newest N checkpoints of a run. Sequence numbers are not reused "
        "and the run's lineage is kept.",
    )
    prune.add_argument("run_id", metavar="RUN_ID", help=_RUN_ID_HELP)
    prune.add_argument(
        "--keep-last", type=_positive, required=True, metavar="N", help="checkpoints to keep (>= 1)"
    )

    resume = command(
        "resume",
        cmd_resume,
        "continue an unfinished run",
        "Import MODULE, construct FlowClass with the selected storage and resume the run: "
        "completed methods are not run again. For an interrupted run, --value is what "
        "self.interrupt() returns this time. Prints the result, or the next interrupt's "
        "payload.",
    )
    resume.add_argument("flow", type=_flow_spec, metavar="MODULE:FlowClass", help=_FLOW_HELP)
    resume.add_argument("run_id", metavar="RUN_ID", help=_RUN_ID_HELP)
    resume.add_argument(
        "--value", type=_json_value, metavar="JSON", help="the answer to the interrupt, as JSON"
    )
    resume.add_argument(
        "--force", action="store_true", help="resume even if the flow's definition changed"
    )
    json_flag(resume)

    recover = command(
        "recover",
        cmd_recover,
        "resume every orphaned run of the given flows",
        "For each MODULE:FlowClass, resume every unfinished run of that flow whose owner "
        "died (or whose lease expired); runs executed by a live process are skipped and "
        "interrupted runs keep waiting for their answer. Safe to run from many processes at "
        "once: each run is resumed by one of them. Prints what happened to each run; exits "
        "with 1 if a resumed run failed.",
    )
    recover.add_argument(
        "flows",
        type=_flow_spec,
        nargs="+",
        metavar="MODULE:FlowClass",
        help="one or more flow classes, e.g. myapp.flows:ReviewFlow",
    )
    json_flag(recover)

    fork = command(
        "fork",
        cmd_fork,
        "start a new run from a checkpoint",
        "Create a new run whose state is checkpoint SEQ of RUN_ID (lineage recorded); the "
        "original run is unchanged. Prints the new run's id; resume it to continue.",
    )
    fork.add_argument("flow", type=_flow_spec, metavar="MODULE:FlowClass", help=_FLOW_HELP)
    fork.add_argument("run_id", metavar="RUN_ID", help=_RUN_ID_HELP)
    fork.add_argument("seq", metavar="SEQ", type=_positive, help=_SEQ_HELP)
    fork.add_argument("--run-id", dest="new_run_id", metavar="NEW_ID", help="the new run's id")
    json_flag(fork)

    diff = command(
        "diff",
        cmd_diff,
        "what changed between two checkpoints",
        "Field-level changes from checkpoint SEQ_A to SEQ_B of a run: added, removed and "
        "changed values with their paths (state.items[3].title). Long values are "
        "abbreviated; --json gives them in full. Secrets show as <secret>.",
    )
    diff.add_argument("run_id", metavar="RUN_ID", help=_RUN_ID_HELP)
    diff.add_argument("seq_a", metavar="SEQ_A", type=_positive, help="the older checkpoint")
    diff.add_argument("seq_b", metavar="SEQ_B", type=_positive, help="the newer checkpoint")
    json_flag(diff)

    edit = command(
        "edit",
        cmd_edit,
        "change a run's state, with an audit record",
        "Set fields of a run's latest state (validated by the flow's state model) and "
        "append the result as a new checkpoint named <edit> that records the actor, the "
        "reason and the diff. The execution position is kept, so the run resumes where it "
        "stood. A run being executed is refused. Nothing stored is changed in place.",
    )
    edit.add_argument("flow", type=_flow_spec, metavar="MODULE:FlowClass", help=_FLOW_HELP)
    edit.add_argument("run_id", metavar="RUN_ID", help=_RUN_ID_HELP)
    edit.add_argument(
        "--set",
        dest="values",
        action="append",
        type=parse_assignment,
        required=True,
        metavar="FIELD=JSON",
        help="a field (or dotted path, items.3.title) and its new value as JSON; repeatable",
    )
    edit.add_argument("--reason", required=True, metavar="TEXT", help="why (stored)")
    edit.add_argument(
        "--actor", metavar="NAME", help="who (stored; default: the operating-system user)"
    )
    json_flag(edit)

    plot = command(
        "plot",
        cmd_plot,
        "draw a flow (and the path a run took)",
        "Write the flow as one self-contained HTML page (inline SVG, works offline) or, "
        "with --mermaid, as a Mermaid flowchart for Markdown. With --run, the path that "
        "run took is drawn: the methods it ran, how often, and where it stopped.",
    )
    plot.add_argument("flow", type=_flow_spec, metavar="MODULE:FlowClass", help=_FLOW_HELP)
    plot.add_argument(
        "--output", metavar="FILE", help="where to write (default: standard output); also -o"
    )
    # -o is the same option, kept out of the help: Python 3.13 prints "-o, --output FILE"
    # where 3.10-3.12 print "-o FILE, --output FILE", and the generated reference must not
    # depend on the Python that generated it.
    plot.add_argument("-o", dest="output", metavar="FILE", help=argparse.SUPPRESS)
    plot.add_argument("--mermaid", action="store_true", help="Mermaid text instead of HTML")
    plot.add_argument("--run", metavar="RUN_ID", help="draw the path this run took")
    return parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def render_reference() -> str:
    """The Markdown CLI reference: the ``--help`` output of ``flowkit`` and each command."""
    parser = build_parser()
    parts = ["### `flowkit`", "", "```text", parser.format_help().rstrip(), "```"]
    for name, cmd in _subparsers(parser).items():
        parts += ["", f"### `flowkit {name}`", "", "```text", cmd.format_help().rstrip(), "```"]
    return "\n".join(parts) + "\n"


def write_reference(path: str | Path) -> bool:
    """Replace the generated section of ``path`` (between the markers); True if it changed."""
    file = Path(path)
    text = file.read_text(encoding="utf-8")
    head, begin, rest = text.partition(REFERENCE_BEGIN)
    _, end, tail = rest.partition(REFERENCE_END)
    if not begin or not end:
        raise SystemExit(f"{file}: the markers {REFERENCE_BEGIN!r} / {REFERENCE_END!r} are missing")
    new = f"{head}{REFERENCE_BEGIN}\n\n{render_reference()}\n{REFERENCE_END}{tail}"
    if new == text:
        return False
    file.write_text(new, encoding="utf-8")
    return True


def _storage(args: argparse.Namespace, open_backend: Any) -> tuple[FlowPersistence, str]:
    """--db / --dir if given, else the flow class's own @persist backend, else the
    default (``$FLOWKIT_DB_URL`` or the default SQLite file)."""
    from flowkit._cli_flows import load_flow_class, own_backend

    spec = getattr(args, "flow", None)
    if spec is not None and args.db is None and args.dir is None:
        own = own_backend(load_flow_class(spec), spec)
        if own is not None:
            return own
    return open_backend(args.db, args.dir)  # type: ignore[no-any-return]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flowkit`` command with ``argv`` (default: ``sys.argv[1:]``); return the
    exit code."""
    from flowkit._cli_backend import CliError, open_backend, probe
    from flowkit.exceptions import FlowkitError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    if args.markdown_help is not None:
        if args.markdown_help == "-":
            sys.stdout.write(render_reference())
        else:
            changed = write_reference(args.markdown_help)
            sys.stdout.write(f"{args.markdown_help}: {'updated' if changed else 'up to date'}\n")
        return 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    backend: FlowPersistence | None = None
    try:
        if args.command != "plot" or args.run is not None:
            backend, shown = _storage(args, open_backend)
            probe(backend, shown)
            args.storage_shown = shown
        return int(args.func(args, backend))
    except (CliError, FlowkitError) as exc:
        sys.stderr.write(f"flowkit {args.command}: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    finally:
        if backend is not None:
            backend.close()


if __name__ == "__main__":
    sys.exit(main())
