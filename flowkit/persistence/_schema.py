"""The SQL schema (one text for SQLite and PostgreSQL, one for MariaDB/MySQL) and its
versions.

Timestamps are stored as epoch seconds (``DOUBLE PRECISION``): one representation on
every database, compared without time-zone conversions; records turn them into aware
UTC datetimes. JSON is stored as text. ``flowkit_schema_version`` holds one row; a new
schema version adds a function to :data:`MIGRATIONS`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

SCHEMA_VERSION = 3

# Key of the PostgreSQL advisory lock that serialises schema creation across processes.
SCHEMA_LOCK_KEY = 0x666C6F776B6974  # "flowkit"

CREATE_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS flowkit_schema_version (version INTEGER NOT NULL)"
)


def version_table_exists_sql(dialect: str) -> str:
    """A read-only query: one row whose value is true when flowkit's tables exist."""
    if dialect == "postgresql":  # the table on the connection's search_path
        return "SELECT to_regclass('flowkit_schema_version') IS NOT NULL"
    if dialect == "mysql":  # the connection's database
        return (
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() "
            "AND table_name = 'flowkit_schema_version'"
        )
    return (
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' "
        "AND name = 'flowkit_schema_version'"
    )


# The tables of a new database (the current version; older ones get MIGRATIONS).
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS flowkit_runs (
        run_id TEXT NOT NULL PRIMARY KEY,
        flow_name TEXT,
        status TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        last_seq BIGINT NOT NULL DEFAULT 0,
        parent_run_id TEXT,
        parent_seq BIGINT,
        fingerprint TEXT,
        info TEXT NOT NULL DEFAULT '{}',
        lease_owner TEXT,
        lease_expires_at DOUBLE PRECISION
    )""",
    # Only flowkit_runs_updated_at holds a column every checkpoint changes: a step rewrites
    # the run row and that one index entry, nothing else (schema version 2).
    "CREATE INDEX IF NOT EXISTS flowkit_runs_flow_name ON flowkit_runs (flow_name)",
    "CREATE INDEX IF NOT EXISTS flowkit_runs_status ON flowkit_runs (status)",
    "CREATE INDEX IF NOT EXISTS flowkit_runs_updated_at ON flowkit_runs (updated_at)",
    "CREATE INDEX IF NOT EXISTS flowkit_runs_parent ON flowkit_runs (parent_run_id)",
    """CREATE TABLE IF NOT EXISTS flowkit_checkpoints (
        run_id TEXT NOT NULL REFERENCES flowkit_runs (run_id) ON DELETE CASCADE,
        seq BIGINT NOT NULL,
        method_name TEXT NOT NULL,
        state TEXT NOT NULL,
        meta TEXT NOT NULL,
        blobs TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (run_id, seq)
    )""",
    """CREATE TABLE IF NOT EXISTS flowkit_blobs (
        run_id TEXT NOT NULL REFERENCES flowkit_runs (run_id) ON DELETE CASCADE,
        hash TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (run_id, hash)
    )""",
)


# MariaDB/MySQL: keyed text is VARCHAR (an index cannot hold a whole TEXT), compared
# byte for byte with no padding, so run ids differing in case or trailing spaces are
# different runs (the server's default collation would merge them); big JSON is LONGTEXT
# (TEXT holds 64 KiB). ``{collation}`` is the server's binary NO PAD collation
# (:func:`mysql_collation`).
MYSQL_KEY_LENGTH = 255
_MYSQL_TABLE = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation}"
_MYSQL_SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS flowkit_runs (
        run_id VARCHAR({MYSQL_KEY_LENGTH}) NOT NULL PRIMARY KEY,
        flow_name VARCHAR({MYSQL_KEY_LENGTH}),
        status VARCHAR(32) NOT NULL,
        created_at DOUBLE NOT NULL,
        updated_at DOUBLE NOT NULL,
        last_seq BIGINT NOT NULL DEFAULT 0,
        parent_run_id VARCHAR({MYSQL_KEY_LENGTH}),
        parent_seq BIGINT,
        fingerprint TEXT,
        info LONGTEXT NOT NULL,
        lease_owner TEXT,
        lease_expires_at DOUBLE,
        INDEX flowkit_runs_flow_name (flow_name),
        INDEX flowkit_runs_status (status),
        INDEX flowkit_runs_updated_at (updated_at),
        INDEX flowkit_runs_parent (parent_run_id)
    ) {_MYSQL_TABLE}""",
    f"""CREATE TABLE IF NOT EXISTS flowkit_checkpoints (
        run_id VARCHAR({MYSQL_KEY_LENGTH}) NOT NULL,
        seq BIGINT NOT NULL,
        method_name TEXT NOT NULL,
        state LONGTEXT NOT NULL,
        meta LONGTEXT NOT NULL,
        blobs LONGTEXT,
        created_at DOUBLE NOT NULL,
        PRIMARY KEY (run_id, seq),
        FOREIGN KEY (run_id) REFERENCES flowkit_runs (run_id) ON DELETE CASCADE
    ) {_MYSQL_TABLE}""",
    f"""CREATE TABLE IF NOT EXISTS flowkit_blobs (
        run_id VARCHAR({MYSQL_KEY_LENGTH}) NOT NULL,
        hash VARCHAR(128) NOT NULL,
        data LONGTEXT NOT NULL,
        PRIMARY KEY (run_id, hash),
        FOREIGN KEY (run_id) REFERENCES flowkit_runs (run_id) ON DELETE CASCADE
    ) {_MYSQL_TABLE}""",
)


