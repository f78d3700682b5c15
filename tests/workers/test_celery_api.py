"""flowkit.celery's checks on the caller's side: wrong calls fail at once, before any
message is sent (no broker needed: nothing reaches it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from celery import Celery
from worker_flows import make_flow

from flowkit import Flow, start
from flowkit.celery import CeleryFlows
from flowkit.exceptions import (
    FlowConfigurationError,
    ResumeError,
    RunNotFoundError,
    StateValidationError,
)
from flowkit.persistence import SQLiteFlowPersistence

# A port nothing listens on: a test that sent a message would fail, not pass.
NO_BROKER = "amqp://guest:guest@127.0.0.1:1//"


@pytest.fixture
def flows(tmp_path: Path) -> CeleryFlows:
    app = Celery("api-tests", broker=NO_BROKER)
    return CeleryFlows(app, persistence=SQLiteFlowPersistence(tmp_path / "runs.db"))


def test_enqueue_refuses_an_unregistered_flow(flows: CeleryFlows) -> None:
    """enqueue() of a class the workers do not know names it and says to register it."""
    with pytest.raises(FlowConfigurationError, match="not registered"):
        flows.enqueue(make_flow("unregistered"))


def test_enqueue_checks_inputs_against_the_state_model(flows: CeleryFlows) -> None:
    """A bad input value fails in the caller, naming the field, not later on a worker."""
    cls = flows.register(make_flow("checked"))
    with pytest.raises(StateValidationError, match="commits"):
        flows.enqueue(cls, inputs={"commits": "not a list"})


def test_enqueue_refuses_two_different_run_ids(flows: CeleryFlows) -> None:
    """inputs={'id': A} with run_id=B is ambiguous: an error naming both."""
    cls = flows.register(make_flow("two-ids"))
    with pytest.raises(FlowConfigurationError, match="two different run ids"):
        flows.enqueue(cls, inputs={"id": "a"}, run_id="b")


def test_register_refuses_a_second_class_with_the_same_flow_name(flows: CeleryFlows) -> None:
    """Two classes under one flow name would make a worker run the wrong one: refused."""
    flows.register(make_flow("same"))
    with pytest.raises(FlowConfigurationError, match="already registered"):
        flows.register(make_flow("same"))


def test_register_refuses_what_is_not_a_flow(flows: CeleryFlows) -> None:
    """register() of a plain class is a clear error."""
    with pytest.raises(FlowConfigurationError, match="Flow subclass"):
        flows.register(dict)  # type: ignore[arg-type]


def test_enqueue_resume_of_an_unknown_run_fails_at_once(flows: CeleryFlows) -> None:
    """enqueue_resume() reads the run first: an unknown id is RunNotFoundError."""
    flows.register(make_flow("unknown-run"))
    with pytest.raises(RunNotFoundError, match="no-such-run"):
        flows.enqueue_resume("no-such-run", "yes")


def test_enqueue_resume_of_an_interrupted_run_needs_the_answer(
    flows: CeleryFlows, tmp_path: Path
) -> None:
    """An interrupted run resumed without a value: ResumeError saying to pass it."""
    cls = flows.register(make_flow("needs-answer"))
    waiting = cls(persistence=flows.backend(cls)).kickoff()
    with pytest.raises(ResumeError, match="waiting for an answer"):
        flows.enqueue_resume(waiting.run_id)


def test_enqueue_resume_of_a_completed_run_is_refused(flows: CeleryFlows) -> None:
    """Nothing to resume in a completed run: ResumeError naming it."""

    class Done(Flow[dict], name="done-flow"):  # type: ignore[type-arg]
        @start()
        def only(self) -> int:
            return 1

    flows.register(Done)
    flow = Done(persistence=flows.backend(Done))
    flow.kickoff(inputs={"id": "finished-run"})
    with pytest.raises(ResumeError, match="finished-run"):
        flows.enqueue_resume("finished-run")


def test_retry_delay_must_be_positive() -> None:
    """CeleryFlows(retry_delay=0) is refused with the argument named."""
    with pytest.raises(FlowConfigurationError, match="retry_delay"):
        CeleryFlows(Celery("x", broker=NO_BROKER), retry_delay=0)


def test_schedule_recovery_adds_a_beat_entry(flows: CeleryFlows) -> None:
    """schedule_recovery(every) puts the recovery task in the app's beat schedule,
    expiring after one period."""
    flows.schedule_recovery(every=30)
    entry = flows.app.conf.beat_schedule["flowkit.recover"]
    assert entry == {"task": "flowkit.recover", "schedule": 30.0, "options": {"expires": 30.0}}


def test_importing_flowkit_does_not_import_celery() -> None:
    """celery is optional: `import flowkit` (and flowkit.persistence) leaves it unloaded."""
    code = "import sys, flowkit, flowkit.persistence; print('celery' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
