"""PostgreSQL: the hot writes as one statement each, run in autocommit.

A step's save, the last save of an execution (``end_run``: save and give the lease
back), the start of a new run (``begin_run`` of an id not taken yet) and a claim
(``claim_run``: take the lease, read the latest checkpoint) are each one
data-modifying CTE: the run row is updated (or inserted) under its guards and the
checkpoint row is inserted from what that returned, in one statement, so one round trip
and one commit. The guards are checked by the database in that statement: the run row's
``last_seq`` must be the expected one and its ``lease_owner`` the writer (fencing, as in
``_schema.save_run_sql``); PostgreSQL locks the row for the update and, at READ
COMMITTED, re-checks the guards on the row as the concurrent writer left it. The unique
``(run_id, seq)`` key backs the sequence. When a guard refuses (or the run is missing, or
big fields must be written as blobs first), the statement writes nothing and answers no
row: the full operation of ``_sql_ops`` then runs in a transaction and decides (raising
the same errors as before). Values are always bound parameters.
"""

from __future__ import annotations

import functools
from typing import Any

from flowkit.persistence import _rules, _schema
from flowkit.persistence._records import Checkpoint, RunRecord
from flowkit.persistence._rows import blob_refs, checkpoint_from_row, run_from_row
from flowkit.persistence._sql_ops import (
    Append,
    Op,
    SavedCheckpoint,
    Start,
    Stmt,
    checkpoint_params,
    started_run_record,
)

_INSERT_CHECKPOINT_FROM = (
    "INSERT INTO flowkit_checkpoints (run_id, seq, method_name, state, meta, blobs, "
    "created_at) SELECT run_id, {seq}, :method_name, :state, :meta, :blobs, :now FROM r "
    "RETURNING seq"
)


@functools.cache
def save_sql(*, check_seq: bool, check_lease: bool, release: bool) -> str:
    """Advance the run row (guarded) and insert checkpoint ``last_seq + 1`` from it.
    With ``release`` the lease is given back in the same statement (``check_lease`` is
    then required: only the holder releases)."""
    guards = ["run_id = :run_id"]
    if check_seq:
        guards.append("last_seq = :expected_seq")
    if check_lease:
        # Fencing: only the lease holder appends; a free or expired lease nobody took
        # does not admit another owner (see _schema.save_run_sql).
        guards.append("lease_owner = :lease_owner")
    assignments = (
        "last_seq = last_seq + 1, updated_at = :now, status = :status, "
        "flow_name = COALESCE(flow_name, :flow_name)"
    )
    if release:
        assignments += ", lease_owner = NULL, lease_expires_at = NULL"
    return (
        f"WITH r AS (UPDATE flowkit_runs SET {assignments} WHERE {' AND '.join(guards)} "
        "RETURNING run_id, last_seq) " + _INSERT_CHECKPOINT_FROM.format(seq="last_seq")
    )


# begin_run of an id not taken yet: the run row, leased and numbered for its first
# checkpoint, and that checkpoint. No row (nothing written) if the id exists.
BEGIN_NEW_RUN_SQL = (
    "WITH r AS (INSERT INTO flowkit_runs (run_id, flow_name, status, created_at, updated_at, "
    "last_seq, parent_run_id, parent_seq, fingerprint, info, lease_owner, lease_expires_at) "
    "VALUES (:run_id, :flow_name, 'running', :now, :now, 1, NULL, NULL, :fingerprint, :info, "
    ":owner, :expires) ON CONFLICT (run_id) DO NOTHING RETURNING run_id) "
    + _INSERT_CHECKPOINT_FROM.format(seq="1")
)


def _blobs_stored(w: Append) -> bool:
    """Whether every blob the state refers to is known stored for the run (written by
    this process with the checkpoint before this one), so none has to be sent."""
    refs, stored = w.encoded.blobs, w.stored_blobs
    return not refs or (
        w.expected_seq is not None
        and stored is not None
        and stored[0] == w.expected_seq
        and frozenset(refs) <= stored[1]
    )


def save_statement(w: Append) -> Op[SavedCheckpoint | None] | None:
    """``_sql_ops.save_checkpoint`` as one statement, or None when it cannot be (blobs
    to write, or a release without an owner). The operation answers None, having
    written nothing, when the run does not admit the save as it is."""
    if not _blobs_stored(w):
        return None
    if w.release and w.lease_owner is None:
        return None
    sql = save_sql(
        check_seq=w.expected_seq is not None,
        check_lease=w.lease_owner is not None,
        release=w.release,
    )
    params = {"status": w.status, "flow_name": w.flow_name, **checkpoint_params(w)}
    if w.expected_seq is not None:
        params["expected_seq"] = w.expected_seq
    if w.lease_owner is not None:
        params["lease_owner"] = w.lease_owner
    return _one(sql, params, w.at, frozenset(w.encoded.blobs))


