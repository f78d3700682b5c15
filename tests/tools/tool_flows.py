"""Flows the tool tests draw, diff and edit (run for real against real backends)."""

from __future__ import annotations

import os
from enum import Enum

from flowkit import Flow, FlowState, and_, listen, or_, persist, router, start
from flowkit.persistence import SQLiteFlowPersistence


class Verdict(Enum):
    GOOD = "good"
    WEAK = "weak"


class Notes(FlowState):
    topic: str = ""
    rounds: int = 0
    notes: list[dict[str, str]] = []
    summary: str = ""


class Research(Flow[Notes]):
    """Two starts joined by and_, a router loop back through or_, an Enum router."""

    @start()
    def plan(self) -> str:
        return self.state.topic

    @start()
    def warm_up(self) -> None:
        return None

    @listen(or_(and_(plan, warm_up), "again"))
    def search(self) -> None:
        self.state.rounds += 1
        self.state.notes.append({"title": f"finding {self.state.rounds}"})

    @router(search)
    def judge(self) -> Verdict:
        if self.state.rounds >= 3:
            return Verdict.GOOD
        return Verdict.WEAK

    @listen("weak")
    def refine(self) -> None:
        return None

    @router(refine)
    def retry(self) -> str:
        return "again"

    @listen("good")
    def write(self) -> str:
        self.state.summary = f"{len(self.state.notes)} notes on {self.state.topic}"
        return self.state.summary


class Approval(FlowState):
    draft: str = ""
    approved: bool | None = None
    budget: int = 0


class ApprovalFlow(Flow[Approval]):
    """Draft, wait for a human, then publish."""

    @start()
    def write(self) -> str:
        self.state.draft = "first draft"
        return self.state.draft

    @listen(write)
    def review(self) -> bool:
        self.state.approved = self.interrupt({"draft": self.state.draft}) == "yes"
        return self.state.approved

    @listen(review)
    def publish(self) -> str:
        return f"published {self.state.draft!r} with budget {self.state.budget}"


class Order(FlowState):
    quantity: int = 0
    address: dict[str, str] = {}
    shipped: bool = False


class OrderFlow(Flow[Order]):
    """Fails on a bad quantity; an audited edit fixes it and resume finishes the run."""

    @start()
    def receive(self) -> int:
        return self.state.quantity

    @listen(receive)
    def check(self, quantity: int) -> None:
        if self.state.quantity <= 0:
            raise ValueError(f"quantity must be positive, got {self.state.quantity}")

    @listen(check)
    def ship(self) -> str:
        self.state.shipped = True
        return f"shipped {self.state.quantity} to {self.state.address.get('city', '?')}"


@persist(SQLiteFlowPersistence("own.db"))
class OwnDbFlow(Flow[Approval]):
    """Stored in ``own.db`` in the current folder, not in the default database."""

    @start()
    def write(self) -> str:
        self.state.draft = "own"
        return self.state.draft

    @listen(write)
    def review(self) -> bool:
        self.state.approved = self.interrupt("ok?") == "yes"
        return self.state.approved


class Steps(FlowState):
    done: list[str] = []
    note: str = ""


class CrashFlow(Flow[Steps]):
    """Its second method kills the process when FLOWKIT_TEST_CRASH=1 (a killed worker)."""

    @start()
    def first(self) -> None:
        self.state.done.append("first")

    @listen(first)
    def second(self) -> None:
        if os.environ.get("FLOWKIT_TEST_CRASH") == "1":
            os._exit(3)
        self.state.done.append("second")

    @listen(second)
    def third(self) -> str:
        self.state.done.append("third")
        return f"{self.state.done} ({self.state.note})"
