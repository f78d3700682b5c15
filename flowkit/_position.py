"""One execution of a flow (:class:`Run`), and what its checkpoints record besides the
state: the execution position, typed.

A :class:`Run` is built for each kickoff or resume by the preparation in
:mod:`flowkit._execution` and handed to the :class:`~flowkit._runner.Runner`, which owns
it until it returns: the state, the scheduler, the journal (where checkpoints go) and the
answers to interrupts all live there, so nothing patches the flow object from outside
while a run executes. Its commit writes the state with a :class:`Position`.

The position is stored in a checkpoint's ``meta`` (a JSON object), under keys written
since the first release, so every stored run stays readable:

* ``position``: the scheduler's snapshot (pending calls with the values they receive,
  ``and_`` progress, fired ``or_`` listeners, call counts, next call id), the ids of
  pending calls whose input could not be stored (``lost_payloads``), the last finished
  method and its output (``last``), the answers given to interrupts of pending calls
  (``answers``), and the failed attempts of pending calls that are being retried
  (``retries``: call id -> method, count, last error; written only when there are some);
* ``interrupt``: the interrupt the run is waiting on (method, call id, payload);
* ``retry``: only on the checkpoint written for a failed attempt: which call failed,
  its attempt number, the wait before the next one and the error (with traceback);
* ``state_version``: the state model's version (written by the journal).

:class:`Position` is the engine's decoded, validated form (``to_json`` / ``from_json``);
:class:`PositionSummary` is a lenient read of the stored form for display (the CLI),
which never decodes or decrypts anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._codec_decode import decode
from ._codec_encode import encode
from .exceptions import CorruptCheckpointError, UnserializableStateError

if TYPE_CHECKING:
    from ._flow import Flow
    from ._interrupt import CallContext
    from ._journal import Journal
    from ._scheduler import Scheduler, Task
    from .persistence import FlowPersistence

__all__ = ["FailedAttempts", "PendingInterrupt", "Position", "PositionSummary", "Run", "RunInfo"]


@dataclass
class PendingInterrupt:
    """The interrupt a paused run waits on: ``resume(run_id, value)`` answers it."""

    method: str
    task_id: int
    payload: Any

    def to_json(self) -> dict[str, Any]:
        # the payload is shown to whoever answers: stored without the secret cipher
        return {
            "method": self.method,
            "task_id": self.task_id,
            "payload": encode(self.payload, path="interrupt payload", cipher=None),
        }

    @classmethod
    def from_json(cls, data: Any, *, run_id: str, seq: int | None) -> PendingInterrupt:
        try:
            return cls(
                str(data["method"]),
                int(data["task_id"]),
                decode(data.get("payload"), cipher=None, run_id=run_id, seq=seq),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _corrupt("interrupt", exc, run_id, seq) from exc


@dataclass
class FailedAttempts:
    """The failed attempts so far of one pending method call under a retry policy."""

    method: str
    #: how many attempts failed (the next one is attempt ``count + 1``)
    count: int
    #: the last failure: ``{"method", "type", "message", "attempt", "attempts"}``
    error: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "count": self.count, "error": self.error}

    @classmethod
    def from_json(cls, data: Any) -> FailedAttempts:
        error = data.get("error")
        count = int(data["count"])
        if count < 0:
            raise ValueError(f"a negative count of failed attempts ({count})")
        return cls(str(data["method"]), count, error if isinstance(error, dict) else {})


@dataclass
class Position:
    """Where a run stands after a checkpoint, with Python values (decoded)."""

    #: :meth:`Scheduler.snapshot` output; pending payloads are Python values
    scheduler: dict[str, Any]
    last: tuple[str, Any] | None = None
    answers: dict[int, list[Any]] = field(default_factory=dict)
    #: pending calls whose input could not be stored (they cannot take it on resume)
    lost_payloads: frozenset[int] = frozenset()
    interrupt: PendingInterrupt | None = None
    #: failed attempts of pending calls, by call id (the retry counters)
    retries: dict[int, FailedAttempts] = field(default_factory=dict)
    #: on the checkpoint written for a failed attempt: ``{"method", "task_id",
    #: "attempt", "attempts", "delay", "error"}`` (the error with its traceback)
    retry: dict[str, Any] | None = None

    def to_json(self, cipher: Any) -> dict[str, Any]:
        """The ``meta`` entries this position is stored as (``position``, ``interrupt``).

        A pending payload or last output that cannot be stored is recorded as lost
        rather than failing the checkpoint; the state itself must be storable."""
        snap = dict(self.scheduler)
        pending = []
        lost = set(self.lost_payloads)
        for item in snap["pending"]:
            item = dict(item)
            try:
                item["payload"] = encode(
                    item["payload"], path=f"payload of {item['method']}", cipher=cipher
                )
            except UnserializableStateError:
                item["payload"] = None
                lost.add(item["id"])
            pending.append(item)
        snap["pending"] = pending
        if snap.get("trigger_payload") is not None:
            snap["trigger_payload"] = encode(
                snap["trigger_payload"], path="inputs.crewai_trigger_payload", cipher=cipher
            )
        snap["lost_payloads"] = sorted(lost)
        if self.last is not None:
            method, output = self.last
            try:
                snap["last"] = {
                    "method": method,
                    "output": encode(output, path="output", cipher=cipher),
                }
            except UnserializableStateError:
                snap["last"] = {"method": method, "output": None, "lost": True}
        snap["answers"] = {
            str(k): encode(v, path="answer", cipher=cipher) for k, v in self.answers.items()
        }
        if self.retries:
            snap["retries"] = {str(k): v.to_json() for k, v in sorted(self.retries.items())}
        meta: dict[str, Any] = {"position": snap}
        if self.interrupt is not None:
            meta["interrupt"] = self.interrupt.to_json()
        if self.retry is not None:
            meta["retry"] = self.retry
        return meta

    @classmethod
    def from_json(
        cls, meta: dict[str, Any], cipher: Any, *, run_id: str, seq: int | None
    ) -> Position | None:
        """The position stored in checkpoint ``meta``; None for a checkpoint written by
        plain ``save_state`` (no position). Malformed data is a CorruptCheckpointError."""
        data = meta.get("position")
        if data is None:
            return None
        try:
            snap = dict(data)
            lost = frozenset(int(i) for i in snap.pop("lost_payloads", ()))
            pending = []
            for item in snap["pending"]:
                item = dict(item)
                if int(item["id"]) in lost:
                    item["payload"] = None
                else:
                    item["payload"] = decode(
                        item.get("payload"), cipher=cipher, run_id=run_id, seq=seq
                    )
                pending.append(item)
            snap["pending"] = pending
            if snap.get("trigger_payload") is not None:
                snap["trigger_payload"] = decode(
                    snap["trigger_payload"], cipher=cipher, run_id=run_id, seq=seq
                )
            raw_last = snap.pop("last", None)
            last = None
            if isinstance(raw_last, dict):
                last = (
                    str(raw_last["method"]),
                    decode(raw_last.get("output"), cipher=cipher, run_id=run_id, seq=seq),
                )
            answers = {
                int(k): list(decode(v, cipher=cipher, run_id=run_id, seq=seq))
                for k, v in snap.pop("answers", {}).items()
            }
            retries = {
                int(k): FailedAttempts.from_json(v) for k, v in snap.pop("retries", {}).items()
            }
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _corrupt("execution position", exc, run_id, seq) from exc
        raw_interrupt = meta.get("interrupt")
        interrupt = (
            PendingInterrupt.from_json(raw_interrupt, run_id=run_id, seq=seq)
            if raw_interrupt is not None
            else None
        )
        return cls(snap, last, answers, lost, interrupt, retries)


@dataclass
class Run:
    """A run being executed: its state, position and where it is committed."""

    flow: Flow[Any]
    state: Any
    scheduler: Scheduler
    journal: Journal
    backend: FlowPersistence | None
    cipher: Any
    #: the calls to start with (kickoff: the starts; resume: the stored pending calls)
    tasks: list[Task]
    resumed: bool = False
    #: the kickoff's inputs as the FlowStarted event shows them (None: none given)
    inputs: dict[str, Any] | None = None
    #: interrupt answers for pending calls, by call id
    answers: dict[int, list[Any]] = field(default_factory=dict)
    #: the last method that finished and its output (what kickoff returns)
    last: tuple[str, Any] | None = None
    #: the journal's last committed state is ``state`` (no method finished since
    #: without a checkpoint): a method that ran alone can be rolled back by reading it
    committed_is_current: bool = True
    #: failed attempts of pending calls being retried, by call id (stored with the
    #: position: a crash between attempts does not reset the count)
    retries: dict[int, FailedAttempts] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.flow._adapter.state_id(self.state)

    def position(
        self, interrupt: PendingInterrupt | None = None, retry: dict[str, Any] | None = None
    ) -> Position:
        return Position(
            self.scheduler.snapshot(),
            self.last,
            self.answers,
            interrupt=interrupt,
            retries=dict(self.retries),
            retry=retry,
        )

    async def commit(
        self,
        method: str,
        status: str,
        interrupt: PendingInterrupt | None = None,
        retry: dict[str, Any] | None = None,
    ) -> None:
        """Write a checkpoint of the current state and position after ``method`` (or,
        with ``retry``, after a failed attempt of it)."""
        await self.journal.checkpoint(method, self.state, self.position(interrupt, retry), status)
        self.committed_is_current = True

    def rollback(self, ctx: CallContext) -> None:
        """Drop the changes of a method that did not finish. An isolated method's view
        is simply never merged; a method that ran alone changed the live state, which
        goes back to the state it started with."""
        if ctx.isolated:
            return
        if ctx.base is not None:
            self.state = ctx.base
        elif self.committed_is_current:
            restored = self.journal.committed_state()
            if restored is not None:
                self.state = restored


@dataclass
class PositionSummary:
    """A lenient, display-only read of a stored position: stored forms, nothing decoded,
    anything malformed left out rather than raised."""

    #: ``{"id", "method", "trigger"}`` of each pending call
    pending: list[dict[str, Any]]
    calls: dict[str, Any]
    last_method: str | None
    #: the last output in its stored form
    last_output: Any
    #: ``{"method", "task_id", "payload"}`` in stored form, when the run waits on one
    interrupt: dict[str, Any] | None
    #: call id (as stored: a string) -> ``{"method", "count", "error"}`` of pending calls
    #: with failed attempts
    retries: dict[str, Any] = field(default_factory=dict)
    #: the failed attempt this checkpoint was written for (see :class:`Position`)
    retry: dict[str, Any] | None = None

    @classmethod
    def read(cls, meta: dict[str, Any]) -> PositionSummary | None:
        """None when the checkpoint has no position (written by plain ``save_state``)."""
        data = meta.get("position")
        if not isinstance(data, dict):
            return None
        raw_pending = data.get("pending")
        pending = [
            {"id": item.get("id"), "method": item.get("method"), "trigger": item.get("trigger")}
            for item in (raw_pending if isinstance(raw_pending, list) else [])
            if isinstance(item, dict)
        ]
        calls = data.get("calls")
        last = data.get("last")
        interrupt = meta.get("interrupt")
        retries = data.get("retries")
        retry = meta.get("retry")
        return cls(
            pending,
            calls if isinstance(calls, dict) else {},
            last.get("method") if isinstance(last, dict) else None,
            last.get("output") if isinstance(last, dict) else None,
            interrupt if isinstance(interrupt, dict) else None,
            {str(k): v for k, v in retries.items() if isinstance(v, dict)}
            if isinstance(retries, dict)
            else {},
            retry if isinstance(retry, dict) else None,
        )


@dataclass
class RunInfo:
    """The run's stored ``info`` object, typed: the flow's wiring when it last ran
    (``definition``, for "what changed" on resume) and the error that failed it."""

    definition: dict[str, Any] | None = None
    #: the exception that failed the run: ``{"method", "type", "message", "attempt",
    #: "attempts", "traceback"}`` (the last three since retries; older runs lack them)
    error: dict[str, Any] | None = None
    #: keys this version does not know, kept as stored
    other: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = dict(self.other)
        if self.definition is not None:
            data["definition"] = self.definition
        if self.error is not None:
            data["error"] = self.error
        return data

    @classmethod
    def from_json(cls, data: Any) -> RunInfo:
        if not isinstance(data, dict):
            return cls()
        other = {k: v for k, v in data.items() if k not in ("definition", "error")}
        definition = data.get("definition")
        error = data.get("error")
        return cls(
            definition if isinstance(definition, dict) else None,
            error if isinstance(error, dict) else None,
            other,
        )


def _corrupt(what: str, exc: Exception, run_id: str, seq: int | None) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        f"the {what} stored in run {run_id!r} checkpoint {seq} cannot be read ({exc!r}); "
        "start a new run or fork from an earlier checkpoint.",
        run_id=run_id,
        seq=seq,
    )