def _one(
    sql: str, params: dict[str, Any], at: float, refs: frozenset[str]
) -> Op[SavedCheckpoint | None]:
    rows = yield Stmt(sql, params)
    if not rows:
        return None
    return SavedCheckpoint(int(rows[0][0]), at, refs)


def begin_statement(start: Start) -> Op[tuple[RunRecord, SavedCheckpoint] | None] | None:
    """``_sql_ops.begin_run`` of a new id as one statement, or None when it cannot be
    (an expected_seq past 0, or blobs to write). The operation answers None, having
    written nothing, when the id is taken."""
    if start.expected_seq not in (None, 0) or start.encoded.blobs:
        return None
    params = {
        "flow_name": start.flow_name,
        "fingerprint": start.fingerprint,
        "info": start.info_text,
        "owner": start.owner,
        "expires": start.expires,
        **checkpoint_params(start.first(expected_seq=0, stored_blobs=None)),
    }

    def op() -> Op[tuple[RunRecord, SavedCheckpoint] | None]:
        rows = yield Stmt(BEGIN_NEW_RUN_SQL, params)
        if not rows:
            return None
        return started_run_record(start), SavedCheckpoint(1, start.at, frozenset())

    return op()


# claim_run in one statement: take the lease when it is free, expired or ours, and read
# the checkpoint the run row numbers as its latest -- but only when that checkpoint is
# there to read without blobs. The lease update waits for a writer holding the row and
# re-checks its conditions on the row as that writer left it (READ COMMITTED), while the
# checkpoint table is read in the statement's snapshot, which may predate a checkpoint
# the writer committed meanwhile: the EXISTS condition then fails, nothing is updated,
# and the transaction form decides. ``prev`` is who held the lease before (in the
# snapshot), so a claim that fails after taking it gives back only what it took.
CLAIM_SQL = (
    "WITH prev AS (SELECT lease_owner FROM flowkit_runs WHERE run_id = :run_id), "
    "r AS (UPDATE flowkit_runs SET lease_owner = :owner, lease_expires_at = :expires "
    "WHERE run_id = :run_id AND (lease_owner IS NULL OR lease_owner = :owner "
    "OR lease_expires_at <= :now) AND (last_seq = 0 OR EXISTS (SELECT 1 FROM "
    "flowkit_checkpoints k WHERE k.run_id = flowkit_runs.run_id "
    "AND k.seq = flowkit_runs.last_seq AND k.blobs IS NULL)) "
    f"RETURNING {_schema.RUN_COLUMNS}) "
    "SELECT r.*, (SELECT lease_owner FROM prev), c.seq, c.method_name, c.state, c.meta, "
    "c.blobs, c.created_at FROM r "
    "LEFT JOIN flowkit_checkpoints c ON c.run_id = r.run_id AND c.seq = r.last_seq"
)
_RUN_WIDTH = len(_schema.RUN_COLUMNS.split(","))


class _Undecided(Exception):
    """The one-statement claim cannot answer (see :func:`claim_statement`)."""


def claim_statement(
    run_id: str, owner: str, ttl: float, at: float
) -> Op[tuple[RunRecord, Checkpoint | None] | None]:
    """``_sql_ops.claim_run`` as one statement. Answers None, having changed nothing,
    when it cannot decide (the lease is held by another owner, who may be dead; the
    latest checkpoint was committed after the statement's snapshot, or keeps fields in
    blobs): ``claim_run`` then runs in a transaction. A stored row that fails its checks
    after the lease was taken gives the lease back (unless it was ours before) and
    raises, as the transaction would, having rolled back."""
    _rules.check_ttl(ttl)
    params = {"run_id": run_id, "owner": owner, "expires": at + ttl, "now": at}
    rows = yield Stmt(CLAIM_SQL, params)
    if not rows:
        return None
    row = rows[0]
    held_before = row[_RUN_WIDTH] == owner
    checkpoint_row = row[_RUN_WIDTH + 1 :]
    try:
        run = run_from_row(row[:_RUN_WIDTH])
        if run.last_seq == 0:
            return run, None
        if checkpoint_row[0] != run.last_seq or blob_refs(run_id, run.last_seq, checkpoint_row[4]):
            raise _Undecided  # (the EXISTS condition rules both out: defensive)
        return run, checkpoint_from_row(run_id, checkpoint_row, {})
    except BaseException as exc:
        if not held_before:
            yield Stmt(_schema.RELEASE_LEASE, {"run_id": run_id, "owner": owner})
        if isinstance(exc, _Undecided):
            return None
        raise
