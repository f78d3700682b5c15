"""The two sync engine cases of issue 10, alone: flowkit vs LangGraph, interleaved, wall
and CPU time per kickoff. Not run by ``bench/run.py`` (a helper for A/B comparisons).

    python bench/_compare.py [fanout,linear] [rounds]
    PYTHONPATH=/path/to/other/checkout python bench/_compare.py   # another flowkit

Prints one line per case: the median wall time of each over the rounds, their ratio,
and the median CPU time per kickoff (``time.process_time``: every thread).
"""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import engine
from _harness import measure

import flowkit


def compare(case: str, rounds: int) -> str:
    contenders: dict[str, Any]
    if case == "fanout":
        flow_cls: Any = engine._fanout_flow(is_async=False)
        graph = engine._lg_fanout(is_async=False)
        contenders = {
            "flowkit": lambda: flow_cls().kickoff(),
            "peer": lambda: graph.invoke({"hits": 0}),
        }
        batch = 20
    else:
        flow_cls = engine._linear_flow(is_async=False)
        graph = engine._lg_linear(is_async=False)
        contenders = {
            "flowkit": lambda: flow_cls().kickoff(),
            "peer": lambda: graph.invoke({"counter": 0}),
        }
        batch = 100
    cpu: dict[str, float] = {}
    t = measure(contenders, batch=batch, rounds=rounds, cpu=cpu)
    fk, peer = t["flowkit"], t["peer"]
    return (
        f"{case}: flowkit {fk / 1e3:.0f} us vs LangGraph {peer / 1e3:.0f} us = {fk / peer:.3f}x "
        f"(median of {rounds} rounds); CPU per kickoff flowkit {cpu['flowkit'] / 1e3:.0f} us vs "
        f"LangGraph {cpu['peer'] / 1e3:.0f} us ({cpu['flowkit'] / cpu['peer']:.3f}x); "
        f"load {os.getloadavg()[0]:.1f}; flowkit from {os.path.dirname(flowkit.__file__)}"
    )


def main() -> None:
    cases = sys.argv[1].split(",") if len(sys.argv) > 1 else ["fanout", "linear"]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 11
    for case in cases:
        print(compare(case, rounds), flush=True)


if __name__ == "__main__":
    main()
