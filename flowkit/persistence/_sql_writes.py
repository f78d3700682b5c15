"""Compare-and-set writes of the SQL backends: save_checkpoint, begin_run and end_run.

Each write is built once for both flavours (``_save_op`` / ``_begin_op``): the state is
encoded before anything touches the database, the operation skips the big fields this
process already stored for the run, and a committed save is turned into the
:class:`Checkpoint` returned to the caller.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from flowkit.persistence import _rules, _sql_mysql, _sql_ops, _sql_postgres
from flowkit.persistence._encoding import (
    EncodedState,
    dumps,
    encode_state,
    inflate_state,
)
from flowkit.persistence._records import Checkpoint, RunRecord, utc_from_timestamp
from flowkit.persistence._sql_database import Database, LeaseRef
from flowkit.persistence._sql_ops import Op

T = TypeVar("T")

_BLOB_CACHE_RUNS = 1024


class CheckpointWrites:
    """Mixed into :class:`SQLAlchemyFlowPersistence`, which provides the database access."""

    if TYPE_CHECKING:

        def _database(self) -> Database: ...

        async def _acall(
            self,
            op: Op[T],
            *,
            write: bool,
            what: str,
            takes: LeaseRef | None = None,
            gives: LeaseRef | None = None,
            fast: Op[Any] | None = None,
        ) -> T: ...

    def _save_op(
        self,
        run_id: str,
        method_name: str,
        state: dict[str, Any],
        *,
        expected_seq: int | None,
        meta: dict[str, Any] | None,
        status: str,
        flow_name: str | None,
        lease_owner: str | None,
        release: bool = False,
    ) -> tuple[
        Op[_sql_ops.SavedCheckpoint],
        Op[_sql_ops.SavedCheckpoint | None] | None,
        Callable[[_sql_ops.SavedCheckpoint], Checkpoint],
    ]:
        _rules.check_status(status)
        encoded = encode_state(state)
        meta_text = dumps(meta or {}, what="meta")
        database = self._database()
        args = (run_id, method_name, encoded, meta_text)
        given: dict[str, Any] = {
            "status": status,
            "flow_name": flow_name,
            "expected_seq": expected_seq,
            "lease_owner": lease_owner,
            "at": _rules.now(),
            "stored_blobs": database.stored_blobs.get(run_id),
        }
        save = (
            _sql_mysql.save_checkpoint if database.dialect == "mysql" else _sql_ops.save_checkpoint
        )
        op = save(*args, **given, release=release)
        fast: Op[_sql_ops.SavedCheckpoint | None] | None = None
        if database.dialect == "sqlite" and not release:
            fast = _sql_ops.save_checkpoint_statement(*args, **given)
        elif database.dialect == "sqlite":
            fast = _sql_ops.end_run_statement(*args, **given)
        elif database.dialect == "postgresql":
            fast = _sql_postgres.save_statement(*args, **given, release=release)
        return op, fast, self._finisher(database, run_id, method_name, encoded, meta_text)

    @staticmethod
    def _finisher(
        database: Database,
        run_id: str,
        method_name: str,
        encoded: EncodedState,
        meta_text: str,
    ) -> Callable[[_sql_ops.SavedCheckpoint], Checkpoint]:
        """What turns a committed save into the Checkpoint returned to the caller."""

        def finish(saved: _sql_ops.SavedCheckpoint) -> Checkpoint:
            cache = database.stored_blobs
            cache[run_id] = (saved.seq, saved.blobs)
            cache.move_to_end(run_id)
            while len(cache) > _BLOB_CACHE_RUNS:
                cache.popitem(last=False)

            def parse() -> tuple[dict[str, Any], dict[str, Any]]:
                # From the JSON written (not the caller's objects, which may have
                # changed since): a fresh copy of exactly what is stored.
                state_copy = inflate_state(
                    json.loads(encoded.text), encoded.blobs.get, run_id=run_id, seq=saved.seq
                )
                return state_copy, json.loads(meta_text)

            # Parsed on first access: the engine reads only ``seq``.
            return Checkpoint.deferred(
                run_id, saved.seq, method_name, utc_from_timestamp(saved.created_at), parse
            )

        return finish

    async def asave_checkpoint(
        self,
        run_id: str,
        method_name: str,
        state: dict[str, Any],
        *,
        expected_seq: int | None,
        meta: dict[str, Any] | None = None,
        status: str = "running",
        flow_name: str | None = None,
        lease_owner: str | None = None,
    ) -> Checkpoint:
        op, fast, finish = self._save_op(
            run_id,
            method_name,
            state,
            expected_seq=expected_seq,
            meta=meta,
            status=status,
            flow_name=flow_name,
            lease_owner=lease_owner,
        )
        what = f"save_checkpoint({run_id!r})"
        return finish(await self._acall(op, write=True, what=what, fast=fast))

    def _begin_op(
        self,
        run_id: str,
        flow_name: str,
        *,
        owner: str | None,
        ttl: float | None,
        fingerprint: str | None,
        info: dict[str, Any] | None,
        method_name: str,
        state: dict[str, Any],
        meta: dict[str, Any] | None,
        expected_seq: int | None,
    ) -> tuple[
        Op[tuple[RunRecord, _sql_ops.SavedCheckpoint]],
        Op[tuple[RunRecord, _sql_ops.SavedCheckpoint] | None] | None,
        Callable[[tuple[RunRecord, _sql_ops.SavedCheckpoint]], tuple[RunRecord, Checkpoint]],
    ]:
        encoded = encode_state(state)
        meta_text = dumps(meta or {}, what="meta")
        info_text = dumps(info or {}, what="info")
        if owner is not None:
            _rules.lease_ttl(ttl)
        database = self._database()
        at = _rules.now()
        op = (_sql_mysql.begin_run if database.dialect == "mysql" else _sql_ops.begin_run)(
            database.dialect,
            run_id,
            flow_name,
            owner=owner,
            ttl=ttl,
            fingerprint=fingerprint,
            info_text=info_text,
            method_name=method_name,
            encoded=encoded,
            meta_text=meta_text,
            expected_seq=expected_seq,
            at=at,
            stored_blobs=database.stored_blobs.get(run_id),
        )
        fast = None
        one_statement = {
            "sqlite": _sql_ops.start_run_statement,
            "postgresql": _sql_postgres.begin_statement,
        }.get(database.dialect)
        if one_statement is not None:
            fast = one_statement(
                run_id,
                flow_name,
                owner=owner,
                expires=None if owner is None else at + _rules.lease_ttl(ttl),
                fingerprint=fingerprint,
                info_text=info_text,
                method_name=method_name,
                encoded=encoded,
                meta_text=meta_text,
                expected_seq=expected_seq,
                at=at,
            )

        finish_save = self._finisher(database, run_id, method_name, encoded, meta_text)

        def finish(
            result: tuple[RunRecord, _sql_ops.SavedCheckpoint],
        ) -> tuple[RunRecord, Checkpoint]:
            run, saved = result
            return run, finish_save(saved)

        return op, fast, finish

    async def abegin_run(
        self,
        run_id: str,
        flow_name: str,
        *,
        owner: str | None,
        ttl: float | None = None,
        fingerprint: str | None = None,
        info: dict[str, Any] | None = None,
        method_name: str,
        state: dict[str, Any],
        meta: dict[str, Any] | None = None,
        expected_seq: int | None,
    ) -> tuple[RunRecord, Checkpoint]:
        op, fast, finish = self._begin_op(
            run_id,
            flow_name,
            owner=owner,
            ttl=ttl,
            fingerprint=fingerprint,
            info=info,
            method_name=method_name,
            state=state,
            meta=meta,
            expected_seq=expected_seq,
        )
        lease = None if owner is None else (owner, run_id)
        what = f"begin_run({run_id!r})"
        return finish(await self._acall(op, write=True, what=what, takes=lease, fast=fast))

    async def aend_run(
        self,
        run_id: str,
        method_name: str,
        state: dict[str, Any],
        *,
        owner: str | None,
        expected_seq: int | None,
        meta: dict[str, Any] | None = None,
        status: str = "completed",
    ) -> Checkpoint:
        op, fast, finish = self._save_op(
            run_id,
            method_name,
            state,
            expected_seq=expected_seq,
            meta=meta,
            status=status,
            flow_name=None,
            lease_owner=owner,
            release=True,
        )
        lease = None if owner is None else (owner, run_id)
        what = f"end_run({run_id!r})"
        return finish(await self._acall(op, write=True, what=what, gives=lease, fast=fast))
