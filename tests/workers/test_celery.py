"""flowkit.celery with real ``celery worker`` processes, RabbitMQ and PostgreSQL."""

from __future__ import annotations

import os
import signal
import uuid
from typing import Any

import pytest
from helpers import check_exactly_once, statuses, wait_for
from worker_app import PG_URL

from flowkit.persistence import SQLAlchemyFlowPersistence

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_enqueued_runs_wait_for_answers_then_complete(cluster_factory: Any) -> None:
    """enqueue() runs flows on a worker up to their interrupt; enqueue_resume() with the
    answer finishes them; each method ran exactly once."""
    cluster = cluster_factory()
    cluster.start(0)
    store = SQLAlchemyFlowPersistence(PG_URL)
    try:
        flow = next(iter(cluster.flows.flows.values()))
        ids = [cluster.flows.enqueue(flow) for _ in range(5)]
        wait_for(
            "runs to be interrupted",
            lambda: statuses(store, cluster.flow_name) == dict.fromkeys(ids, "interrupted"),
            120,
            cluster,
        )
        for run_id in ids:
            cluster.flows.enqueue_resume(run_id, "yes")
        wait_for(
            "runs to complete",
            lambda: statuses(store, cluster.flow_name) == dict.fromkeys(ids, "completed"),
            120,
            cluster,
        )
        check_exactly_once(store, ids, cluster.log_lines(), cluster.killed_pids)
        assert all(store.load_state(i)["answer"] == "yes" for i in ids)
        assert "--pool=solo" not in cluster.logs()  # the warning is for solo workers only
    finally:
        store.close()


def test_beat_recovers_runs_whose_message_was_lost(cluster_factory: Any) -> None:
    """A worker dies and its messages are lost: the beat task resumes the orphaned runs
    (up to their interrupt), and nothing committed runs again."""
    cluster = cluster_factory(ttl=300.0, step_seconds=0.2)  # dead owner taken over at once
    cluster.start(0, "--pool=solo")  # solo works (slowly, at times): flowkit warns
    store = SQLAlchemyFlowPersistence(PG_URL)
    try:
        flow = next(iter(cluster.flows.flows.values()))
        ids = [cluster.flows.enqueue(flow) for _ in range(3)]
        wait_for(
            "a run to be under way",
            lambda: "running" in statuses(store, cluster.flow_name).values(),
            120,
            cluster,
        )
        cluster.kill(0)
        cluster.purge()
        assert "running" in statuses(store, cluster.flow_name).values()
        cluster.start(0)
        cluster.start_beat(every=1.0)
        started = set(statuses(store, cluster.flow_name))
        wait_for(
            "the orphaned runs to be recovered",
            lambda: set(statuses(store, cluster.flow_name).values()) <= {"interrupted"},
            120,
            cluster,
        )
        for run_id in started:
            cluster.flows.enqueue_resume(run_id, "yes")
        wait_for(
            "the answered runs to complete",
            lambda: set(statuses(store, cluster.flow_name).values()) == {"completed"},
            120,
            cluster,
        )
        check_exactly_once(store, sorted(started), cluster.log_lines(), cluster.killed_pids)
        assert started <= set(ids)
        assert "runs --pool=solo on RabbitMQ" in cluster.logs()
    finally:
        store.close()


def test_enqueue_sends_a_small_json_message(cluster_factory: Any) -> None:
    """The start message is JSON (no pickle) naming the flow, the run id and the inputs
    in flowkit's codec, well under a kilobyte."""
    cluster = cluster_factory()
    flow = next(iter(cluster.flows.flows.values()))
    run_id = cluster.flows.enqueue(flow, inputs={"answer": "x"}, run_id="run-json-1")
    with cluster.app.connection_for_read() as conn:
        queue = conn.SimpleQueue(cluster.queue)
        try:
            message = queue.get(timeout=30)
            assert message.content_type == "application/json"
            assert len(message.body) < 1024
            assert message.headers["task"] == "flowkit.start"
            args, kwargs, _embed = message.decode()
            assert args == []
            assert kwargs == {
                "flow": cluster.flow_name,
                "run_id": run_id,
                "inputs": {"answer": "x"},
            }
            message.ack()
        finally:
            queue.close()


