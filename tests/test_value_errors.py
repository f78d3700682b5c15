"""Out-of-range argument values raise InvalidArgumentError: a FlowkitError that is also a
ValueError, naming the argument and what it accepts. Wrong types stay
FlowConfigurationError (a TypeError)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flowkit import Flow, FlowkitError, start
from flowkit.exceptions import FlowConfigurationError, InvalidArgumentError
from flowkit.persistence import (
    FileFlowPersistence,
    FlowPersistence,
    InMemoryFlowPersistence,
    SQLiteFlowPersistence,
)


class One(Flow):
    @start()
    def go(self) -> int:
        return 1


@pytest.fixture(params=["sqlite", "memory", "file"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FlowPersistence]:
    made: FlowPersistence = {
        "sqlite": lambda: SQLiteFlowPersistence(tmp_path / "flows.db"),
        "memory": InMemoryFlowPersistence,
        "file": lambda: FileFlowPersistence(tmp_path / "runs"),
    }[request.param]()
    made.save_state("r1", "start", {"id": "r1"})
    yield made
    made.close()


BACKEND_CALLS: list[Any] = [
    pytest.param(lambda b: b.prune("r1", keep_last=0), "keep_last", id="prune-keep_last-0"),
    pytest.param(lambda b: b.acquire_lease("r1", "me", 0), "ttl", id="acquire_lease-ttl-0"),
    pytest.param(lambda b: b.acquire_lease("r1", "me", math.nan), "ttl", id="acquire-ttl-nan"),
    pytest.param(lambda b: b.renew_lease("r1", "me", -1), "ttl", id="renew_lease-ttl-negative"),
    pytest.param(lambda b: b.list_runs(limit=-1), "limit", id="list_runs-limit-negative"),
    pytest.param(lambda b: b.list_runs(offset=-1), "offset", id="list_runs-offset-negative"),
    pytest.param(lambda b: b.list_runs(status="paused"), "paused", id="list_runs-bad-status"),
]


@pytest.mark.parametrize(("call", "named"), BACKEND_CALLS)
def test_backend_value_error_is_an_invalid_argument_error(
    backend: FlowPersistence, call: Callable[[FlowPersistence], Any], named: str
) -> None:
    """A backend operation given an out-of-range value raises InvalidArgumentError (also
    a ValueError and a FlowkitError) naming the argument, and changes nothing."""
    with pytest.raises(InvalidArgumentError, match=named) as info:
        call(backend)
    assert isinstance(info.value, ValueError) and isinstance(info.value, FlowkitError)
    assert backend.load_state("r1") == {"id": "r1"}


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        pytest.param({"max_method_calls": 0}, "max_method_calls", id="max_method_calls-0"),
        pytest.param({"lease_ttl": 0}, "lease_ttl", id="lease_ttl-0"),
        pytest.param({"lease_ttl": -5.0}, "lease_ttl", id="lease_ttl-negative"),
        pytest.param({"lease_ttl": math.nan}, "lease_ttl", id="lease_ttl-nan"),
        pytest.param({"lease_wait": -1}, "lease_wait", id="lease_wait-negative"),
    ],
)
def test_flow_value_error_is_an_invalid_argument_error(kwargs: dict[str, Any], named: str) -> None:
    """Flow(...) with an out-of-range number raises InvalidArgumentError naming it."""
    with pytest.raises(InvalidArgumentError, match=named) as info:
        One(**kwargs)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        pytest.param({"max_method_calls": "many"}, "max_method_calls", id="max_method_calls"),
        pytest.param({"max_method_calls": True}, "max_method_calls", id="max_method_calls-bool"),
        pytest.param({"lease_ttl": "30"}, "lease_ttl", id="lease_ttl-text"),
        pytest.param({"lease_wait": None}, "lease_wait", id="lease_wait-none"),
    ],
)
def test_flow_wrong_type_is_a_configuration_error(kwargs: dict[str, Any], named: str) -> None:
    """Flow(...) with a value of the wrong type raises FlowConfigurationError (a
    TypeError) naming the argument."""
    with pytest.raises(FlowConfigurationError, match=named) as info:
        One(**kwargs)
    assert isinstance(info.value, TypeError)
