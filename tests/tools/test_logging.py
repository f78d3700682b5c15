"""The ``flowkit`` logger works without ``verbose=True``: INFO for runs, DEBUG for methods."""

from __future__ import annotations

import logging

import pytest
from tool_flows import OrderFlow, Research


def test_info_logs_each_run_start_and_end(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flowkit")
    flow = Research()
    flow.kickoff()
    messages = [r.getMessage() for r in caplog.records if r.name == "flowkit"]
    assert messages == [
        f"Research run {flow.state.id} started",
        f"Research run {flow.state.id} finished (last checkpoint None)",
    ]


def test_debug_adds_every_method(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="flowkit")
    flow = Research()
    flow.kickoff()
    methods = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert f"Research run {flow.state.id}: plan started" in methods
    assert f"Research run {flow.state.id}: write finished" in methods


def test_a_failing_method_is_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flowkit")
    flow = OrderFlow()
    with pytest.raises(ValueError):
        flow.kickoff()
    assert any(
        "check failed: ValueError: quantity must be positive" in r.getMessage()
        for r in caplog.records
    )


def test_silent_at_the_default_level(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing is logged (nor printed) unless the logger is enabled for INFO."""
    caplog.set_level(logging.WARNING, logger="flowkit")
    Research().kickoff()
    assert [r for r in caplog.records if r.name == "flowkit"] == []
