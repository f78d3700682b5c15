"""Subprocess for the recovery tests.

python recover_proc.py SPEC FLOW_NAME start N      kick off N runs of Three at once
python recover_proc.py SPEC FLOW_NAME ask N        kick off N runs of Asking at once
python recover_proc.py SPEC FLOW_NAME recover      Three.recover(); prints the report

``$FLOWKIT_TEST_TTL`` is the lease ttl (seconds). Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from flows import backend
from recover_flows import make_flows


async def main() -> None:
    spec, name, action, *rest = sys.argv[1:]
    three, asking = make_flows(name)
    persistence = backend(spec)
    ttl = float(os.environ.get("FLOWKIT_TEST_TTL", "1.0"))
    try:
        if action in ("start", "ask"):
            cls = three if action == "start" else asking
            runs = [cls(persistence=persistence, lease_ttl=ttl) for _ in range(int(rest[0]))]
            await asyncio.gather(*(f.kickoff_async() for f in runs))
            print(json.dumps({"started": [f.state.id for f in runs]}))
        elif action == "recover":
            report = await three.arecover(persistence, lease_ttl=ttl)
            print(json.dumps({r.run_id: [r.outcome, r.detail] for r in report.runs}))
        else:
            raise SystemExit(f"unknown action {action}")
    finally:
        await persistence.aclose()


if __name__ == "__main__":
    asyncio.run(main())
