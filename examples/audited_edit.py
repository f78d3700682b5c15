"""Fix a failed run by hand, with an audit record, then resume it.

Run it:  python examples/audited_edit.py

An order flow fails on a bad quantity. Instead of starting over, an operator corrects the
stored state with ``update_state`` (who, why, what changed are stored with the new
checkpoint), the run is resumed and finishes: the methods that had completed do not run
again. ``flowkit history`` shows the edit.
"""

from __future__ import annotations

import subprocess
import sys

from flowkit import Flow, FlowState, listen, persist, start


class Order(FlowState):
    item: str = "flowkit mug"
    quantity: int = 0
    charged: int = 0
    shipped: bool = False


@persist  # the default SQLite file
class OrderFlow(Flow[Order]):
    @start()
    def charge(self) -> int:
        self.state.charged += 1  # runs once: the resume does not charge again
        return self.state.charged

    @listen(charge)
    def pack(self) -> str:
        if self.state.quantity <= 0:
            raise ValueError(f"cannot pack {self.state.quantity} x {self.state.item}")
        return f"{self.state.quantity} x {self.state.item}"

    @listen(pack)
    def ship(self, parcel: str) -> str:
        self.state.shipped = True
        return f"shipped {parcel}"


def main() -> None:
    flow = OrderFlow()
    try:
        flow.kickoff(inputs={"quantity": 0})
    except ValueError as exc:
        print(f"run failed: {exc}")
    run_id = flow.state.id

    edit = OrderFlow().update_state(
        run_id, {"quantity": 2}, reason="customer confirmed 2 mugs by phone", actor="support"
    )
    record = edit.meta["edit"]
    print(f"checkpoint {edit.seq} ({edit.method_name}) by {record['actor']}: {record['reason']}")
    for change in record["changes"]:
        print(f"  {change['path']}: {change['old']} -> {change['new']}")

    result = OrderFlow().resume(run_id)
    print(result)
    assert flow.persistence is not None
    final = flow.persistence.load_checkpoint(run_id)
    assert final is not None and final.state["charged"] == 1, "charge ran once"

    # The audit trail, as the command line shows it.
    history = subprocess.run(
        [sys.executable, "-m", "flowkit.cli", "history", run_id],
        capture_output=True,
        text=True,
        check=True,
    )
    print(history.stdout, end="")


if __name__ == "__main__":
    main()