def mysql_collation(server_version: str) -> str:
    """The binary NO PAD utf8mb4 collation of a server whose ``VERSION()`` is given."""
    return "utf8mb4_nopad_bin" if "mariadb" in server_version.lower() else "utf8mb4_0900_bin"


def schema_statements(dialect: str, *, server_version: str = "") -> tuple[str, ...]:
    """The statements that create the current schema on ``dialect``."""
    if dialect != "mysql":
        return SCHEMA
    collation = mysql_collation(server_version)
    return tuple(ddl.replace("{collation}", collation) for ddl in _MYSQL_SCHEMA)


def _v1_to_v2(dialect: str) -> tuple[str, ...]:
    """Version 1 indexed (flow_name, updated_at) and (status, updated_at), so each
    checkpoint rewrote three index entries; version 2 indexes flow_name and status alone
    (listing filters by them, then orders by updated_at). No data changes."""
    if dialect == "mysql":  # MariaDB/MySQL support came with version 2
        return ()
    return (
        "DROP INDEX IF EXISTS flowkit_runs_flow_name",
        "DROP INDEX IF EXISTS flowkit_runs_status",
        "CREATE INDEX IF NOT EXISTS flowkit_runs_flow_name ON flowkit_runs (flow_name)",
        "CREATE INDEX IF NOT EXISTS flowkit_runs_status ON flowkit_runs (status)",
    )


# SQLite: a checkpoint inserted past the run's ``last_seq`` advances the run row, so a
# save is one guarded INSERT in autocommit (SAVE_CHECKPOINT_STATEMENT). Inserts made
# after the run row was already advanced (the transactional path) change nothing.
SQLITE_TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS flowkit_checkpoint_advances_run "
    "AFTER INSERT ON flowkit_checkpoints FOR EACH ROW BEGIN "
    "UPDATE flowkit_runs SET last_seq = NEW.seq, updated_at = NEW.created_at "
    "WHERE run_id = NEW.run_id AND last_seq < NEW.seq; END",
)


def dialect_schema(dialect: str) -> tuple[str, ...]:
    """What a dialect's database has beyond :data:`SCHEMA` (created after it)."""
    return SQLITE_TRIGGERS if dialect == "sqlite" else ()


def _v2_to_v3(dialect: str) -> tuple[str, ...]:
    """Version 3 adds SQLite's trigger that keeps the run row current when a checkpoint
    is inserted (one statement per save); nothing changes on other databases."""
    return dialect_schema(dialect)


# MIGRATIONS[n] upgrades a database from version n to n + 1 (a list of statements per
# dialect name), inside the transaction that records the new version.
MIGRATIONS: dict[int, Callable[[str], tuple[str, ...]]] = {1: _v1_to_v2, 2: _v2_to_v3}

