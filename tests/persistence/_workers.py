"""Code run in child processes by test_processes.py (importable under spawn)."""

from __future__ import annotations

import sys

from flowkit.exceptions import ConcurrentUpdateError


def _backend(kind: str, location: str):  # type: ignore[no-untyped-def]
    if kind == "sqlite":
        from flowkit.persistence import SQLiteFlowPersistence

        return SQLiteFlowPersistence(location)
    from flowkit.persistence import FileFlowPersistence

    return FileFlowPersistence(location)


def write_runs(kind: str, location: str, worker: int, runs: int, saves: int) -> None:
    """Write ``runs`` runs of ``saves`` checkpoints each, with CAS."""
    store = _backend(kind, location)
    try:
        for run in range(runs):
            run_id = f"w{worker}-r{run}"
            for seq in range(saves):
                store.save_checkpoint(
                    run_id, "step", {"id": run_id, "n": seq}, expected_seq=seq, flow_name="Multi"
                )
    finally:
        store.close()


def increment(kind: str, location: str, run_id: str, times: int) -> int:
    """Add 1 to the run's counter ``times`` times with load + CAS save; return conflicts."""
    store = _backend(kind, location)
    conflicts = 0
    try:
        done = 0
        while done < times:
            latest = store.load_checkpoint(run_id)
            assert latest is not None
            state = {**latest.state, "counter": latest.state["counter"] + 1}
            try:
                store.save_checkpoint(run_id, "inc", state, expected_seq=latest.seq)
            except ConcurrentUpdateError:
                conflicts += 1
                continue
            done += 1
    finally:
        store.close()
    return conflicts


if __name__ == "__main__":
    command, kind, location, *rest = sys.argv[1:]
    if command == "write":
        write_runs(kind, location, int(rest[0]), int(rest[1]), int(rest[2]))
    else:
        print(increment(kind, location, rest[0], int(rest[1])))
