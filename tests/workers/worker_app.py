"""The Celery app the test workers run (``celery -A worker_app worker``) and the tests
enqueue with. Configured from the environment the tests set: queue, flow name, store."""

from __future__ import annotations

import os

from celery import Celery
from worker_flows import make_flow

from flowkit.celery import CeleryFlows
from flowkit.persistence import SQLAlchemyFlowPersistence

BROKER_URL = os.environ.get("FLOWKIT_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
PG_URL = os.environ.get(
    "FLOWKIT_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def make_app(queue: str, flow_name: str, ttl: float) -> tuple[Celery, CeleryFlows]:
    app = Celery("flowkit-tests", broker=BROKER_URL)
    app.conf.update(
        task_default_queue=queue,
        worker_prefetch_multiplier=1,
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    flows = CeleryFlows(
        app,
        persistence=lambda: SQLAlchemyFlowPersistence(PG_URL),
        retry_delay=0.2,
        flow_options={"lease_ttl": ttl},
    )
    flows.register(make_flow(flow_name))
    return app, flows


if os.environ.get("FLOWKIT_TEST_QUEUE"):
    app, flows = make_app(
        os.environ["FLOWKIT_TEST_QUEUE"],
        os.environ["FLOWKIT_TEST_FLOW_NAME"],
        float(os.environ.get("FLOWKIT_TEST_TTL", "2")),
    )
    if os.environ.get("FLOWKIT_TEST_RECOVER_EVERY"):
        flows.schedule_recovery(every=float(os.environ["FLOWKIT_TEST_RECOVER_EVERY"]))
