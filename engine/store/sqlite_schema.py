"""The SQLite store's schema and how its file is opened: WAL journal, pragmas, and numbered
migrations (``PRAGMA user_version`` records how many ran). See engine/store/sqlite.py for why."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from engine.errors import StoreError
from engine.store import audit, history, ordering
from engine.store.aggregates import SQLITE_DONE_MIGRATION, SQLITE_MIGRATION
from engine.store.alerts import MIGRATION as ALERTS_MIGRATION
from engine.store.controls import MIGRATION as CONTROLS_MIGRATION
from engine.store.echoes import ANSWERS_MIGRATION as ECHO_ANSWERS_MIGRATION
from engine.store.echoes import MIGRATION as ECHOES_MIGRATION
from engine.store.label_tallies import SQLITE_LABELS_MIGRATION
from engine.store.quotas import MIGRATION as QUOTAS_MIGRATION
from engine.store.sqlite_claims import MIGRATION as CLAIMS_MIGRATION

BUSY_TIMEOUT_MS = 5000  # another process (a CLI command) may hold the write lock briefly

# Numbered schema migrations: MIGRATIONS[n - 1] takes the schema from version n-1 to n. Append
# new scripts; never edit one that has shipped.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE plans (
        digest      TEXT PRIMARY KEY,
        bundle      TEXT NOT NULL,
        created_at  REAL NOT NULL
    );
    CREATE TABLE events (
        id          TEXT PRIMARY KEY,
        type        TEXT NOT NULL,
        source      TEXT NOT NULL,
        subject     TEXT,
        time        TEXT,
        data        TEXT NOT NULL,
        attributes  TEXT NOT NULL,
        received_at REAL NOT NULL
    );
    CREATE TABLE runs (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order, never reused
        id              TEXT NOT NULL UNIQUE,
        flow            TEXT NOT NULL,
        flow_version    INTEGER NOT NULL,
        plan_digest     TEXT NOT NULL,
        event_id        TEXT NOT NULL REFERENCES events (id),
        state           TEXT NOT NULL,
        key             TEXT NOT NULL,
        ordering_key    TEXT,
        correlation_id  TEXT NOT NULL,
        traceparent     TEXT,
        created_at      REAL NOT NULL,
        updated_at      REAL NOT NULL,
        next_attempt_at REAL,
        reason          TEXT,
        replay_of       TEXT,
        data_override   TEXT,
        has_override    INTEGER NOT NULL DEFAULT 0,
        lease_owner     TEXT,
        lease_until     REAL
    );
    -- Deduplication: one run per (flow, key). A filtered run is a record, not a run: it does not
    -- hold the key, so a later event of the same entity that does match the filter still runs.
    CREATE UNIQUE INDEX runs_dedup ON runs (flow, key) WHERE state != 'filtered';
    CREATE INDEX runs_key ON runs (key, seq);
    CREATE INDEX runs_flow ON runs (flow, seq);
    CREATE INDEX runs_state ON runs (state, seq);
    CREATE INDEX runs_replay_of ON runs (replay_of) WHERE replay_of IS NOT NULL;
    -- claim scans the runnable runs in arrival order ...
    CREATE INDEX runs_runnable ON runs (seq) WHERE state IN ('pending', 'running', 'waiting');
    -- ... and asks whether an older run with the same ordering key still blocks it.
    CREATE INDEX runs_blocking ON runs (ordering_key, seq)
        WHERE state IN ('pending', 'running', 'waiting', 'parked');
    CREATE INDEX runs_waiting ON runs (next_attempt_at) WHERE state = 'waiting';
    CREATE TABLE steps (
        run_id        TEXT NOT NULL REFERENCES runs (id),
        step_id       TEXT NOT NULL,
        state         TEXT NOT NULL,
        output        TEXT NOT NULL,
        input_digest  TEXT,
        error         TEXT,
        attempts      TEXT NOT NULL,
        updated_at    REAL NOT NULL,
        PRIMARY KEY (run_id, step_id)
    ) WITHOUT ROWID;
    CREATE TABLE outbox (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id        TEXT NOT NULL REFERENCES runs (id),
        event         TEXT NOT NULL,
        created_at    REAL NOT NULL,
        dispatched_at REAL
    );
    CREATE INDEX outbox_pending ON outbox (seq) WHERE dispatched_at IS NULL;
    CREATE TABLE audit (
        seq     INTEGER PRIMARY KEY AUTOINCREMENT,
        at      REAL NOT NULL,
        actor   TEXT NOT NULL,
        action  TEXT NOT NULL,
        run_id  TEXT,
        detail  TEXT NOT NULL
    );
    CREATE INDEX audit_run ON audit (run_id, seq);
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN
        SELECT RAISE(ABORT, 'the audit log is append-only');
    END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN
        SELECT RAISE(ABORT, 'the audit log is append-only');
    END;
    """,
    # 2: a run's data generation, bumped when an operator resumes it with corrected data, so the
    # calls that run again carry new idempotency keys (a new logical write).
    """
    ALTER TABLE runs ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
    """,
    # 3: claims find each ordering key's oldest unfinished run by seeking runs_blocking key by
    # key, and the runs without an ordering key in runs_free; runs_runnable, which claims
    # scanned run by run (every run queued behind a busy key, at every claim), goes.
    """
    DROP INDEX runs_runnable;
    DROP INDEX runs_blocking;
    CREATE INDEX runs_blocking ON runs (ordering_key, seq)
        WHERE ordering_key IS NOT NULL AND state IN ('pending', 'running', 'waiting', 'parked');
    CREATE INDEX runs_free ON runs (seq)
        WHERE ordering_key IS NULL AND state IN ('pending', 'running', 'waiting');
    """,
    # 4: audit entries are hash-chained (engine/store/audit.py).
    audit.SQLITE_MIGRATION,
    # 5: the aggregates business metrics read (engine/store/aggregates.py), kept by triggers.
    SQLITE_MIGRATION,
    # 6: what the timed triggers remember across restarts: a schedule's last tick, a poll's
    # cursor (engine/runtime/schedules.py, polling.py), one JSON value per name; and the results
    # of Reconciliations, one per (name, tick): the row claims the tick for one replica.
    """
    CREATE TABLE trigger_state (
        name        TEXT PRIMARY KEY,
        value       TEXT NOT NULL,
        updated_at  REAL NOT NULL
    );
    CREATE TABLE reconciliations (
        seq         INTEGER PRIMARY KEY,
        name        TEXT NOT NULL,
        tick        TEXT NOT NULL,
        started_at  REAL NOT NULL,
        state       TEXT NOT NULL,
        report      TEXT,
        UNIQUE (name, tick)
    );
    """,
    # 7: paused flows and Systems, and circuit breakers that are not closed.
    CONTROLS_MIGRATION,
    # 8: the call budgets of Systems (engine/store/quotas.py), shared by replicas.
    QUOTAS_MIGRATION,
    # 9: alerts: subjects firing and last notified, and the notifications (an outbox).
    ALERTS_MIGRATION,
    # 10: run history that is never rewritten: generations, reasons, reset step records.
    history.SQLITE_MIGRATION,
    # 11: `orderingKey: {whileParked: continue}`: a parked run may let its key go.
    ordering.MIGRATION,
    # 12: echo fingerprints of writes, and what was last known of each written record.
    ECHOES_MIGRATION,
    # 13: echo fingerprints completed from the write's answer (a create's id, the record as held).
    ECHO_ANSWERS_MIGRATION,
    # 14: metric labels resolved from runs' data and steps (engine/store/label_tallies.py).
    SQLITE_LABELS_MIGRATION,
    # 15: a step compensated after it completed stays done for `beforeStep` (aggregates).
    SQLITE_DONE_MIGRATION,
    # 16: claims look for the heads among the oldest runs holding a key first (runs_held).
    CLAIMS_MIGRATION,
)


