"""``flowkit resume``, ``flowkit recover`` and ``flowkit fork``: run user code named on
the command line.

The flow class always comes from the ``MODULE:FlowClass`` argument; a class name read
from storage is never imported.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowkit._cli_backend import CliError
from flowkit._cli_render import dump_json

if TYPE_CHECKING:
    from flowkit import Flow
    from flowkit.persistence import FlowPersistence

__all__ = [
    "cmd_fork",
    "cmd_recover",
    "cmd_resume",
    "load_flow_class",
    "own_backend",
    "require_run",
]


def _import_file(path: Path, spec: str) -> Any:
    """Import a ``.py`` file as a module named after it (its folder is importable, so
    its sibling imports work)."""
    import importlib.util

    folder = str(path.parent.resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = path.stem
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path.resolve()):
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise CliError(f"cannot import {path} ({spec}): not a Python source file.")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception:
        del sys.modules[name]
        traceback.print_exc(file=sys.stderr)
        raise CliError(f"importing {path} failed (traceback above).") from None
    return module


def _import_module(module_name: str) -> Any:
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise CliError(
                f"cannot import module {module_name!r} ({exc}); run the command from your "
                "project's folder, add its folder to PYTHONPATH, or name the file: "
                "path/to/flows.py:FlowClass."
            ) from None
        traceback.print_exc(file=sys.stderr)
        raise CliError(f"importing module {module_name!r} failed (traceback above).") from None
    except Exception:
        traceback.print_exc(file=sys.stderr)
        raise CliError(f"importing module {module_name!r} failed (traceback above).") from None


def load_flow_class(spec: str) -> type[Flow[Any]]:
    """Import ``MODULE:FlowClass`` or ``path/to/file.py:FlowClass`` (the current folder
    is importable, as with ``python -m``).

    Raises:
        CliError: the module, file or class cannot be found, or is not a Flow subclass.
    """
    from flowkit import Flow

    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise CliError(
            f"{spec!r} is not MODULE:FlowClass; name the module (or .py file) and the class, "
            "e.g. myapp.flows:ReviewFlow or src/flows.py:ReviewFlow."
        )
    if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
        path = Path(module_name).expanduser()
        if not path.is_file():
            raise CliError(f"no Python file {module_name!r} ({spec}); check the path.")
        module = _import_file(path, spec)
    else:
        module = _import_module(module_name)
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CliError(f"module {module_name!r} has no attribute {attr!r}.") from None
    if not (isinstance(target, type) and issubclass(target, Flow)):
        raise CliError(f"{spec} is not a Flow subclass (it is {target!r}).")
    return target


def own_backend(cls: type[Flow[Any]], spec: str) -> tuple[FlowPersistence, str] | None:
    """The backend named in the class's ``@persist(...)`` (class or method level), and
    how to name it; None when the class uses the default (bare ``@persist``) or none.

    Raises:
        CliError: that backend is a SQLite file that does not exist (nothing ran yet).
    """
    from flowkit._persist import PERSIST_ATTR, PersistConfig

    configs = [getattr(cls, PERSIST_ATTR, None)]
    configs += [getattr(getattr(cls, name), PERSIST_ATTR, None) for name in cls._graph.nodes]
    for config in configs:
        if isinstance(config, PersistConfig) and config.backend is not None:
            backend = config.backend
            shown = f"{backend!r} (the @persist backend of {spec})"
            db_path = getattr(backend, "db_path", None)
            if isinstance(db_path, str) and db_path != ":memory:" and not Path(db_path).exists():
                raise CliError(
                    f"no flowkit database at {shown}: the file {db_path} does not exist "
                    f"(relative to {os.getcwd()}). Run the command from the folder the flow "
                    "runs in, or pass --db PATH_OR_URL."
                )
            return backend, shown
    return None


def _as_text(value: Any) -> str:
    try:
        return json.dumps(value, indent=2, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _run_user_code(run_id: str, action: Any) -> Any:
    from flowkit import FlowkitError

    try:
        return action()
    except FlowkitError:
        raise
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        raise CliError(
            f"run {run_id!r} failed: {type(exc).__name__}: {exc}. See `flowkit show "
            f"{run_id}`; fix the cause, then resume it again."
        ) from None


def require_run(args: argparse.Namespace, backend: FlowPersistence, run_id: str) -> None:
    """Refuse an unknown run with an error naming the database looked in."""
    if backend.get_run(run_id) is None:
        where = getattr(args, "storage_shown", repr(backend))
        raise CliError(
            f"no run {run_id!r} in {where}; list its runs with `flowkit runs` (pass --db "
            "PATH_OR_URL or --dir PATH if the run is stored elsewhere)."
        )


def cmd_resume(args: argparse.Namespace, backend: FlowPersistence) -> int:
    from flowkit import Interrupted
    from flowkit.exceptions import DefinitionChangedError

    cls = load_flow_class(args.flow)
    require_run(args, backend, args.run_id)
    flow = cls(persistence=backend)
    extra: dict[str, Any] = {"force": args.force}
    if args.value is not None:
        extra["value"] = args.value
    try:
        result = _run_user_code(args.run_id, lambda: flow.resume(args.run_id, **extra))
    except DefinitionChangedError as exc:
        raise CliError(f"{exc} (on the command line: --force)") from None
    if isinstance(result, Interrupted):
        if args.json:
            interrupt = {"method": result.method_name, "payload": _jsonable(result.payload)}
            data = {"run_id": result.run_id, "status": "interrupted", "interrupt": interrupt}
            sys.stdout.write(dump_json(data) + "\n")
            return 0
        sys.stdout.write(
            f"run {result.run_id} is waiting for input: {result.method_name} asks\n"
            f"{_as_text(result.payload)}\n"
            f"answer with: flowkit resume {args.flow} {result.run_id} --value JSON\n"
        )
        return 0
    if args.json:
        data = {"run_id": args.run_id, "status": "completed", "result": _jsonable(result)}
        sys.stdout.write(dump_json(data) + "\n")
        return 0
    sys.stdout.write(f"run {args.run_id} completed; result:\n{_as_text(result)}\n")
    return 0


def cmd_recover(args: argparse.Namespace, backend: FlowPersistence) -> int:
    classes = [load_flow_class(spec) for spec in args.flows]  # all importable before any runs
    reports = [cls.recover(persistence=backend) for cls in classes]
    if args.json:
        data = [
            {
                "flow": report.flow_name,
                "runs": [
                    {"run_id": r.run_id, "outcome": r.outcome, "detail": r.detail}
                    for r in report.runs
                ],
            }
            for report in reports
        ]
        sys.stdout.write(dump_json(data) + "\n")
    else:
        for spec, report in zip(args.flows, reports, strict=True):
            counts = ", ".join(
                f"{len(ids)} {word}"
                for word, ids in (
                    ("completed", report.completed),
                    ("interrupted", report.interrupted),
                    ("failed", report.failed),
                    ("skipped", report.skipped),
                )
            )
            sys.stdout.write(
                f"{spec} (flow {report.flow_name}): {len(report.runs)} unfinished run(s): "
                f"{counts}\n"
            )
            for r in report.runs:
                sys.stdout.write(
                    f"  {r.run_id}  {r.outcome}{': ' + r.detail if r.detail else ''}\n"
                )
    failed = [run_id for report in reports for run_id in report.failed]
    if failed:
        sys.stderr.write(
            f"flowkit recover: {len(failed)} resumed run(s) failed: {', '.join(failed)}; see "
            "`flowkit show RUN_ID`, fix the cause, then resume them.\n"
        )
        return 1
    return 0


def cmd_fork(args: argparse.Namespace, backend: FlowPersistence) -> int:
    cls = load_flow_class(args.flow)
    require_run(args, backend, args.run_id)
    flow = cls(persistence=backend)
    child = flow.fork(args.run_id, args.seq, new_run_id=args.new_run_id)
    if args.json:
        data = {"run_id": child, "parent_run_id": args.run_id, "parent_seq": args.seq}
        sys.stdout.write(dump_json(data) + "\n")
        return 0
    sys.stdout.write(
        f"forked run {args.run_id} at seq {args.seq} into run {child}\n"
        f"continue it with: flowkit resume {args.flow} {child}\n"
    )
    return 0
