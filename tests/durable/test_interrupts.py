"""Human-in-the-loop: interrupt in one process, resume in another (SPEC 5)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from flows import Approval, backend

from flowkit import Flow, FlowState, Interrupted, persist, start
from flowkit.exceptions import FlowConfigurationError, ResumeError
from flowkit.persistence import InMemoryFlowPersistence


@pytest.mark.slow
def test_interrupt_in_one_process_resume_in_another(proc, backend_spec: str, run_id: str) -> None:  # type: ignore[no-untyped-def]
    """kickoff returns Interrupted; a second process resumes with the answer; the method
    re-runs from its starting state (its edit counted once) and the flow finishes."""
    first = proc.run(backend_spec, "Approval", "kickoff", run_id)
    assert first == {
        "interrupted": {
            "run_id": run_id,
            "payload": {"question": "publish?", "draft": "hello world"},
            "method": "review",
        }
    }
    p = backend(backend_spec)
    try:
        run = p.get_run(run_id)
        assert run is not None and run.status == "interrupted"
    finally:
        p.close()
    second = proc.run(backend_spec, "Approval", "resume-value", run_id, '"approved"')
    assert second == {"result": "approved: hello world (1 edit)"}
    assert Counter(proc.steps()) == Counter({"write": 1, "review": 2, "publish": 1})


def test_resume_needs_the_answer_and_refuses_one_when_not_waiting(
    backend_spec: str, run_id: str
) -> None:
    """resume() of an interrupted run without a value, or with one for a run that is not
    waiting, is a clear error."""
    p = backend(backend_spec)
    try:
        out = Approval(persistence=p).kickoff(inputs={"id": run_id})
        assert isinstance(out, Interrupted)
        with pytest.raises(ResumeError, match="waiting for an answer"):
            Approval(persistence=p).resume(run_id)
        assert Approval(persistence=p).resume(run_id, "no") == "no: hello world (1 edit)"
    finally:
        p.close()


class Multi(FlowState):
    answers: list[Any] = []


def test_several_interrupts_in_one_method_are_answered_in_order() -> None:
    """Each resume answers the next interrupt of the same method, in call order."""
    store = InMemoryFlowPersistence()

    @persist(store)
    class Ask(Flow[Multi]):
        @start()
        async def ask(self) -> list[Any]:
            first = self.interrupt("first?")
            second = self.interrupt("second?")
            self.state.answers = [first, second]
            return self.state.answers

    out = Ask().kickoff()
    assert isinstance(out, Interrupted) and out.payload == "first?"
    out2 = Ask().resume(out.run_id, 1)
    assert isinstance(out2, Interrupted) and out2.payload == "second?"
    assert Ask().resume(out.run_id, {"two": 2}) == [1, {"two": 2}]


def test_interrupt_without_durable_persistence_is_a_clear_error() -> None:
    """self.interrupt() in a flow without persistence names the method and the fix."""

    class NoStore(Flow):  # type: ignore[type-arg]
        @start()
        def ask(self) -> None:
            self.interrupt("?")

    with pytest.raises(FlowConfigurationError, match=r"NoStore.ask called self.interrupt\(\)"):
        NoStore().kickoff()
