"""Subprocess entry point for the durable-run tests.

python tests/durable/proc.py BACKEND FLOW ACTION [RUN_ID] [VALUE_JSON]
ACTION: kickoff | kickoff-id | resume | resume-value | hammer
Prints one JSON line: {"result": ...} or {"error": type, "message": ...}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import flows

from flowkit import Interrupted
from flowkit.exceptions import FlowkitError


def main() -> None:
    spec, flow_name, action = sys.argv[1:4]
    rest = sys.argv[4:]
    flow_cls = getattr(flows, flow_name)
    persistence = flows.backend(spec)
    ttl = float(__import__("os").environ.get("FLOWKIT_TEST_TTL", "0.6"))
    try:
        if action == "kickoff":
            inputs = {"id": rest[0]} if rest else None
            result = flow_cls(persistence=persistence, lease_ttl=ttl).kickoff(inputs=inputs)
        elif action == "resume":
            result = flow_cls(persistence=persistence, lease_ttl=ttl).resume(rest[0])
        elif action == "resume-value":
            result = flow_cls(persistence=persistence, lease_ttl=ttl).resume(
                rest[0], json.loads(rest[1])
            )
        elif action == "hammer":
            ok = refused = 0
            for _ in range(int(rest[1])):
                try:
                    flow_cls(persistence=persistence, lease_ttl=ttl).kickoff(inputs={"id": rest[0]})
                    ok += 1
                except FlowkitError as exc:
                    if type(exc).__name__ not in ("RunLockedError", "ConcurrentUpdateError"):
                        raise
                    refused += 1
            result = {"ok": ok, "refused": refused}
        else:
            raise SystemExit(f"unknown action {action}")
    except FlowkitError as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
        return
    finally:
        persistence.close()
    if isinstance(result, Interrupted):
        print(
            json.dumps(
                {
                    "interrupted": {
                        "run_id": result.run_id,
                        "payload": result.payload,
                        "method": result.method_name,
                    }
                }
            )
        )
    else:
        print(json.dumps({"result": result}))


if __name__ == "__main__":
    main()
