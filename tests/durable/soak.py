"""Random SIGKILL soak over flows with parallel branches (issue 10).

A worker process runs ``SoakFlow`` (fan-out, ``and_`` join, a router after the join, a
loop) over a set of run ids, resuming any unfinished one. The driver kills it with
SIGKILL at random moments and starts a new worker, until every run has completed. Then
it checks, for every run:

* the final state equals an uncrashed run's (list items compared as multisets: parallel
  appends land in completion order, which differs from run to run), and every method
  call's changes are in it exactly once;
* no committed method ran twice: after each kill the driver reads the in-flight run's
  committed trace (the keys in its latest checkpoint's state) and no method call in that
  trace may be started again afterwards (every start is logged to an fsync'd file).

Run alone for a long soak::

    python tests/durable/soak.py --backend sqlite --kills 300
    nox -s soak            # every backend, 300 kills each

The test suite runs a short one per backend (tests/durable/test_soak.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def worker(spec: str, run_ids: list[str]) -> None:
    """Run or resume every unfinished run; skip runs still leased by a killed worker."""
    import flows

    from flowkit.exceptions import RunLockedError

    store = flows.backend(spec)
    ttl = float(os.environ.get("FLOWKIT_TEST_TTL", "0.5"))
    print("ready", flush=True)
    # imported and waiting: the driver starts the next worker while this one runs, so a
    # kill does not wait for an interpreter start
    if sys.stdin.readline().strip() != "go":
        return
    try:
        while True:
            unfinished = 0
            for run_id in run_ids:
                run = store.get_run(run_id)
                if run is not None and run.status == "completed":
                    continue
                unfinished += 1
                flows.log_step(f"RUN:{run_id}")
                flow = flows.SoakFlow(persistence=store, lease_ttl=ttl)
                try:
                    if run is None:
                        flow.kickoff(inputs={"id": run_id})
                    else:
                        flow.resume(run_id)
                except RunLockedError:
                    continue
            if not unfinished:
                return
            time.sleep(0.05)
    finally:
        store.close()


@dataclass
class Kill:
    log_lines: int  # how many log lines existed when the worker was dead
    run_id: str
    committed: frozenset[str]


@dataclass
class Stats:
    backend: str
    runs: int
    kills: int = 0
    workers: int = 0
    reruns: int = 0  # method calls started more than once (cut off by a kill)
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.backend}: {self.kills} kills over {self.runs} runs ({self.workers} "
            f"worker processes, {self.reruns} cut-off method calls re-run) in "
            f"{self.seconds:.1f} s; {len(self.problems)} problems"
        )


def _expected() -> dict[str, Any]:
    """The state of an uncrashed run, normalised."""
    import flows

    from flowkit.persistence import InMemoryFlowPersistence

    flow = flows.SoakFlow(persistence=InMemoryFlowPersistence())
    flow.kickoff()
    return _normal(flow.state.model_dump())


def _normal(state: dict[str, Any]) -> dict[str, Any]:
    out = dict(state)
    out.pop("id", None)
    out["trace"] = sorted(out["trace"])
    out["items"] = sorted(out["items"])
    return out


def drive(spec: str, *, kills: int, runs: int, log: Path, seed: int | None = None) -> Stats:
    """Kill workers ``kills`` times at random moments, over batches of ``runs`` runs
    (a new batch when a worker finished the last one before the kills were spent)."""
    import flows

    rng = random.Random(seed)
    stats = Stats(spec.partition(":")[0], 0)
    env = dict(os.environ, FLOWKIT_TEST_LOG=str(log))
    env.pop("FLOWKIT_TEST_CRASH_AT", None)
    store = flows.backend(spec)
    started = time.monotonic()
    try:
        while True:
            prefix = f"soak-{uuid.uuid4().hex[:8]}"
            run_ids = [f"{prefix}-{i}" for i in range(runs)]
            stats.runs += runs
            records = _batch(spec, run_ids, env, store, log, rng, kills, stats)
            _check(store, run_ids, log, records, stats)
            if stats.kills >= kills:
                break
        stats.seconds = time.monotonic() - started
    finally:
        store.close()
    return stats


def _batch(
    spec: str,
    run_ids: list[str],
    env: dict[str, str],
    store: Any,
    log: Path,
    rng: random.Random,
    kills: int,
    stats: Stats,
) -> list[Kill]:
    """Workers over ``run_ids``, killed while the budget lasts, until one finishes."""
    records: list[Kill] = []

    def spawn() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, __file__, "worker", spec, *run_ids],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    spare = spawn()
    try:
        while True:
            proc, spare = spare, spawn()
            stats.workers += 1
            assert proc.stdout is not None and proc.stdin is not None
            ready = proc.stdout.readline()
            if ready.strip() != "ready":
                _, err = proc.communicate(timeout=600)
                raise AssertionError(f"soak worker did not start:\n{err}")
            proc.stdin.write("go\n")
            proc.stdin.flush()
            if stats.kills < kills:
                time.sleep(rng.uniform(0.0, 0.25))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    proc.communicate()
                    stats.kills += 1
                    records.append(_after_kill(store, log))
                    continue
            _, err = proc.communicate(timeout=600)
            if proc.returncode != 0:
                raise AssertionError(f"soak worker failed ({proc.returncode}):\n{err}")
            return records
    finally:
        spare.kill()
        spare.communicate()


def _lines(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def _after_kill(store: Any, log: Path) -> Kill:
    lines = _lines(log)
    current = next((line[4:] for line in reversed(lines) if line.startswith("RUN:")), "")
    cp = store.load_checkpoint(current) if current else None
    committed = frozenset(cp.state.get("trace", [])) if cp is not None else frozenset()
    return Kill(len(lines), current, committed)


def _check(store: Any, run_ids: list[str], log: Path, kills: list[Kill], stats: Stats) -> None:
    expected = _expected()
    lines = _lines(log)
    for run_id in run_ids:
        run = store.get_run(run_id)
        if run is None or run.status != "completed":
            stats.problems.append(f"{run_id}: not completed ({run and run.status})")
            continue
        state = store.load_state(run_id)
        if _normal(state) != expected:
            stats.problems.append(f"{run_id}: final state {state} != uncrashed {expected}")
        if len(set(state["trace"])) != len(state["trace"]):
            stats.problems.append(f"{run_id}: a method's changes applied twice: {state['trace']}")
    prefix = run_ids[0].rsplit("-", 1)[0] + "-"
    starts = Counter(
        line for line in lines if line.startswith(prefix) and not line.startswith("RUN:")
    )
    stats.reruns += sum(n - 1 for n in starts.values() if n > 1)
    for kill in kills:
        again = {
            line.partition(":")[2]
            for line in lines[kill.log_lines :]
            if line.startswith(f"{kill.run_id}:")
        }
        twice = sorted(again & kill.committed)
        if twice:
            stats.problems.append(f"{kill.run_id}: committed {twice} ran again after a kill")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", action="append", choices=["sqlite", "file", "postgres"])
    parser.add_argument("--kills", type=int, default=300)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    failed = False
    for kind in args.backend or ["sqlite", "file", "postgres"]:
        with tempfile.TemporaryDirectory() as tmp:
            spec = {"sqlite": f"sqlite:{tmp}/runs.db", "file": f"file:{tmp}/runs"}.get(
                kind, "postgres"
            )
            stats = drive(spec, kills=args.kills, runs=args.runs, log=Path(tmp) / "steps.log")
        print(stats.line(), flush=True)
        for problem in stats.problems:
            print("  PROBLEM", problem)
        failed = failed or bool(stats.problems)
        print(json.dumps(stats.__dict__, default=str))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
