"""Subprocess for the racing-resumers test: resume every run listed in a file, in order.

python tests/durable/resumer.py BACKEND IDS_FILE READY_FILE GO_FILE

Writes READY_FILE once its backend is open, waits for GO_FILE (so that every process
starts racing at the same moment), then resumes each run id in turn, counting what
happened. Prints one JSON line: {"resumed": n, "refused": n, "finished": n}.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import flows

from flowkit.exceptions import (
    ConcurrentUpdateError,
    LeaseLostError,
    ResumeError,
    RunLockedError,
)


def main() -> None:
    spec, ids_file, ready, go = sys.argv[1:5]
    run_ids = Path(ids_file).read_text().split()
    persistence = flows.backend(spec)
    counts = {"resumed": 0, "refused": 0, "finished": 0}
    try:
        persistence.init_db()
        Path(ready).write_text("ready")
        while not Path(go).exists():
            time.sleep(0.005)
        for run_id in run_ids:
            try:
                flows.Relay(persistence=persistence, lease_ttl=30).resume(run_id)
                counts["resumed"] += 1
            except (RunLockedError, ConcurrentUpdateError, LeaseLostError):
                counts["refused"] += 1  # another process holds or advanced it
            except ResumeError as exc:
                if "already completed" not in str(exc):
                    raise
                counts["finished"] += 1
    finally:
        persistence.close()
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