# -- opening -------------------------------------------------------------------------------------
def connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves.
    # A statement cache large enough for the batched accepts' statement texts (3 x _CHUNK).
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, cached_statements=512
    )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


def open_connection(path: Path) -> tuple[sqlite3.Connection, list[int]]:
    """The writer's connection: create the file if needed, switch it to WAL and bring the schema
    up to date. It never checkpoints: engine/store/sqlite_checkpoints.py does, off its path."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(path)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open the SQLite store {path}: {exc}") from exc
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreError(f"{path}: SQLite refused WAL mode (journal_mode is {mode!r})")
        # NORMAL is durable against process crashes in WAL mode: see the module docstring.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA journal_size_limit = 67108864")
        # Statement journals (savepoints, multi-row upserts) in memory, not in a temporary
        # file opened and unlinked per transaction; and a page cache that holds the hot index
        # pages of a large store (64 MiB, only the writer's).
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("PRAGMA cache_size = -65536")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        applied = _migrate(conn, MIGRATIONS)
        conn.execute("PRAGMA busy_timeout = 0")  # from now on `_begin` waits for the lock
        return conn, applied
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot open the SQLite store {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise


def _migrate(conn: sqlite3.Connection, migrations: Sequence[str]) -> list[int]:
    """Apply the migrations the database has not seen; return their numbers."""
    conn.execute("BEGIN IMMEDIATE")  # re-read the version under the write lock: no double apply
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(migrations):
            raise StoreError(
                f"the database schema is version {version}, newer than this Syncline "
                f"understands ({len(migrations)}); upgrade Syncline"
            )
        applied = list(range(version + 1, len(migrations) + 1))
        for number in applied:
            for statement in _statements(migrations[number - 1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return applied


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements (executescript would commit our transaction)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""
    if buffer.strip():
        yield buffer  # comments only, or an incomplete statement SQLite will name


def store_error(what: str, exc: sqlite3.Error) -> StoreError:
    error = StoreError(f"{what}: {exc}")
    error.__cause__ = exc
    return error
