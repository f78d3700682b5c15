"""The MariaDB/MySQL versions of the operations whose PostgreSQL/SQLite SQL they lack.

MariaDB and MySQL have no ``ON CONFLICT``, and no ``RETURNING`` on ``UPDATE`` (MySQL none
at all). So each write here first locks the run's row -- ``SELECT ... FOR UPDATE``, or
an ``INSERT ... ON DUPLICATE KEY UPDATE`` that creates the row if it is missing and locks
it either way -- reads it, decides with the same rules as every other backend
(``_rules``), and then writes. The row lock is held to the commit, so the decision
cannot go stale: a claim, a lease takeover and a fenced save of one run are serialised
by the database, and a save is refused unless its writer holds the lease and its
``expected_seq`` is the stored ``last_seq`` at that moment. Every operation locks the run
row before any other row of the run, so two operations never wait for each other in
opposite orders.

A row created here carries ``last_seq = -1`` (a value no run has) until the same
transaction sets its real one: that is how an operation tells the row it just created
from one that was there, whatever the driver reports as affected rows. Nobody else sees
the marker (the row is uncommitted until then).

Reads (``get_run``, ``list_runs``, ``history``, ``load_checkpoint``) are the shared ones
of ``_sql_ops``. The engine runs at READ COMMITTED (see ``_sql_database``), as on
PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from flowkit.exceptions import InvalidArgumentError
from flowkit.persistence import _rules, _schema
from flowkit.persistence._records import Checkpoint, RunRecord, utc_from_timestamp
from flowkit.persistence._rows import run_from_row
from flowkit.persistence._sql_ops import (
    Append,
    NewRunRow,
    Op,
    Row,
    RunChange,
    SavedCheckpoint,
    Start,
    Stmt,
    _append,
    begun,
    holder_is_dead,
    load_checkpoint,
)

_NEW = -1  # last_seq of a row created by the running transaction

LOCK_RUN = f"SELECT {_schema.RUN_COLUMNS} FROM flowkit_runs WHERE run_id = :run_id FOR UPDATE"
# Creates the row (marked new) or, if it exists, locks it without changing it.
ENSURE_RUN = (
    f"INSERT INTO flowkit_runs ({_schema.RUN_COLUMNS}) VALUES (:run_id, :flow_name, "
    f"'running', :now, :now, {_NEW}, :parent_run_id, :parent_seq, :fingerprint, :info, "
    ":owner, :expires) ON DUPLICATE KEY UPDATE run_id = run_id"
)
SET_LAST_SEQ = "UPDATE flowkit_runs SET last_seq = :seq WHERE run_id = :run_id"
APPEND_SEQ = (
    "UPDATE flowkit_runs SET last_seq = :seq, updated_at = :now, status = :status, "
    "flow_name = COALESCE(flow_name, :flow_name) WHERE run_id = :run_id"
)
SET_LEASE = (
    "UPDATE flowkit_runs SET lease_owner = :owner, lease_expires_at = :expires "
    "WHERE run_id = :run_id"
)
INSERT_BLOB = (
    "INSERT INTO flowkit_blobs (run_id, hash, data) VALUES (:run_id, :hash, :data) "
    "ON DUPLICATE KEY UPDATE hash = hash"
)


def _ensure_run(
    run_id: str,
    flow_name: str | None,
    *,
    at: float,
    parent_run_id: str | None = None,
    parent_seq: int | None = None,
    fingerprint: str | None = None,
    info_text: str = "{}",
    owner: str | None = None,
    expires: float | None = None,
) -> Op[tuple[Row, bool]]:
    """Create the run row if missing (with these fields) and lock it; return the row and
    whether this transaction created it (its ``last_seq`` is then still the marker)."""
    for what, value in (("run id", run_id), ("flow name", flow_name), ("parent", parent_run_id)):
        if value is not None and len(value) > _schema.MYSQL_KEY_LENGTH:
            raise InvalidArgumentError(
                f"The {what} {value[:40]!r}... is {len(value)} characters long; MariaDB/MySQL "
                f"keys hold at most {_schema.MYSQL_KEY_LENGTH}. Use a shorter one; nothing "
                "was written."
            )
    yield Stmt(
        ENSURE_RUN,
        {
            "run_id": run_id,
            "flow_name": flow_name,
            "now": at,
            "parent_run_id": parent_run_id,
            "parent_seq": parent_seq,
            "fingerprint": fingerprint,
            "info": info_text,
            "owner": owner,
            "expires": expires,
        },
    )
    rows = yield Stmt(LOCK_RUN, {"run_id": run_id})
    row = rows[0]
    return row, row[5] == _NEW


def _lock_run(run_id: str) -> Op[RunRecord | None]:
    rows = yield Stmt(LOCK_RUN, {"run_id": run_id})
    return run_from_row(rows[0]) if rows else None


def _new_run_record(row: Row, last_seq: int) -> RunRecord:
    return run_from_row((*row[:5], last_seq, *row[6:]))


# -- checkpoints ---------------------------------------------------------------------


def save_checkpoint(w: Append) -> Op[SavedCheckpoint]:
    """``_sql_ops.save_checkpoint`` for MariaDB/MySQL: lock (or create) the run row, check
    the compare-and-set and the lease under the lock, then append."""
    run_id, expected_seq, at = w.run_id, w.expected_seq, w.at
    if expected_seq is None or expected_seq == 0:
        row, created = yield from _ensure_run(run_id, w.flow_name, at=at)
        run = None if created else run_from_row(row)
    else:  # a missing run is a conflict, never created
        run = yield from _lock_run(run_id)
    if run is not None:
        _rules.check_save(run_id, run, expected_seq=expected_seq, lease_owner=w.lease_owner, at=at)
    elif expected_seq not in (None, 0):
        raise _rules.concurrent_update(run_id, expected_seq, 0)
    seq = 1 if run is None else run.last_seq + 1
    yield Stmt(
        APPEND_SEQ,
        {"run_id": run_id, "seq": seq, "now": at, "status": w.status, "flow_name": w.flow_name},
    )
    refs = yield from _append(w, seq, INSERT_BLOB)
    if w.release and w.lease_owner is not None:
        yield from release_lease(run_id, w.lease_owner)
    return SavedCheckpoint(seq, at, refs)


def begin_run(dialect: str, start: Start) -> Op[tuple[RunRecord, SavedCheckpoint]]:
    """Create the run if missing (already leased), take its lease, append the first
    checkpoint; the run row is locked from the first statement on."""
    run_id, expected_seq, at = start.run_id, start.expected_seq, start.at
    if expected_seq is None or expected_seq == 0:
        row, created = yield from _ensure_run(
            run_id,
            start.flow_name,
            at=at,
            fingerprint=start.fingerprint,
            info_text=start.info_text,
            owner=start.owner,
            expires=start.expires,
        )
        if created:
            yield Stmt(SET_LAST_SEQ, {"run_id": run_id, "seq": 1})
            refs = yield from _append(
                start.first(expected_seq=0, stored_blobs=None), 1, INSERT_BLOB
            )
            return _new_run_record(row, 1), SavedCheckpoint(1, at, refs)
        run = run_from_row(row)
    else:
        found = yield from _lock_run(run_id)
        if found is None:
            raise _rules.concurrent_update(run_id, expected_seq or 0, 0)
        run = found
    _rules.check_flow(run, start.flow_name)
    if start.owner is not None:
        run = yield from acquire_lease(
            dialect, run_id, start.owner, _rules.lease_ttl(start.ttl), at, operation="begin_run"
        )
    saved = yield from save_checkpoint(
        start.first(expected_seq=expected_seq, stored_blobs=start.stored_blobs)
    )
    return begun(run, saved, start), saved


# -- runs ----------------------------------------------------------------------------


def create_run(new: NewRunRow) -> Op[RunRecord]:
    row, created = yield from _ensure_run(
        new.run_id,
        new.flow_name,
        at=new.at,
        parent_run_id=new.parent_run_id,
        parent_seq=new.parent_seq,
        fingerprint=new.fingerprint,
        info_text=new.info_text,
    )
    if created:
        yield Stmt(SET_LAST_SEQ, {"run_id": new.run_id, "seq": 0})
        return _new_run_record(row, 0)
    if not new.exist_ok:
        raise _rules.run_exists(new.run_id)
    return run_from_row(row)


def update_run(change: RunChange) -> Op[RunRecord]:
    run_id, lease_owner, at = change.run_id, change.lease_owner, change.at
    status, fingerprint, info_text = change.status, change.fingerprint, change.info_text
    run = yield from _lock_run(run_id)
    if run is None:
        raise _rules.run_not_found(run_id, "update_run")
    if lease_owner is not None:  # fenced: decided under the row lock, held to the commit
        _rules.check_owner(run_id, run, lease_owner, at)
    sql = _schema.update_run_sql(
        status=status is not None, fingerprint=fingerprint is not None, info=info_text is not None
    ).partition(" RETURNING ")[0]
    params: dict[str, Any] = {"run_id": run_id, "now": at}
    for name, value in (("status", status), ("fingerprint", fingerprint), ("info", info_text)):
        if value is not None:
            params[name] = value
    yield Stmt(sql, params)
    rows = yield Stmt(_schema.SELECT_RUN, {"run_id": run_id})
    return run_from_row(rows[0])


def delete_run(run_id: str) -> Op[bool]:
    run = yield Stmt(LOCK_RUN, {"run_id": run_id})
    yield Stmt(_schema.DELETE_RUN_BLOBS, {"run_id": run_id})
    yield Stmt(_schema.DELETE_RUN_CHECKPOINTS, {"run_id": run_id})
    yield Stmt("DELETE FROM flowkit_runs WHERE run_id = :run_id", {"run_id": run_id})
    return bool(run)


def prune(dialect: str, run_id: str, keep_last: int) -> Op[int]:
    run = yield from _lock_run(run_id)
    if run is None:
        return 0
    below = run.last_seq - keep_last
    params = {"run_id": run_id, "below": below}
    rows = yield Stmt(
        "SELECT COUNT(*) FROM flowkit_checkpoints WHERE run_id = :run_id AND seq <= :below",
        params,
    )
    doomed = int(rows[0][0])
    if doomed:
        yield Stmt(
            "DELETE FROM flowkit_checkpoints WHERE run_id = :run_id AND seq <= :below", params
        )
        yield Stmt(_schema.json_sql(dialect, "delete_unreferenced_blobs"), {"run_id": run_id})
    return doomed


# -- leases --------------------------------------------------------------------------


def acquire_lease(
    dialect: str,
    run_id: str,
    owner: str,
    ttl: float,
    at: float,
    *,
    operation: str = "acquire_lease",
) -> Op[RunRecord]:
    """Lock the run row, then take the lease when it is free, expired, ours, or its
    holder is dead (its process on this host, or its database session, is gone)."""
    _rules.check_ttl(ttl)
    run = yield from _lock_run(run_id)
    if run is None:
        raise _rules.run_not_found(run_id, operation)
    holder = run.lease_owner
    if _rules.lease_blocks(run, owner, at):
        assert holder is not None
        if not (yield from holder_is_dead(dialect, holder)):
            raise _rules.run_locked(run_id, holder, run.lease_expires_at)
    yield Stmt(SET_LEASE, {"run_id": run_id, "owner": owner, "expires": at + ttl})
    return run.replace(lease_owner=owner, lease_expires_at=utc_from_timestamp(at + ttl))


def claim_run(
    dialect: str, run_id: str, owner: str, ttl: float, at: float
) -> Op[tuple[RunRecord, Checkpoint | None]]:
    """Take the lease with the run row locked, then read the latest checkpoint in the
    same transaction: no writer can append in between (a save locks the row first)."""
    run = yield from acquire_lease(dialect, run_id, owner, ttl, at, operation="claim_run")
    checkpoint = yield from load_checkpoint(dialect, run_id, None)
    return run, checkpoint


def renew_lease(run_id: str, owner: str, ttl: float, at: float) -> Op[None]:
    _rules.check_ttl(ttl)
    run = yield from _lock_run(run_id)
    if run is None or run.lease_owner != owner:
        raise _rules.lease_lost(run_id, owner, run)
    yield Stmt(
        "UPDATE flowkit_runs SET lease_expires_at = :expires WHERE run_id = :run_id",
        {"run_id": run_id, "expires": at + ttl},
    )


def release_lease(run_id: str, owner: str) -> Op[None]:
    yield Stmt(_schema.RELEASE_LEASE, {"run_id": run_id, "owner": owner})
