"""The pure scheduler: decisions without an event loop, and snapshot/restore."""

from __future__ import annotations

import json

import pytest

from flowkit import Flow, and_, listen, or_, router, start
from flowkit._scheduler import Scheduler
from flowkit.exceptions import CorruptCheckpointError


class Graphy(Flow):  # type: ignore[type-arg]
    @start()
    def a(self) -> None: ...

    @start()
    def b(self) -> None: ...

    @listen(and_(a, b))
    def join(self) -> None: ...

    @router(join)
    def route(self) -> None: ...

    @listen(or_("again", a))
    def either(self) -> None: ...


def test_scheduler_decides_without_an_event_loop() -> None:
    """Feeding completions returns the next calls; and_ waits for all parts."""
    s = Scheduler(Graphy._graph)
    first = s.begin()
    assert [t.method for t in first] == ["a", "b"]
    after_a = s.complete(first[0].id, "A")
    assert [t.method for t in after_a] == ["either"]
    assert after_a[0].payload == "A" and after_a[0].trigger == "a"
    after_b = s.complete(first[1].id, None)
    assert [t.method for t in after_b] == ["join"]


def test_snapshot_is_json_and_restores_the_same_decisions() -> None:
    """A snapshot survives JSON and the restored scheduler continues identically."""
    s = Scheduler(Graphy._graph)
    a, b = s.begin()
    s.complete(a.id, "A")
    data = json.loads(json.dumps(s.snapshot()))
    restored = Scheduler.restore(Graphy._graph, data)
    assert sorted(t.method for t in restored.pending.values()) == ["b", "either"]
    nxt = restored.complete(b.id, None)
    assert [t.method for t in nxt] == ["join"]
    router_task = restored.complete(nxt[0].id, None)
    assert [t.method for t in router_task] == ["route"]
    # router label "again" re-arms the or_ listener that already fired on "a"
    again = restored.complete(router_task[0].id, "again")
    assert [t.method for t in again] == ["either"]


def test_corrupt_snapshot_names_run_and_seq() -> None:
    """A snapshot that cannot be read raises CorruptCheckpointError with run id and seq."""
    with pytest.raises(CorruptCheckpointError, match=r"run 'r1' checkpoint 4"):
        Scheduler.restore(
            Graphy._graph, {"pending": [{"id": 1, "method": "gone"}]}, run_id="r1", seq=4
        )


def test_a_position_stored_before_waves_still_restores() -> None:
    """Snapshots written before or_ waves (or_fired as a list, tasks without a wave)
    restore: the fired or_ stays fired until a later label re-arms it."""
    old = {
        "pending": [{"id": 2, "method": "b", "trigger": None, "payload": None}],
        "calls": {"a": 1, "b": 1, "either": 1},
        "and": {"join": {"": [0]}},
        "or_fired": ["either"],
        "next_id": 4,
    }
    restored = Scheduler.restore(Graphy._graph, old)
    join = restored.complete(2, None)
    assert [t.method for t in join] == ["join"]
    route = restored.complete(join[0].id, None)
    again = restored.complete(route[0].id, "again")
    assert [t.method for t in again] == ["either"]