RUN_COLUMNS = (
    "run_id, flow_name, status, created_at, updated_at, last_seq, parent_run_id, parent_seq, "
    "fingerprint, info, lease_owner, lease_expires_at"
)
CHECKPOINT_COLUMNS = "seq, method_name, state, meta, blobs, created_at"

SELECT_RUN = f"SELECT {RUN_COLUMNS} FROM flowkit_runs WHERE run_id = :run_id"

INSERT_RUN = (
    f"INSERT INTO flowkit_runs ({RUN_COLUMNS}) VALUES (:run_id, :flow_name, 'running', :now, "
    ":now, 0, :parent_run_id, :parent_seq, :fingerprint, :info, NULL, NULL) "
    f"ON CONFLICT (run_id) DO NOTHING RETURNING {RUN_COLUMNS}"
)

# begin_run of a run that does not exist yet: created already leased and numbered for its
# first checkpoint, in one statement (no row comes back if the id is taken).
INSERT_STARTED_RUN = (
    f"INSERT INTO flowkit_runs ({RUN_COLUMNS}) VALUES (:run_id, :flow_name, 'running', :now, "
    ":now, 1, NULL, NULL, :fingerprint, :info, :owner, :expires) "
    "ON CONFLICT (run_id) DO NOTHING RETURNING run_id"
)
# The latest checkpoint through the run row, so a run whose latest row is missing is
# reported instead of looking like a fresh run.
SELECT_LATEST = (
    "SELECT r.last_seq, c.seq, c.method_name, c.state, c.meta, c.blobs, c.created_at "
    "FROM flowkit_runs r LEFT JOIN flowkit_checkpoints c "
    "ON c.run_id = r.run_id AND c.seq = r.last_seq WHERE r.run_id = :run_id"
)
SELECT_CHECKPOINT = (
    f"SELECT {CHECKPOINT_COLUMNS} FROM flowkit_checkpoints WHERE run_id = :run_id AND seq = :seq"
)
SELECT_HISTORY = (
    f"SELECT {CHECKPOINT_COLUMNS} FROM flowkit_checkpoints WHERE run_id = :run_id ORDER BY seq"
)
SELECT_ALL_BLOBS = "SELECT hash, data FROM flowkit_blobs WHERE run_id = :run_id"
INSERT_BLOB = (
    "INSERT INTO flowkit_blobs (run_id, hash, data) VALUES (:run_id, :hash, :data) "
    "ON CONFLICT (run_id, hash) DO NOTHING"
)
INSERT_CHECKPOINT = (
    "INSERT INTO flowkit_checkpoints (run_id, seq, method_name, state, meta, blobs, created_at) "
    "VALUES (:run_id, :seq, :method_name, :state, :meta, :blobs, :now)"
)

DELETE_RUN_BLOBS = "DELETE FROM flowkit_blobs WHERE run_id = :run_id"
DELETE_RUN_CHECKPOINTS = "DELETE FROM flowkit_checkpoints WHERE run_id = :run_id"
DELETE_RUN = "DELETE FROM flowkit_runs WHERE run_id = :run_id RETURNING run_id"
PRUNE_CHECKPOINTS = (
    "DELETE FROM flowkit_checkpoints WHERE run_id = :run_id AND seq <= "
    "(SELECT last_seq FROM flowkit_runs WHERE run_id = :run_id) - :keep_last RETURNING seq"
)

ACQUIRE_LEASE = (
    "UPDATE flowkit_runs SET lease_owner = :owner, lease_expires_at = :expires "
    "WHERE run_id = :run_id AND (lease_owner IS NULL OR lease_owner = :owner "
    f"OR lease_expires_at <= :now) RETURNING {RUN_COLUMNS}"
)
# Takeover from a dead holder: compare-and-set on the holder that was read and judged dead.
TAKE_OVER_LEASE = (
    "UPDATE flowkit_runs SET lease_owner = :owner, lease_expires_at = :expires "
    f"WHERE run_id = :run_id AND lease_owner = :holder RETURNING {RUN_COLUMNS}"
)
RENEW_LEASE = (
    "UPDATE flowkit_runs SET lease_expires_at = :expires "
    "WHERE run_id = :run_id AND lease_owner = :owner RETURNING run_id"
)
RELEASE_LEASE = (
    "UPDATE flowkit_runs SET lease_owner = NULL, lease_expires_at = NULL "
    "WHERE run_id = :run_id AND lease_owner = :owner"
)