def test_a_killed_prefork_child_has_its_run_finished(cluster_factory: Any) -> None:
    """Prefork pool: SIGKILL the child executing a run; the parent requeues the message
    (reject_on_worker_lost), another child takes the run over and finishes it."""
    cluster = cluster_factory(ttl=300.0, step_seconds=0.3)  # takeover must be immediate
    cluster.start(0, "--pool=prefork", "--concurrency=2")
    store = SQLAlchemyFlowPersistence(PG_URL)
    try:
        flow = next(iter(cluster.flows.flows.values()))
        ids = [cluster.flows.enqueue(flow) for _ in range(4)]
        victim: list[int] = []

        def a_child_holds_a_run() -> bool:
            for run in store.list_runs(flow_name=cluster.flow_name, status="running"):
                parts = (run.lease_owner or "").split(":")
                if len(parts) == 4 and int(parts[1]) != cluster.workers[0].pid:
                    victim.append(int(parts[1]))
                    return True
            return False

        wait_for("a child to execute a run", a_child_holds_a_run, 120, cluster)
        os.kill(victim[0], signal.SIGKILL)
        cluster.killed_pids.add(victim[0])
        wait_for(
            "every run to reach its interrupt",
            lambda: statuses(store, cluster.flow_name) == dict.fromkeys(ids, "interrupted"),
            120,
            cluster,
        )
        for run_id in ids:
            cluster.flows.enqueue_resume(run_id, "yes")
        wait_for(
            "runs to complete",
            lambda: statuses(store, cluster.flow_name) == dict.fromkeys(ids, "completed"),
            120,
            cluster,
        )
        check_exactly_once(store, ids, cluster.log_lines(), cluster.killed_pids)
        assert victim[0] in {int(line[3]) for line in cluster.log_lines()}
    finally:
        store.close()


def test_a_start_message_sent_twice_starts_the_run_once(cluster_factory: Any) -> None:
    """A start message for a run that exists (sent twice by the caller, or racing a
    duplicate on another worker) is a first delivery to the broker, so the worker kicks
    off without reading first: the kickoff's create refuses, and the run is continued
    from what is stored, never started again."""
    cluster = cluster_factory(step_seconds=0.05)
    cluster.start(0)
    cluster.start(1)
    store = SQLAlchemyFlowPersistence(PG_URL)
    try:
        flow = next(iter(cluster.flows.flows.values()))
        ids = [f"twice-{uuid.uuid4()}" for _ in range(4)]
        for run_id in ids:  # two messages each, back to back: the two workers race
            cluster.flows.enqueue(flow, run_id=run_id)
            cluster.flows.enqueue(flow, run_id=run_id)
        wait_for(
            "runs to be interrupted",
            lambda: statuses(store, cluster.flow_name) == dict.fromkeys(ids, "interrupted"),
            120,
            cluster,
        )
        late = ids[0]  # a third start message, for a run waiting at its interrupt
        cluster.flows.enqueue(flow, run_id=late)

        def handled(run_id: str, times: int) -> bool:
            done = [
                line
                for line in cluster.logs().splitlines()
                if "succeeded" in line and f"'run_id': '{run_id}'" in line
            ]
            return len(done) >= times

        wait_for(
            "every start message to be handled",
            lambda: handled(late, 3) and all(handled(i, 2) for i in ids),
            120,
            cluster,
        )
        assert statuses(store, cluster.flow_name) == dict.fromkeys(ids, "interrupted")
        for run_id in ids:
            cluster.flows.enqueue_resume(run_id, "yes")
        wait_for(
            "runs to complete",
            lambda: statuses(store, cluster.flow_name) == dict.fromkeys(ids, "completed"),
            120,
            cluster,
        )
        check_exactly_once(store, ids, cluster.log_lines(), cluster.killed_pids)
        begun = [line for line in cluster.log_lines() if line[1] == "begin"]
        assert sorted(line[0] for line in begun) == sorted(ids)  # each begun once
    finally:
        store.close()
