"""Small flows the CLI tests run for real and then inspect with ``flowkit``.

Tests construct them with ``persistence=`` a SQLite file in ``tmp_path``; the CLI names
them as ``tests.cli_flows:ClassName``.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

from pydantic import SecretStr

from flowkit import Flow, FlowState, listen, persist, start


class ReviewState(FlowState):
    topic: str = ""
    draft: str = ""
    approved: bool | None = None


@persist
class ReviewFlow(Flow[ReviewState]):
    """Draft, wait for a human's verdict, then publish or reject."""

    @start()
    def write(self) -> str:
        self.state.draft = f"all about {self.state.topic}"
        return self.state.draft

    @listen(write)
    def review(self, draft: str) -> bool:
        verdict = self.interrupt({"question": "publish this?", "draft": draft})
        self.state.approved = verdict == "yes"
        return self.state.approved

    @listen(review)
    def publish(self, approved: bool) -> str:
        return f"published: {self.state.draft}" if approved else "rejected"


@persist
class CountFlow(Flow[dict[str, Any]]):
    """Three steps that each leave a checkpoint; the state holds bytes and a datetime."""

    @start()
    def one(self) -> int:
        self.state["count"] = 1
        self.state["blob"] = b"\x00\x01\x02\x03\x04"
        self.state["when"] = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
        return 1

    @listen(one)
    def two(self, n: int) -> int:
        if os.environ.get("FLOWKIT_TEST_CRASH") == "1":
            os._exit(3)  # the process dies mid-run, as a killed worker would
        self.state["count"] = n + 1
        return n + 1

    @listen(two)
    def three(self, n: int) -> dict[str, int]:
        self.state["count"] = n + 1
        return {"count": n + 1}


@persist
class FailingFlow(Flow[dict[str, Any]]):
    """The second method raises."""

    @start()
    def prepare(self) -> str:
        self.state["prepared"] = True
        return "ready"

    @listen(prepare)
    def explode(self, _: str) -> None:
        raise ValueError("the upstream service said no")


class VaultState(FlowState):
    token: SecretStr = SecretStr("")
    note: str = ""


@persist
class VaultFlow(Flow[VaultState]):
    """Stores a secret field (needs FLOWKIT_SECRET_KEY)."""

    @start()
    def keep(self) -> str:
        self.state.note = "token kept"
        return self.state.note


@persist
class CountFlowChanged(Flow[dict[str, Any]], name="CountFlow"):
    """CountFlow after a code change: stored runs carry the old definition's fingerprint."""

    @start()
    def one(self) -> int:
        self.state["count"] = 1
        return 1

    @listen(one)
    def two(self, n: int) -> int:
        self.state["count"] = n + 10
        return n + 10

    @listen(two)
    def three(self, n: int) -> dict[str, int]:
        self.state["count"] = n + 10
        return {"count": n + 10}

    @listen(three)
    def four(self) -> str:
        return "four was added"
