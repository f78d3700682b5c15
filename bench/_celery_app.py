"""The Celery app of ``bench/celery_scaling.py``'s workers (not a bench script itself):
a flow of 10 persisted steps on PostgreSQL, queue and flow name from the environment."""

from __future__ import annotations

import os

from celery import Celery

from flowkit import Flow, FlowState, listen, start
from flowkit.celery import CeleryFlows
from flowkit.persistence import SQLAlchemyFlowPersistence

BROKER_URL = os.environ.get("FLOWKIT_BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
PG_URL = os.environ.get(
    "FLOWKIT_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


class Counter(FlowState):
    counter: int = 0


def make_flow(name: str) -> type[Flow[Counter]]:
    class Ten(Flow[Counter], name=name):
        @start()
        def s1(self) -> None:
            self.state.counter += 1

        @listen(s1)
        def s2(self) -> None:
            self.state.counter += 1

        @listen(s2)
        def s3(self) -> None:
            self.state.counter += 1

        @listen(s3)
        def s4(self) -> None:
            self.state.counter += 1

        @listen(s4)
        def s5(self) -> None:
            self.state.counter += 1

        @listen(s5)
        def s6(self) -> None:
            self.state.counter += 1

        @listen(s6)
        def s7(self) -> None:
            self.state.counter += 1

        @listen(s7)
        def s8(self) -> None:
            self.state.counter += 1

        @listen(s8)
        def s9(self) -> None:
            self.state.counter += 1

        @listen(s9)
        def s10(self) -> int:
            self.state.counter += 1
            return self.state.counter

    return Ten


def make_app(queue: str, flow_name: str) -> tuple[Celery, CeleryFlows]:
    app = Celery("flowkit-bench", broker=BROKER_URL)
    app.conf.update(
        task_default_queue=queue,
        worker_prefetch_multiplier=1,
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
    )
    flows = CeleryFlows(app, persistence=lambda: SQLAlchemyFlowPersistence(PG_URL))
    flows.register(make_flow(flow_name))
    return app, flows


if os.environ.get("FLOWKIT_BENCH_QUEUE"):
    app, flows = make_app(os.environ["FLOWKIT_BENCH_QUEUE"], os.environ["FLOWKIT_BENCH_FLOW"])
