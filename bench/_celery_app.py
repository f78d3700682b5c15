"""The Celery app of ``bench/celery_scaling.py``'s workers (not a bench script itself):
a flow of 10 persisted steps on PostgreSQL, queue and flow name from the environment.

With ``FLOWKIT_BENCH_TRACE=DIR`` (``celery_scaling.py --trace``) each worker process
writes one JSON line per task to ``DIR/<pid>.jsonl``: when the message was received,
when the task started and ended, the process's CPU seconds over the task, and every
statement it sent to PostgreSQL (start, duration, first words; each is autocommitted, so
the duration includes the commit), from asyncpg's query loggers, added to each connection
SQLAlchemy's pool opens (public pool event and ``driver_connection``).
``celery_scaling.py`` reads them to say where a run's time goes.

With ``FLOWKIT_BENCH_READY=DIR`` each worker process creates ``DIR/<pid>`` when Celery says
it is ready (the ``worker_ready`` signal), so the driver need not run the workers at INFO
log level to read "ready." in their logs. ``FLOWKIT_BENCH_CELERY_CONF`` (a JSON object)
is applied to the app's configuration on top of the bench's, to try Celery settings.
"""

from __future__ import annotations

import faulthandler
import json
import os
import resource
import threading
import time
from pathlib import Path
from typing import Any

from celery import Celery, signals

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
    app.conf.update(json.loads(os.environ.get("FLOWKIT_BENCH_CELERY_CONF") or "{}"))
    flows = CeleryFlows(app, persistence=lambda: SQLAlchemyFlowPersistence(PG_URL))
    flows.register(make_flow(flow_name))
    return app, flows


class _Trace:
    """Per-task timings of this worker process (see the module docstring)."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, f"{os.getpid()}.jsonl")
        self.received: dict[str, float] = {}
        self.task: dict[str, Any] | None = None
        self.sql: list[list[Any]] = []
        self.last_end = 0.0

    def install(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.pool import Pool

        signals.task_received.connect(self.on_received, weak=False)
        signals.task_prerun.connect(self.on_prerun, weak=False)
        signals.task_postrun.connect(self.on_postrun, weak=False)
        event.listen(Pool, "connect", self.on_connect)
        threading.Thread(target=self.watch, daemon=True).start()

    def watch(self) -> None:
        """Dump every thread's stack when the worker has been idle between two tasks for
        over a second (once per idle spell): what a stall waits on."""
        dumped = 0.0
        while True:
            time.sleep(0.25)
            idle_since = self.last_end
            idle = self.task is None and idle_since and time.time() - idle_since > 1.0
            if idle and dumped != idle_since:
                dumped = idle_since
                with open(self.path + ".stacks", "a") as out:
                    out.write(f"--- idle since {idle_since:.3f}, now {time.time():.3f}\n")
                    faulthandler.dump_traceback(out, all_threads=True)

    def on_received(self, request: Any = None, **_: Any) -> None:
        self.received[request.id] = time.time()

    def on_prerun(self, task_id: str = "", **_: Any) -> None:
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        self.task = {
            "id": task_id,
            "received": self.received.pop(task_id, None),
            "start": time.time(),
            "cpu0": cpu.ru_utime + cpu.ru_stime,
        }
        self.sql = []

    def on_postrun(self, task_id: str = "", **_: Any) -> None:
        task, self.task = self.task, None
        if task is None:
            return
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        task["end"] = self.last_end = time.time()
        task["cpu"] = cpu.ru_utime + cpu.ru_stime - task.pop("cpu0")
        task["sql"] = self.sql
        with open(self.path, "a") as out:
            out.write(json.dumps(task) + "\n")

    def on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(self.on_query)

    def on_query(self, record: Any) -> None:
        # Called on the connection's loop soon after the statement ended.
        if self.task is not None:
            end = time.time()
            what = " ".join(record.query.split()[:3])
            self.sql.append([what, end - record.elapsed, record.elapsed])


def _say_ready(**_: Any) -> None:
    (Path(os.environ["FLOWKIT_BENCH_READY"]) / str(os.getpid())).touch()


if os.environ.get("FLOWKIT_BENCH_READY"):
    signals.worker_ready.connect(_say_ready, weak=False)

if os.environ.get("FLOWKIT_BENCH_TRACE"):
    _Trace(os.environ["FLOWKIT_BENCH_TRACE"]).install()

if os.environ.get("FLOWKIT_BENCH_QUEUE"):
    app, flows = make_app(os.environ["FLOWKIT_BENCH_QUEUE"], os.environ["FLOWKIT_BENCH_FLOW"])
