"""Run every bench script, print one table and write ``bench/results.json``.

Each script runs in its own interpreter (the one running this file, so the same venv)
and hands its rows back through a JSON file named by ``FLOWKIT_BENCH_JSON``. Inside a
script, flowkit and its peer are measured in the same process, interleaved. A script
that does not speak that protocol (e.g. ``persistence_micro.py``) is still run and its
output shown as it is.

Targets are information, never assertions: this exits 0 whatever the ratios are, and
non-zero only if a script crashed.

Usage: ``python bench/run.py [--quick] [script ...]`` (default: every ``bench/*.py``
except this file and ``_``-prefixed helpers; ``nox -s bench`` runs it).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _harness import JSON_ENV, Row, peer_version, print_table  # noqa: E402

#: Scripts whose rows make up the table, first; any other script runs after them.
ORDER = ["engine.py", "persist.py", "persist_pg.py"]


def _scripts(selected: list[str]) -> list[Path]:
    if selected:
        return [HERE / (s if s.endswith(".py") else f"{s}.py") for s in selected]
    found = sorted(
        p for p in HERE.glob("*.py") if p.name != "run.py" and not p.name.startswith("_")
    )
    return sorted(
        found, key=lambda p: (ORDER.index(p.name) if p.name in ORDER else len(ORDER), p.name)
    )


def _run_script(script: Path, quick: bool) -> tuple[dict[str, Any] | None, str, int, float]:
    with tempfile.TemporaryDirectory(prefix="flowkit-bench-run-") as tmp:
        out = Path(tmp) / "rows.json"
        env = dict(os.environ, **{JSON_ENV: str(out)})
        args = [sys.executable, str(script)] + (
            ["--quick"] if quick and script.name in ORDER else []
        )
        t0 = time.perf_counter()
        proc = subprocess.run(args, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - t0
        data = json.loads(out.read_text()) if out.exists() else None
    return data, proc.stdout + proc.stderr, proc.returncode, elapsed


def _row(data: dict[str, Any]) -> Row:
    return Row(
        name=data["name"],
        flowkit_ns=data["flowkit_ns"],
        peer_ns=data["peer_ns"],
        peer=data["peer"],
        target=data["target"],
        note=data["note"],
        extra=data.get("extra", {}),
    )


def main() -> int:
    argv = sys.argv[1:]
    quick = "--quick" in argv
    selected = [a for a in argv if not a.startswith("-")]
    rows: list[Row] = []
    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cpus",
        "versions": {
            d: peer_version(d)
            for d in (
                "flowkit",
                "pydantic",
                "langgraph",
                "langgraph-checkpoint-sqlite",
                "langgraph-checkpoint-postgres",
            )
        },
        "quick": quick,
        "scripts": {},
    }
    failed = []
    for script in _scripts(selected):
        print(f"== {script.name}", flush=True)
        data, output, code, elapsed = _run_script(script, quick)
        if data is None or code != 0:
            print(output.rstrip())
        else:
            # the script's own table repeats in the summary; show only its remarks
            for line in output.splitlines():
                if line.startswith("peer not installed") or "not available" in line:
                    print(line)
        print(f"   ({elapsed:.1f} s, exit {code})", flush=True)
        entry: dict[str, Any] = {"exit_code": code, "seconds": round(elapsed, 1)}
        if data is not None:
            entry["meta"] = data.get("meta", {})
            entry["rows"] = data["rows"]
            rows += [_row(r) for r in data["rows"]]
        else:
            entry["output"] = output[-4000:]
        if code != 0:
            failed.append(script.name)
        report["scripts"][script.name] = entry
    print()
    print_table(rows)
    results = HERE / "results.json"
    results.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {results.relative_to(HERE.parent)}")
    if failed:
        print(f"scripts that crashed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