# The few statements that need a dialect's JSON functions. ``:hashes`` is a JSON list.
_JSON_SQL = {
    "sqlite": {
        "select_blobs": "SELECT hash, data FROM flowkit_blobs WHERE run_id = :run_id "
        "AND hash IN (SELECT value FROM json_each(:hashes))",
        "delete_unreferenced_blobs": "DELETE FROM flowkit_blobs WHERE run_id = :run_id "
        "AND hash NOT IN (SELECT j.value FROM flowkit_checkpoints c, json_each(c.blobs) j "
        "WHERE c.run_id = :run_id AND c.blobs IS NOT NULL)",
    },
    "postgresql": {
        "select_blobs": "SELECT hash, data FROM flowkit_blobs WHERE run_id = :run_id "
        "AND hash IN (SELECT json_array_elements_text(CAST(:hashes AS json)))",
        "delete_unreferenced_blobs": "DELETE FROM flowkit_blobs WHERE run_id = :run_id "
        "AND hash NOT IN (SELECT json_array_elements_text(CAST(c.blobs AS json)) "
        "FROM flowkit_checkpoints c WHERE c.run_id = :run_id AND c.blobs IS NOT NULL)",
    },
    # JSON_CONTAINS compares JSON values, so no collation of a JSON_TABLE column has to
    # match the hash column's; the scan stays within the run's rows (the key's prefix).
    "mysql": {
        "select_blobs": "SELECT hash, data FROM flowkit_blobs WHERE run_id = :run_id "
        "AND JSON_CONTAINS(:hashes, JSON_QUOTE(hash))",
        "delete_unreferenced_blobs": "DELETE FROM flowkit_blobs WHERE run_id = :run_id "
        "AND NOT EXISTS (SELECT 1 FROM flowkit_checkpoints c WHERE c.run_id = :run_id "
        "AND c.blobs IS NOT NULL AND JSON_CONTAINS(c.blobs, JSON_QUOTE(flowkit_blobs.hash)))",
    },
}

SUPPORTED_DIALECTS = frozenset(_JSON_SQL)


def json_sql(dialect: str, name: str) -> str:
    return _JSON_SQL[dialect][name]


@functools.cache
def save_run_sql(*, may_create: bool, check_seq: bool, check_lease: bool) -> str:
    """The statement that takes the next seq for a save: it creates or updates the run row
    and returns the new ``last_seq``, or no row when the CAS or lease guard refuses.

    Built from fixed fragments (values are always bound parameters).
    """
    guards = []
    if check_seq:
        guards.append("flowkit_runs.last_seq = :expected_seq")
    if check_lease:
        # Fencing: a writer that names an owner appends only while the lease is its own.
        # A free or expired lease does not admit it (a paused owner thawed after a
        # takeover must never append); an expired lease nobody took is still its own.
        guards.append("flowkit_runs.lease_owner = :lease_owner")
    # Only last_seq and updated_at: assigning an indexed column rewrites its index entry
    # even with an unchanged value. status and flow_name come back and are set by
    # SET_RUN_STATUS in the rare case they differ.
    assignments = "last_seq = flowkit_runs.last_seq + 1, updated_at = :now"
    returning = "RETURNING last_seq, status, flow_name"
    if may_create:
        where = f" WHERE {' AND '.join(guards)}" if guards else ""
        return (
            "INSERT INTO flowkit_runs (run_id, flow_name, status, created_at, updated_at, "
            "last_seq, info) VALUES (:run_id, :flow_name, :status, :now, :now, 1, '{}') "
            f"ON CONFLICT (run_id) DO UPDATE SET {assignments}{where} {returning}"
        )
    where = " AND ".join(["flowkit_runs.run_id = :run_id", *guards])
    return f"UPDATE flowkit_runs SET {assignments} WHERE {where} {returning}"


