"""What a method's exception carries out of a synchronous kickoff: its own traceback,
without flowkit's internals chained to it as if they had failed first."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowkit import Flow, FlowState, Retry, persist, start
from flowkit.persistence import SQLiteFlowPersistence


class Broken(Exception):
    pass


class Nothing(FlowState):
    pass


def test_a_methods_error_has_no_flowkit_context(tmp_path: Path) -> None:
    """kickoff() called outside an event loop: the method's exception is raised with no
    ``__context__`` (Python would print "During handling of the above exception, another
    exception occurred" above it), and the traceback stored in the failed run's error
    starts at the method."""
    store = SQLiteFlowPersistence(tmp_path / "runs.db")

    @persist(store)
    class Fails(Flow[Nothing]):
        @start(retry=Retry(2, delay=0))
        def step(self) -> None:
            raise Broken("the method's own error")

    with pytest.raises(Broken) as caught:
        Fails().kickoff(inputs={"id": "ctx"})
    assert caught.value.__context__ is None, repr(caught.value.__context__)
    run = store.get_run("ctx")
    assert run is not None and run.status == "failed"
    trace = run.info["error"]["traceback"]
    assert "During handling" not in trace and "no running event loop" not in trace, trace
    assert trace.startswith("Traceback") and "raise Broken(" in trace, trace
    store.close()
