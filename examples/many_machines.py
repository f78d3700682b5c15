"""Flows on Celery workers that share one PostgreSQL store (docs/many-machines.md).

Needs RabbitMQ on 127.0.0.1:5672 (guest/guest) and PostgreSQL ($FLOWKIT_DB_URL, default
postgresql+asyncpg://postgres@127.0.0.1:5432/postgres). Then:

    python examples/many_machines.py

starts two `celery worker` processes running this module, enqueues four runs, answers
each run's interrupt as it appears, prints the results and stops the workers. On real
machines you would start the workers with `celery -A many_machines worker` instead.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from celery import Celery

from flowkit import Flow, FlowState, listen, start
from flowkit.celery import CeleryFlows
from flowkit.persistence import SQLAlchemyFlowPersistence

DB_URL = os.environ.get("FLOWKIT_DB_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
QUEUE = os.environ.get("EXAMPLE_QUEUE", "flowkit-example")

app = Celery("many_machines", broker="amqp://guest:guest@127.0.0.1:5672//")
app.conf.update(
    task_default_queue=QUEUE,
    worker_prefetch_multiplier=1,
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
)
flows = CeleryFlows(app, persistence=lambda: SQLAlchemyFlowPersistence(DB_URL))


class Order(FlowState):
    item: str = ""
    worker_pids: list[int] = []
    approved: bool = False


@flows.register
class OrderFlow(Flow[Order], name="example-order"):
    @start()
    def reserve(self) -> None:
        self.state.worker_pids.append(os.getpid())

    @listen(reserve)
    def approve(self) -> None:
        self.state.approved = self.interrupt(f"ship {self.state.item}?") == "yes"
        self.state.worker_pids.append(os.getpid())

    @listen(approve)
    def ship(self) -> str:
        return f"{self.state.item}: {'shipped' if self.state.approved else 'cancelled'}"


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def main() -> int:
    if not (_reachable(5672) and _reachable(5432)):
        print("start RabbitMQ (5672) and PostgreSQL (5432) first; see docs/many-machines.md")
        return 1
    here = Path(__file__).resolve().parent
    queue = f"flowkit-example-{uuid.uuid4().hex[:6]}"  # a queue of our own for this demo
    path = os.pathsep.join(p for p in (str(here), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, EXAMPLE_QUEUE=queue, PYTHONPATH=path)
    app.conf.task_default_queue = queue
    command = [sys.executable, "-m", "celery", "-A", "many_machines", "worker"]
    # threads, not solo: on RabbitMQ a solo worker at times idles up to 10 s between tasks
    options = ["--pool=threads", "--concurrency=2", "--without-gossip", "--without-mingle"]
    options.append("--loglevel=WARNING")
    log = open("example-workers.log", "ab")  # noqa: SIM115 (kept open for the workers)
    workers = [
        subprocess.Popen(
            [*command, *options, "-n", f"{queue}-{i}@%h"],  # names no other worker holds
            cwd=here,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    store = SQLAlchemyFlowPersistence(DB_URL)
    try:
        ids = [flows.enqueue(OrderFlow, inputs={"item": item}) for item in ("tea", "cups", "pot")]
        print(f"enqueued {len(ids)} runs")
        answered: set[str] = set()
        deadline = time.monotonic() + 120
        while True:
            runs = {i: store.get_run(i) for i in ids}
            if all(r is not None and r.status == "completed" for r in runs.values()):
                break
            if time.monotonic() > deadline:
                print("runs did not complete in 120 s; see example-workers.log")
                return 1
            for run_id, run in runs.items():
                if run is not None and run.status == "interrupted" and run_id not in answered:
                    flows.enqueue_resume(run_id, "yes")  # a human said yes
                    answered.add(run_id)
            time.sleep(0.2)
        for run_id in ids:
            state = store.load_state(run_id)
            assert state is not None
            print(f"{state['item']}: approved={state['approved']} on pids {state['worker_pids']}")
        return 0
    finally:
        store.close()
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
        log.close()
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue)


if __name__ == "__main__":
    sys.exit(main())