@functools.cache
def save_checkpoint_statement(*, check_seq: bool, check_lease: bool, named_flow: bool) -> str:
    """SQLite (with SQLITE_TRIGGERS): a save as one guarded INSERT of checkpoint
    ``last_seq + 1``; the trigger advances the run row. No row comes back when a guard
    refuses (or the run does not exist, or its status or flow name would change): the
    transactional save then runs and decides. Fixed fragments, bound values."""
    guards = ["run_id = :run_id", "status = :status"]
    if check_seq:
        guards.append("last_seq = :expected_seq")
    if check_lease:
        guards.append("lease_owner = :lease_owner")  # fencing, as in save_run_sql
    if named_flow:
        guards.append("flow_name IS NOT NULL")
    return (
        "INSERT INTO flowkit_checkpoints (run_id, seq, method_name, state, meta, blobs, "
        "created_at) SELECT run_id, last_seq + 1, :method_name, :state, :meta, :blobs, :now "
        f"FROM flowkit_runs WHERE {' AND '.join(guards)} RETURNING seq"
    )


SET_RUN_STATUS = (
    "UPDATE flowkit_runs SET status = :status, flow_name = COALESCE(flow_name, :flow_name) "
    "WHERE run_id = :run_id"
)


def update_run_sql(*, status: bool, fingerprint: bool, info: bool, fenced: bool = False) -> str:
    """``fenced``: only while the run's lease names ``:lease_owner`` (no row otherwise)."""
    assignments = ["updated_at = :now"]
    if status:
        assignments.append("status = :status")
    if fingerprint:
        assignments.append("fingerprint = :fingerprint")
    if info:
        assignments.append("info = :info")
    guard = " AND lease_owner = :lease_owner" if fenced else ""
    return (
        f"UPDATE flowkit_runs SET {', '.join(assignments)} WHERE run_id = :run_id{guard} "
        f"RETURNING {RUN_COLUMNS}"
    )


def list_runs_sql(
    *, flow_name: bool, status: bool, parent_run_id: bool, likes: int = 0, after: bool = False
) -> str:
    """``likes``: how many ``info LIKE :like<n>`` conditions (the metadata filter's
    narrowing); ``after``: only runs listed after ``(:after_at, :after_id)`` in the
    listing's order (the next batch of a metadata-filtered listing)."""
    filters = []
    if flow_name:
        filters.append("flow_name = :flow_name")
    if status:
        filters.append("status = :status")
    if parent_run_id:
        filters.append("parent_run_id = :parent_run_id")
    filters.extend(f"info LIKE :like{n} ESCAPE '!'" for n in range(likes))
    if after:
        filters.append(
            "(updated_at < :after_at OR (updated_at = :after_at AND run_id < :after_id))"
        )
    where = f" WHERE {' AND '.join(filters)}" if filters else ""
    return (
        f"SELECT {RUN_COLUMNS} FROM flowkit_runs{where} "
        "ORDER BY updated_at DESC, run_id DESC LIMIT :limit OFFSET :offset"
    )


