"""Every SQL backend operation as a generator of statements, without I/O.

An operation yields :class:`Stmt` objects and receives each statement's rows; its return
value is the result. A driver runs it in one transaction: on SQLite the whole generator
runs inside the database thread (one thread hop per operation), elsewhere each statement
is awaited. The logic exists once, whatever runs it.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from flowkit.exceptions import CorruptRunError, PersistenceError
from flowkit.persistence import _metadata, _rules, _schema
from flowkit.persistence._records import (
    Checkpoint,
    EncodedState,
    RunRecord,
    corrupt,
    decode_object,
    utc_from_timestamp,
)
from flowkit.persistence._rows import (
    blob_refs,
    checked_last_seq,
    checkpoint_from_row,
    run_from_row,
)
from flowkit.persistence._rules import owner_is_dead, parse_owner, this_host
from flowkit.persistence._sql_liveness import LIVENESS_SQL

T = TypeVar("T")
Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Stmt:
    sql: str
    params: Mapping[str, Any] | Sequence[Mapping[str, Any]] = field(default_factory=dict)
    many: bool = False


Op = Generator[Stmt, list[Row], T]


@dataclass(frozen=True, slots=True)
class SavedCheckpoint:
    seq: int
    created_at: float
    blobs: frozenset[str]


@dataclass(frozen=True, slots=True)
class Append:
    """A checkpoint write (``save_checkpoint``, ``end_run`` with ``release``) as the
    statements take it: the state and meta encoded, the time fixed, and what this process
    last stored for the run (``stored_blobs``: seq, blob hashes; those blobs are skipped
    only if that checkpoint is still the one before this one)."""

    run_id: str
    method_name: str
    encoded: EncodedState
    meta_text: str
    status: str
    flow_name: str | None
    expected_seq: int | None
    lease_owner: str | None
    at: float
    stored_blobs: tuple[int, frozenset[str]] | None
    release: bool = False


@dataclass(frozen=True, slots=True)
class NewRunRow:
    """A ``create_run`` as the statements take it: the info encoded, the time fixed."""

    run_id: str
    flow_name: str
    parent_run_id: str | None
    parent_seq: int | None
    fingerprint: str | None
    info_text: str
    exist_ok: bool
    at: float


@dataclass(frozen=True, slots=True)
class RunChange:
    """An ``update_run`` as the statements take it (None: leave the field as it is);
    fenced by ``lease_owner`` when given."""

    run_id: str
    status: str | None
    fingerprint: str | None
    info_text: str | None
    at: float
    lease_owner: str | None


@dataclass(frozen=True, slots=True)
class Start:
    """A ``begin_run`` as the statements take it (see :class:`Append`): the run to create
    if missing (``fingerprint``, ``info_text``), the lease to take (``owner`` for ``ttl``
    seconds) and the first checkpoint to append."""

    run_id: str
    flow_name: str
    owner: str | None
    ttl: float | None
    fingerprint: str | None
    info_text: str
    method_name: str
    encoded: EncodedState
    meta_text: str
    expected_seq: int | None
    at: float
    stored_blobs: tuple[int, frozenset[str]] | None

    @property
    def expires(self) -> float | None:
        return None if self.owner is None else self.at + _rules.lease_ttl(self.ttl)

    def first(self, *, expected_seq: int | None, stored_blobs: Any) -> Append:
        """The checkpoint to append, as the lease holder."""
        return Append(
            self.run_id,
            self.method_name,
            self.encoded,
            self.meta_text,
            status="running",
            flow_name=self.flow_name,
            expected_seq=expected_seq,
            lease_owner=self.owner,
            at=self.at,
            stored_blobs=stored_blobs,
        )


# -- schema --------------------------------------------------------------------------


def read_schema_version(dialect: str) -> Op[int]:
    """The schema version the database holds, 0 if it has no flowkit tables; reads only
    (no lock beyond a reader's, so it never waits for a writer)."""
    rows = yield Stmt(_schema.version_table_exists_sql(dialect))
    if not rows or not rows[0][0]:
        return 0
    rows = yield Stmt("SELECT MAX(version) FROM flowkit_schema_version")
    return _checked_version(rows)


def _checked_version(rows: list[Row]) -> int:
    found = rows[0][0] if rows and rows[0][0] is not None else 0
    if not isinstance(found, int) or isinstance(found, bool):
        raise PersistenceError(
            f"flowkit_schema_version holds {found!r}, not a version number: this is not a "
            "database flowkit wrote, or it is damaged. Restore it from a backup."
        )
    if found > _schema.SCHEMA_VERSION:
        raise PersistenceError(
            f"This database uses flowkit schema version {found}, newer than the version "
            f"this flowkit understands ({_schema.SCHEMA_VERSION}). Upgrade flowkit."
        )
    return found


def init_schema(dialect: str) -> Op[int]:
    """Create or upgrade the tables; returns the schema version found before."""
    server_version = ""
    if dialect == "postgresql":
        yield Stmt("SELECT pg_advisory_xact_lock(:key)", {"key": _schema.SCHEMA_LOCK_KEY})
    elif dialect == "mysql":
        # No lock: MariaDB/MySQL commit each CREATE on its own, every statement here may
        # run twice, and the version row, written last, marks the schema complete.
        rows = yield Stmt("SELECT VERSION()")
        server_version = str(rows[0][0])
    yield Stmt(_schema.CREATE_VERSION_TABLE)
    rows = yield Stmt("SELECT MAX(version) FROM flowkit_schema_version")
    found = _checked_version(rows)
    if found == 0:
        statements = _schema.schema_statements(dialect, server_version=server_version)
        for ddl in statements + _schema.dialect_schema(dialect):
            yield Stmt(ddl)
        yield Stmt(
            "INSERT INTO flowkit_schema_version (version) VALUES (:version)",
            {"version": _schema.SCHEMA_VERSION},
        )
        return 0
    for version in range(found, _schema.SCHEMA_VERSION):
        for ddl in _schema.MIGRATIONS[version](dialect):
            yield Stmt(ddl)
    if found != _schema.SCHEMA_VERSION:
        yield Stmt(
            "UPDATE flowkit_schema_version SET version = :version",
            {"version": _schema.SCHEMA_VERSION},
        )
    return int(found)


# -- checkpoints ---------------------------------------------------------------------


def save_checkpoint(w: Append) -> Op[SavedCheckpoint]:
    """Append a checkpoint (a run deleted or rewritten elsewhere gets its blobs re-sent,
    see :class:`Append`). With ``release`` the lease of ``lease_owner`` is given up in the
    same transaction."""
    run_id, status, flow_name, at = w.run_id, w.status, w.flow_name, w.at
    expected_seq, lease_owner = w.expected_seq, w.lease_owner
    sql = _schema.save_run_sql(
        may_create=expected_seq is None or expected_seq == 0,
        check_seq=expected_seq is not None,
        check_lease=lease_owner is not None,
    )
    params = {
        "run_id": run_id,
        "flow_name": flow_name,
        "status": status,
        "now": at,
        "expected_seq": expected_seq,
        "lease_owner": lease_owner,
    }
    rows = yield Stmt(sql, {k: params[k] for k in _param_names(sql)})
    if not rows:
        rows = yield Stmt(_schema.SELECT_RUN, {"run_id": run_id})
        run = run_from_row(rows[0]) if rows else None
        _rules.check_save(run_id, run, expected_seq=expected_seq, lease_owner=lease_owner, at=at)
        stored = run.last_seq if run is not None else 0
        raise _rules.concurrent_update(run_id, expected_seq or 0, stored)
    seq, stored_status, stored_flow = rows[0]
    if stored_status != status or (stored_flow is None and flow_name is not None):
        yield Stmt(
            _schema.SET_RUN_STATUS, {"run_id": run_id, "status": status, "flow_name": flow_name}
        )
    refs = yield from _append(w, int(seq))
    if w.release and lease_owner is not None:
        yield from release_lease(run_id, lease_owner)
    return SavedCheckpoint(int(seq), at, refs)


def save_checkpoint_statement(w: Append) -> Op[SavedCheckpoint | None] | None:
    """SQLite: :func:`save_checkpoint` as one guarded statement in autocommit (schema
    3's trigger advances the run row; with blobs the run may lack, an INSERT into
    ``flowkit_writes``), or None when it must write blobs and is not fenced by both a
    seq and an owner. The operation answers None, having written nothing, when the run
    does not admit the save as it is (a guard, a missing run, a status or flow name to
    change): the full operation then runs in a transaction and decides."""
    refs = frozenset(w.encoded.blobs)
    stored = w.stored_blobs
    if refs and not (
        w.expected_seq is not None
        and stored is not None
        and stored[0] == w.expected_seq
        and refs <= stored[1]
    ):
        if w.expected_seq is None or w.lease_owner is None or w.flow_name is not None:
            return None
        # New blobs to write with it: one INSERT into flowkit_writes (a fenced write).
        return _write_in_one_statement("save", w, w.expected_seq)
    return _save_in_one_statement(w)


def end_run_statement(w: Append) -> Op[SavedCheckpoint] | None:
    """SQLite: ``end_run`` (the last checkpoint, the run's new status and the lease
    given back) as one fenced statement in autocommit, or None when it is not fenced by
    both a seq and an owner, or names a flow (the transaction does it). The operation
    answers None, having written nothing, when the guard refuses."""
    if w.expected_seq is None or w.lease_owner is None or w.flow_name is not None:
        return None
    return _write_in_one_statement("end", w, w.expected_seq)


def start_run_statement(start: Start) -> Op[tuple[RunRecord, SavedCheckpoint]] | None:
    """SQLite: ``begin_run`` of an id not taken yet as one statement in autocommit: the
    run row (leased, ``last_seq`` 1), its first checkpoint and blobs. None when the
    caller expects an existing run. When the id exists the statement is refused and
    writes nothing (the driver answers None); the transaction then does ``begin_run``."""
    if start.expected_seq not in (None, 0):
        return None
    fields = {
        "flow_name": start.flow_name,
        "fingerprint": start.fingerprint,
        "info": start.info_text,
        "lease_expires_at": start.expires,
    }
    first = start.first(expected_seq=0, stored_blobs=None)

    def op() -> Op[tuple[RunRecord, SavedCheckpoint]]:
        saved = yield from _write_in_one_statement("start", first, 0, run_fields=fields)
        return started_run_record(start), saved

    return op()


_NO_RUN_FIELDS = {"flow_name": None, "fingerprint": None, "info": None, "lease_expires_at": None}


def _write_in_one_statement(
    kind: str, w: Append, expected_seq: int, *, run_fields: dict[str, Any] = _NO_RUN_FIELDS
) -> Op[SavedCheckpoint]:
    """One INSERT into SQLite's ``flowkit_writes`` (see ``_schema``): checkpoint
    ``expected_seq + 1`` and the blobs the run may not have. None if refused (the
    driver answers the trigger's ``WRITE_REFUSED`` as None)."""
    blobs = _blobs_to_send(w, expected_seq)
    params: dict[str, Any] = {
        "kind": kind,
        "status": w.status,
        "lease_owner": w.lease_owner,
        "expected_seq": expected_seq,
        **checkpoint_params(w),
        **run_fields,
    }
    for n, (h, text) in enumerate(blobs.items()):
        params[f"hash{n}"] = h
        params[f"data{n}"] = text
    # Refused: the trigger raises WRITE_REFUSED, which the driver answers as None.
    yield Stmt(_schema.write_statement(len(blobs)), params)
    return SavedCheckpoint(expected_seq + 1, w.at, frozenset(w.encoded.blobs))


def _blobs_to_send(w: Append, seq_before: int) -> Mapping[str, str]:
    """The blobs ``w`` refers to, less those this process stored with checkpoint
    ``seq_before`` when that is the run's previous checkpoint."""
    stored = w.stored_blobs
    if stored is not None and stored[0] == seq_before:
        return {h: text for h, text in w.encoded.blobs.items() if h not in stored[1]}
    return w.encoded.blobs


def checkpoint_params(w: Append) -> dict[str, Any]:
    """The bound values of the checkpoint row ``w`` writes (besides its seq)."""
    refs = sorted(w.encoded.blobs)
    return {
        "run_id": w.run_id,
        "method_name": w.method_name,
        "state": w.encoded.text,
        "meta": w.meta_text,
        "blobs": json.dumps(refs) if refs else None,
        "now": w.at,
    }


def _save_in_one_statement(w: Append) -> Op[SavedCheckpoint | None]:
    sql = _schema.save_checkpoint_statement(
        check_seq=w.expected_seq is not None,
        check_lease=w.lease_owner is not None,
        named_flow=w.flow_name is not None,
    )
    params: dict[str, Any] = {"status": w.status, **checkpoint_params(w)}
    if w.expected_seq is not None:
        params["expected_seq"] = w.expected_seq
    if w.lease_owner is not None:
        params["lease_owner"] = w.lease_owner
    rows = yield Stmt(sql, params)
    if not rows:
        return None
    return SavedCheckpoint(int(rows[0][0]), w.at, frozenset(w.encoded.blobs))


@functools.cache
def _param_names(sql: str) -> tuple[str, ...]:
    """The bound parameters ``save_run_sql`` statements use (they vary with the guards)."""
    names = ("run_id", "flow_name", "status", "now", "expected_seq", "lease_owner")
    return tuple(name for name in names if f":{name}" in sql)


def _append(w: Append, seq: int, insert_blob: str = _schema.INSERT_BLOB) -> Op[frozenset[str]]:
    """Insert checkpoint ``seq`` of ``w`` (its number already taken on the run row) and
    the blobs it needs (with ``insert_blob``, which skips a blob the run has); return the
    hashes it refers to."""
    blobs = _blobs_to_send(w, seq - 1)
    if blobs:
        yield Stmt(
            insert_blob,
            [{"run_id": w.run_id, "hash": h, "data": text} for h, text in blobs.items()],
            many=True,
        )
    yield Stmt(_schema.INSERT_CHECKPOINT, {"seq": seq, **checkpoint_params(w)})
    return frozenset(w.encoded.blobs)


def begin_run(dialect: str, start: Start) -> Op[tuple[RunRecord, SavedCheckpoint]]:
    """Create the run if missing, take its lease, append the first checkpoint."""
    run_id, flow_name, owner, at = start.run_id, start.flow_name, start.owner, start.at
    if start.expected_seq is None or start.expected_seq == 0:
        started = yield from _start_new_run(start)
        if started is not None:
            return started
    new = NewRunRow(run_id, flow_name, None, None, start.fingerprint, start.info_text, True, at)
    run = yield from create_run(new)
    _rules.check_flow(run, flow_name)
    if owner is not None:
        run = yield from acquire_lease(
            dialect, run_id, owner, _rules.lease_ttl(start.ttl), at, operation="begin_run"
        )
    saved = yield from save_checkpoint(
        start.first(expected_seq=start.expected_seq, stored_blobs=start.stored_blobs)
    )
    return begun(run, saved, start), saved


def begun(run: RunRecord, saved: SavedCheckpoint, start: Start) -> RunRecord:
    """The record of an existing run after ``begin_run`` appended ``saved`` to it."""
    return run.replace(
        last_seq=saved.seq,
        status="running",
        updated_at=utc_from_timestamp(start.at),
        flow_name=run.flow_name if run.flow_name is not None else start.flow_name,
    )


def _start_new_run(start: Start) -> Op[tuple[RunRecord, SavedCheckpoint] | None]:
    """``begin_run`` of an id not taken yet: the run row (leased, ``last_seq`` 1) and its
    first checkpoint in two statements. None, with nothing written, if the id exists."""
    rows = yield Stmt(
        _schema.INSERT_STARTED_RUN,
        {
            "run_id": start.run_id,
            "flow_name": start.flow_name,
            "now": start.at,
            "fingerprint": start.fingerprint,
            "info": start.info_text,
            "owner": start.owner,
            "expires": start.expires,
        },
    )
    if not rows:
        return None
    refs = yield from _append(start.first(expected_seq=0, stored_blobs=None), 1)
    return started_run_record(start), SavedCheckpoint(1, start.at, refs)


def started_run_record(start: Start) -> RunRecord:
    """The record of a run that ``begin_run`` just created with its first checkpoint."""
    when = utc_from_timestamp(start.at)
    expires = start.expires
    return RunRecord(
        run_id=start.run_id,
        flow_name=start.flow_name,
        status="running",
        created_at=when,
        updated_at=when,
        last_seq=1,
        fingerprint=start.fingerprint,
        info=decode_object(start.info_text, run_id=start.run_id, seq=None, what="run info"),
        lease_owner=start.owner,
        lease_expires_at=None if expires is None else utc_from_timestamp(expires),
    )


def _fetch_blobs(dialect: str, run_id: str, row: Row) -> Op[dict[str, str]]:
    refs = blob_refs(run_id, row[0], row[4])
    if refs is None:
        return {}
    rows = yield Stmt(_schema.json_sql(dialect, "select_blobs"), {"run_id": run_id, "hashes": refs})
    return {row[0]: row[1] for row in rows}


def _checkpoint_row(run_id: str, seq: int | None, rows: list[Row]) -> Row | None:
    """The checkpoint row a lookup by :func:`_checkpoint_lookup` found, or None."""
    if not rows:
        return None
    if seq is not None:
        return rows[0]
    last_seq, *checkpoint_row = rows[0]
    if checked_last_seq(run_id, last_seq) == 0:
        return None
    if checkpoint_row[0] is None:
        raise corrupt(run_id, last_seq, "its row is missing")
    return tuple(checkpoint_row)


def _checkpoint_lookup(run_id: str, seq: int | None) -> Stmt:
    if seq is None:  # the run row names the latest: one primary-key lookup, any history
        return Stmt(_schema.SELECT_LATEST, {"run_id": run_id})
    return Stmt(_schema.SELECT_CHECKPOINT, {"run_id": run_id, "seq": seq})


def load_checkpoint(dialect: str, run_id: str, seq: int | None) -> Op[Checkpoint | None]:
    rows = yield _checkpoint_lookup(run_id, seq)
    row = _checkpoint_row(run_id, seq, rows)
    if row is None:
        return None
    blobs = yield from _fetch_blobs(dialect, run_id, row)
    return checkpoint_from_row(run_id, row, blobs)


# What load_checkpoint_statement answers for "no such checkpoint" (None: not decided).
NO_CHECKPOINT: Final = False


def load_checkpoint_statement(run_id: str, seq: int | None) -> Op[Checkpoint | bool | None]:
    """:func:`load_checkpoint` as its one lookup statement, run on its own (SQLite in
    autocommit: no BEGIN and COMMIT around it). Answers the checkpoint, NO_CHECKPOINT,
    or None when the checkpoint keeps fields in blobs: then :func:`load_checkpoint`
    reads it and its blobs in one transaction (one snapshot)."""
    rows = yield _checkpoint_lookup(run_id, seq)
    row = _checkpoint_row(run_id, seq, rows)
    if row is None:
        return NO_CHECKPOINT
    if blob_refs(run_id, row[0], row[4]) is not None:
        return None
    return checkpoint_from_row(run_id, row, {})


def history(run_id: str) -> Op[list[Checkpoint]]:
    rows = yield Stmt(_schema.SELECT_HISTORY, {"run_id": run_id})
    blobs: dict[str, str] = {}
    if any(blob_refs(run_id, row[0], row[4]) is not None for row in rows):
        blob_rows = yield Stmt(_schema.SELECT_ALL_BLOBS, {"run_id": run_id})
        blobs = {row[0]: row[1] for row in blob_rows}
    return [checkpoint_from_row(run_id, row, blobs) for row in rows]


# -- runs ----------------------------------------------------------------------------


def create_run(new: NewRunRow) -> Op[RunRecord]:
    rows = yield Stmt(
        _schema.INSERT_RUN,
        {
            "run_id": new.run_id,
            "flow_name": new.flow_name,
            "now": new.at,
            "parent_run_id": new.parent_run_id,
            "parent_seq": new.parent_seq,
            "fingerprint": new.fingerprint,
            "info": new.info_text,
        },
    )
    if rows:
        return run_from_row(rows[0])
    if not new.exist_ok:
        raise _rules.run_exists(new.run_id)
    rows = yield Stmt(_schema.SELECT_RUN, {"run_id": new.run_id})
    return run_from_row(rows[0])


def get_run(run_id: str) -> Op[RunRecord | None]:
    rows = yield Stmt(_schema.SELECT_RUN, {"run_id": run_id})
    return run_from_row(rows[0]) if rows else None


def update_run(change: RunChange) -> Op[RunRecord]:
    """Fenced by ``lease_owner`` when given: the guard is in the UPDATE itself; a
    refusal is explained from the run row read in the same transaction."""
    run_id, status, fingerprint, info_text = (
        change.run_id,
        change.status,
        change.fingerprint,
        change.info_text,
    )
    at, lease_owner = change.at, change.lease_owner
    sql = _schema.update_run_sql(
        status=status is not None,
        fingerprint=fingerprint is not None,
        info=info_text is not None,
        fenced=lease_owner is not None,
    )
    params: dict[str, Any] = {"run_id": run_id, "now": at}
    for name, value in (
        ("status", status),
        ("fingerprint", fingerprint),
        ("info", info_text),
        ("lease_owner", lease_owner),
    ):
        if value is not None:
            params[name] = value
    rows = yield Stmt(sql, params)
    if rows:
        return run_from_row(rows[0])
    if lease_owner is not None:
        rows = yield Stmt(_schema.SELECT_RUN, {"run_id": run_id})
        if rows:
            _rules.check_owner(run_id, run_from_row(rows[0]), lease_owner, at)
    raise _rules.run_not_found(run_id, "update_run")


def list_runs(
    *,
    flow_name: str | None,
    status: str | None,
    parent_run_id: str | None,
    limit: int,
    offset: int,
    metadata: dict[str, Any] | None = None,
) -> Op[list[RunRecord]]:
    filters = {"flow_name": flow_name, "status": status, "parent_run_id": parent_run_id}
    given = {name: value is not None for name, value in filters.items()}
    params: dict[str, Any] = {k: v for k, v in filters.items() if v is not None}
    if metadata is not None:
        return (yield from _list_by_metadata(given, params, metadata, limit, offset))
    sql = _schema.list_runs_sql(**given)
    rows = yield Stmt(sql, {**params, "limit": limit, "offset": offset})
    return _readable_runs(rows)


def _readable_runs(rows: list[Row]) -> list[RunRecord]:
    runs = []
    for row in rows:
        try:
            runs.append(run_from_row(row))
        except CorruptRunError as exc:  # one damaged run must not hide the others
            _rules.report_unreadable(exc)
    return runs


#: rows a metadata-filtered listing reads per statement: 2 * (limit + offset), within these
LIST_BATCH = (100, 1000)


def _list_by_metadata(
    given: dict[str, bool],
    params: dict[str, Any],
    metadata: dict[str, Any],
    limit: int,
    offset: int,
) -> Op[list[RunRecord]]:
    """Runs whose metadata matches, paged by matching runs. The database narrows the rows
    (``info LIKE`` patterns every match satisfies, see ``_metadata.like_patterns``) and
    :func:`_metadata.matches` decides, so the answer is exact whatever the database's
    JSON functions; batches continue after the last row read (keyset, not OFFSET), until
    ``offset + limit`` runs matched or the rows run out."""
    patterns = _metadata.like_patterns(metadata)
    likes = {f"like{n}": pattern for n, pattern in enumerate(patterns)}
    first = _schema.list_runs_sql(**given, likes=len(patterns))
    after = _schema.list_runs_sql(**given, likes=len(patterns), after=True)
    low, high = LIST_BATCH
    batch = min(max(2 * (limit + offset), low), high)
    matched: list[RunRecord] = []
    skip = offset
    cursor: dict[str, Any] = {}
    while len(matched) < limit:
        rows = yield Stmt(
            after if cursor else first, {**params, **likes, **cursor, "limit": batch, "offset": 0}
        )
        for run in _readable_runs(rows):
            if not _metadata.matches(run.info, metadata):
                continue
            if skip:
                skip -= 1
                continue
            matched.append(run)
            if len(matched) == limit:
                break
        if len(rows) < batch:
            break
        cursor = {"after_at": rows[-1][4], "after_id": rows[-1][0]}
    return matched


def delete_run(run_id: str) -> Op[bool]:
    yield Stmt(_schema.DELETE_RUN_BLOBS, {"run_id": run_id})
    yield Stmt(_schema.DELETE_RUN_CHECKPOINTS, {"run_id": run_id})
    rows = yield Stmt(_schema.DELETE_RUN, {"run_id": run_id})
    return bool(rows)


def prune(dialect: str, run_id: str, keep_last: int) -> Op[int]:
    rows = yield Stmt(_schema.PRUNE_CHECKPOINTS, {"run_id": run_id, "keep_last": keep_last})
    if rows:
        yield Stmt(_schema.json_sql(dialect, "delete_unreferenced_blobs"), {"run_id": run_id})
    return len(rows)


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
    """Take the lease when it is free, expired or ours (one statement), else when its
    holder is dead: read the holder, decide in Python, then compare-and-set on it."""
    _rules.check_ttl(ttl)
    params = {"run_id": run_id, "owner": owner, "expires": at + ttl, "now": at}
    rows = yield Stmt(_schema.ACQUIRE_LEASE, params)
    if rows:
        return run_from_row(rows[0])
    rows = yield Stmt(_schema.SELECT_RUN, {"run_id": run_id})
    if not rows:
        raise _rules.run_not_found(run_id, operation)
    run = run_from_row(rows[0])
    holder = run.lease_owner
    if holder is not None and (yield from holder_is_dead(dialect, holder)):
        rows = yield Stmt(_schema.TAKE_OVER_LEASE, {**params, "holder": holder})
        if rows:
            return run_from_row(rows[0])
        # Someone else took it over first.
        rows = yield Stmt(_schema.SELECT_RUN, {"run_id": run_id})
        run = run_from_row(rows[0])
    raise _rules.run_locked(run_id, run.lease_owner, run.lease_expires_at)


def holder_is_dead(dialect: str, holder: str) -> Op[bool]:
    """Whether the lease holder is known to be gone: its process on this host is, or (on
    PostgreSQL and MariaDB/MySQL) no database session holds its liveness lock any more."""
    if owner_is_dead(holder):
        return True
    parsed = parse_owner(holder)
    liveness = LIVENESS_SQL.get(dialect)
    if liveness is None or (
        parsed is not None and parsed.host == this_host() and parsed.pid == os.getpid()
    ):
        # Our own process is alive; its keys are held by our liveness session.
        return False
    rows = yield Stmt(liveness.holder_gone, {"key": liveness.key(holder)})
    return bool(rows and rows[0][0])


def claim_run(
    dialect: str, run_id: str, owner: str, ttl: float, at: float
) -> Op[tuple[RunRecord, Checkpoint | None]]:
    """Take the lease, then read the latest checkpoint in the same transaction: no writer
    can append between the two (saves need the lease, and the run row is ours)."""
    run = yield from acquire_lease(dialect, run_id, owner, ttl, at, operation="claim_run")
    checkpoint = yield from load_checkpoint(dialect, run_id, None)
    return run, checkpoint


def renew_lease(run_id: str, owner: str, ttl: float, at: float) -> Op[None]:
    _rules.check_ttl(ttl)
    rows = yield Stmt(_schema.RENEW_LEASE, {"run_id": run_id, "owner": owner, "expires": at + ttl})
    if rows:
        return
    rows = yield Stmt(_schema.SELECT_RUN, {"run_id": run_id})
    raise _rules.lease_lost(run_id, owner, run_from_row(rows[0]) if rows else None)


def release_lease(run_id: str, owner: str) -> Op[None]:
    yield Stmt(_schema.RELEASE_LEASE, {"run_id": run_id, "owner": owner})
