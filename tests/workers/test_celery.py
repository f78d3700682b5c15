"""flowkit.celery with real ``celery worker`` processes, RabbitMQ and PostgreSQL."""

from __future__ import annotations

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
    finally:
        store.close()