# SQLite, per connection (TEMP objects: not part of the stored schema, nothing to
# migrate): ``flowkit_writes`` is a view whose rows are never stored; its INSTEAD OF
# triggers turn one INSERT of a few rows into a whole fenced write, so a write that
# needs several rows changed is still ONE statement in autocommit (one call to the
# driver's thread, atomic: a RAISE aborts the whole statement). Its first row says what
# to do (``kind``), the rows after it carry the blobs the checkpoint needs:
#
# - ``start``: a run that does not exist yet: the run row (leased, ``last_seq`` 1) and
#   its first checkpoint; refused if the id exists.
# - ``save``: checkpoint ``expected_seq + 1`` of a run whose ``last_seq`` is
#   ``expected_seq``, whose lease ``lease_owner`` holds and whose status is ``status``
#   (the trigger above advances the run row).
# - ``end``: the same guards except the status: the checkpoint, the new status and the
#   lease given back, together.
# - ``blob``: a blob of the run (skipped if the run has it).
#
# A refusal raises ``WRITE_REFUSED`` and writes nothing; the caller then runs the
# operation as a transaction, which decides what to answer (error, lease takeover...).
WRITE_REFUSED = "flowkit: write refused by its guard"
_WRITE_COLUMNS = (
    "kind",
    "run_id",
    "flow_name",
    "status",
    "fingerprint",
    "info",
    "lease_owner",
    "lease_expires_at",
    "expected_seq",
    "method_name",
    "state",
    "meta",
    "blobs",
    "created_at",
    "hash",
    "data",
)
_FENCED = (
    "SELECT RAISE(ABORT, '{refused}') WHERE NOT EXISTS (SELECT 1 FROM flowkit_runs "
    "WHERE run_id = NEW.run_id AND last_seq = NEW.expected_seq "
    "AND lease_owner = NEW.lease_owner{extra});"
)
_INSERT_NEXT_CHECKPOINT = (
    "INSERT INTO flowkit_checkpoints (run_id, seq, method_name, state, meta, blobs, "
    "created_at) VALUES (NEW.run_id, NEW.expected_seq + 1, NEW.method_name, NEW.state, "
    "NEW.meta, NEW.blobs, NEW.created_at);"
)
SQLITE_CONNECTION_SCHEMA = (
    "CREATE TEMP VIEW IF NOT EXISTS flowkit_writes AS SELECT "
    + ", ".join(f"NULL AS {column}" for column in _WRITE_COLUMNS)
    + " WHERE 0",
    "CREATE TEMP TRIGGER IF NOT EXISTS flowkit_writes_start INSTEAD OF INSERT ON "
    "flowkit_writes WHEN NEW.kind = 'start' BEGIN "
    f"SELECT RAISE(ABORT, '{WRITE_REFUSED}') WHERE EXISTS "
    "(SELECT 1 FROM flowkit_runs WHERE run_id = NEW.run_id); "
    f"INSERT INTO flowkit_runs ({RUN_COLUMNS}) VALUES (NEW.run_id, NEW.flow_name, "
    "'running', NEW.created_at, NEW.created_at, 1, NULL, NULL, NEW.fingerprint, NEW.info, "
    "NEW.lease_owner, NEW.lease_expires_at); "
    "INSERT INTO flowkit_checkpoints (run_id, seq, method_name, state, meta, blobs, "
    "created_at) VALUES (NEW.run_id, 1, NEW.method_name, NEW.state, NEW.meta, NEW.blobs, "
    "NEW.created_at); END",
    "CREATE TEMP TRIGGER IF NOT EXISTS flowkit_writes_save INSTEAD OF INSERT ON "
    "flowkit_writes WHEN NEW.kind = 'save' BEGIN "
    + _FENCED.format(refused=WRITE_REFUSED, extra=" AND status = NEW.status")
    + " "
    + _INSERT_NEXT_CHECKPOINT
    + " END",
    "CREATE TEMP TRIGGER IF NOT EXISTS flowkit_writes_end INSTEAD OF INSERT ON "
    "flowkit_writes WHEN NEW.kind = 'end' BEGIN "
    + _FENCED.format(refused=WRITE_REFUSED, extra="")
    + " UPDATE flowkit_runs SET last_seq = NEW.expected_seq + 1, updated_at = "
    "NEW.created_at, status = NEW.status, lease_owner = NULL, lease_expires_at = NULL "
    "WHERE run_id = NEW.run_id; " + _INSERT_NEXT_CHECKPOINT + " END",
    "CREATE TEMP TRIGGER IF NOT EXISTS flowkit_writes_blob INSTEAD OF INSERT ON "
    "flowkit_writes WHEN NEW.kind = 'blob' BEGIN "
    "INSERT INTO flowkit_blobs (run_id, hash, data) VALUES (NEW.run_id, NEW.hash, NEW.data) "
    "ON CONFLICT (run_id, hash) DO NOTHING; END",
)


@functools.cache
def write_statement(blobs: int) -> str:
    """SQLite: one INSERT into ``flowkit_writes``: the write's row (``:kind`` and the
    checkpoint's fields) and ``blobs`` blob rows (``:hash<n>``, ``:data<n>``)."""
    first = (
        "(:kind, :run_id, :flow_name, :status, :fingerprint, :info, :lease_owner, "
        ":lease_expires_at, :expected_seq, :method_name, :state, :meta, :blobs, :now, "
        "NULL, NULL)"
    )
    rest = [
        f"('blob', :run_id, {', '.join(['NULL'] * 12)}, :hash{n}, :data{n})" for n in range(blobs)
    ]
    return f"INSERT INTO flowkit_writes ({', '.join(_WRITE_COLUMNS)}) VALUES " + ", ".join(
        [first, *rest]
    )
