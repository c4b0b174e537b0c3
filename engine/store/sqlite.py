"""The embedded store: one SQLite file (the runtime uses `<project>/.syncline/syncline.db`).

How it is built, and why:

- WAL journal with ``synchronous=NORMAL``. In WAL mode a commit appends the transaction to the
  -wal file with write(2) before COMMIT returns, so a committed (acknowledged) write survives the
  *process* dying at any point, SIGKILL included: the data is in the OS page cache and the next
  open recovers it from the WAL. Only an OS crash or power loss can lose the last commits; the WAL
  is fsynced when it is checkpointed. FULL would fsync on every commit and, per BASELINES.md,
  costs ~40% of acceptance throughput.
- One writer *process* owns the only write connection (engine/store/writer.py says why a
  process). Every write is a named job function with its arguments; the writer takes everything
  that queued, runs each job in its own SAVEPOINT inside one transaction (a failing write rolls
  back only itself), commits once and then answers the callers' futures. No linger: a batch is
  whatever queued while the previous commit ran, which BASELINES.md measured as the winner.
  Durability costs one commit per batch, not per event.
- Reads run on a small pool of read-only connections in worker threads. Every read is its own
  read transaction, so it sees everything committed before it started (and one consistent
  snapshot when it runs several queries).
- The schema is a numbered list of SQL scripts; ``PRAGMA user_version`` records how many ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from engine.errors import StateConflict, StoreError
from engine.store.base import (
    CANCEL_ENDS,
    CANCELLED,
    Acceptance,
    Checkpoint,
    EventRecord,
    NewRun,
    OutboxItem,
    Reason,
    RunRecord,
    StepRecord,
    Store,
)
from engine.store.rows import (
    AUDIT_COLUMNS,
    EVENT_COLUMNS,
    RUN_COLUMNS,
    STEP_COLUMNS,
    audit_entry,
    cancel_request,
    dumps,
    event_record,
    event_row,
    fields,
    outbox_item,
    reason_json,
    run_record,
    run_row,
    state_change,
    step_params,
    step_record,
    with_work,
)
from engine.store.writer import Job, WriterProcess

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
)



# -- opening -------------------------------------------------------------------------------------
def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves.
    # A statement cache large enough for the batched accepts' statement texts (3 x _CHUNK).
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, cached_statements=512
    )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


def _open_writer(path: Path) -> tuple[sqlite3.Connection, list[int]]:
    """Create the file if needed, switch it to WAL and bring the schema up to date."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(path)
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


def _store_error(what: str, exc: sqlite3.Error) -> StoreError:
    error = StoreError(f"{what}: {exc}")
    error.__cause__ = exc
    return error


# -- the writer process's side (see engine/store/writer.py) -------------------------------------
open_writer = _open_writer


def commit_batch(conn: sqlite3.Connection, jobs: list[Job]) -> bool:
    """Run `jobs` in one transaction, each in its own savepoint (accepts together as one bulk
    write); set each job's result or error. True if the transaction committed."""
    accepts = [job for job in jobs if job.fn is _tx_accept]
    try:
        _begin(conn)
        if len(accepts) > 1:
            _accept_batch(conn, accepts)
        for job in jobs:
            if len(accepts) <= 1 or job.fn is not _tx_accept:
                _run_job(conn, job)
        conn.execute("COMMIT")
    except sqlite3.Error as exc:  # the transaction as a whole is lost: nothing was written
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        error = _store_error("the SQLite store could not commit", exc)
        for job in jobs:
            job.error = job.error or error
        return False
    return True


def _begin(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, trying again every 0.2 ms while another process holds the write lock
    (for up to BUSY_TIMEOUT_MS). SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25... ms
    between tries: with an ingest node and a worker on one file, those sleeps were the p99."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(0.0002)


def _run_job(conn: sqlite3.Connection, job: Job) -> None:
    """Run one write in its own savepoint so that its failure undoes only itself."""
    conn.execute("SAVEPOINT job")
    try:
        job.result = job.fn(conn, *job.args)
    except Exception as exc:
        # If the error already ended the transaction this raises, and the batch fails as a whole.
        conn.execute("ROLLBACK TO job")
        conn.execute("RELEASE job")
        job.error = (
            _store_error("SQLite write failed", exc) if isinstance(exc, sqlite3.Error) else exc
        )
    else:
        conn.execute("RELEASE job")


# -- the readers ---------------------------------------------------------------------------------
class _Readers:
    """A pool of read-only connections, each used by one worker thread at a time."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._closed = False

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(conn, *args)` in one read transaction (one consistent snapshot)."""
        conn = self._acquire()
        try:
            conn.execute("BEGIN")
            try:
                return fn(conn, *args)
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite read failed: {exc}") from exc
        finally:
            self._release(conn)

    def _acquire(self) -> sqlite3.Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        try:
            conn = _connect(self._path)
            conn.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open a read connection to {self._path}: {exc}") from exc
        return conn

    def _release(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close the idle connections now, and the busy ones when their read ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


# -- rows <-> records ----------------------------------------------------------------------------
def _run_records(conn: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> list[RunRecord]:
    """Build records, deriving `replayed_by` (runs whose replay_of is this one) in one query."""
    replays: dict[str, list[str]] = {}
    ids = dumps([row[0] for row in rows])
    for original, replay in conn.execute(
        "SELECT replay_of, id FROM runs "
        "WHERE replay_of IN (SELECT value FROM json_each(?)) ORDER BY seq",
        (ids,),
    ):
        replays.setdefault(original, []).append(replay)
    return [run_record(row, replays.get(row[0], [])) for row in rows]


# -- write transactions (run in the writer process, inside a savepoint) -------------------------
def _tx_accept(
    conn: sqlite3.Connection, event: tuple[Any, ...], runs: Sequence[NewRun]
) -> list[Acceptance]:
    """One accept: the batch of one (see `_tx_accept_many`)."""
    return _tx_accept_many(conn, [(event, runs)])[0]


# -- accepts batched: the hot path of ingest ------------------------------------------------------
# Under load the writer takes many accepts at once. Run one by one, each costs a savepoint, a
# dedup SELECT and two INSERTs: ~5 statements, each with its own parameter binding and SQLite
# VM start-up. Batched, a whole batch costs four statements (events, dedup lookup, runs; plus a
# savepoint), with the same result as running the accepts in queue order: an event id stored
# once, the first run of a (flow, key) accepted and every later one a duplicate naming it, filtered
# runs recorded without holding their key.
_EVENT_COLUMNS = "(id, type, source, subject, time, data, attributes, received_at)"
_RUN_COLUMNS = (
    "(id, flow, flow_version, plan_digest, event_id, state, key, ordering_key, correlation_id, "
    "traceparent, created_at, updated_at, replay_of)"
)
_INSERT_EVENTS = "INSERT INTO events " + _EVENT_COLUMNS
_INSERT_RUNS = "INSERT INTO runs " + _RUN_COLUMNS
_CHUNK = 64  # rows per multi-row statement: at most 13 * 64 parameters, few statement texts


def _accept_batch(conn: sqlite3.Connection, jobs: Sequence[Job]) -> None:
    """Run queued `_tx_accept` jobs as one bulk write; if that fails, undo it and run them one
    by one, so that a failing accept fails alone (with its own error) and the writer lives."""
    conn.execute("SAVEPOINT accepts")
    try:
        results = _tx_accept_many(conn, [job.args for job in jobs])
    except Exception:  # noqa: BLE001 - whatever it was, the one-by-one replay reports it per job
        conn.execute("ROLLBACK TO accepts")
        conn.execute("RELEASE accepts")
        for job in jobs:
            _run_job(conn, job)
        return
    conn.execute("RELEASE accepts")
    for job, result in zip(jobs, results, strict=True):
        job.result = result


def _tx_accept_many(
    conn: sqlite3.Connection, items: Sequence[tuple[tuple[Any, ...], Sequence[NewRun]]]
) -> list[list[Acceptance]]:
    """`_tx_accept` of every item, in order, in a fixed number of statements."""
    events = [event for event, _ in items]
    _insert_rows(conn, _INSERT_EVENTS, "ON CONFLICT (id) DO NOTHING", events, 8)
    holders = _key_holders(conn, {(run.flow, run.key) for _, runs in items for run in runs})
    results: list[list[Acceptance]] = []
    rows: list[tuple[Any, ...]] = []
    for event, runs in items:
        event_id, now = event[0], event[-1]
        acceptances = []
        for run in runs:
            holder = holders.get((run.flow, run.key))
            if holder is not None:
                acceptances.append(Acceptance(holder[0], "duplicate", holder[1]))
                continue
            rows.append(run_row(run, event_id, now))
            if run.state == "filtered":
                acceptances.append(Acceptance(run.id, "filtered", run.correlation_id))
            else:
                holders[(run.flow, run.key)] = (run.id, run.correlation_id)
                acceptances.append(Acceptance(run.id, "accepted", run.correlation_id))
        results.append(acceptances)
    _insert_rows(conn, _INSERT_RUNS, "", rows, 13)
    return results


def _key_holders(
    conn: sqlite3.Connection, keys: set[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str, str]]:
    """(flow, key) -> (run id, correlation id) of the run holding each of `keys`, if any."""
    found: dict[tuple[str, str], tuple[str, str]] = {}
    wanted = list(keys)
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        values = ", ".join(["(?, ?)"] * len(chunk))
        params = [value for pair in chunk for value in pair]
        for flow, key, run_id, correlation in conn.execute(
            f"WITH k (flow, key) AS (VALUES {values}) "
            "SELECT r.flow, r.key, r.id, r.correlation_id FROM k "
            "CROSS JOIN runs AS r INDEXED BY runs_dedup "
            "ON r.flow = k.flow AND r.key = k.key AND r.state != 'filtered'",
            params,
        ):
            found[(flow, key)] = (run_id, correlation)
    return found


def _insert_rows(
    conn: sqlite3.Connection, head: str, tail: str, rows: Sequence[tuple[Any, ...]], width: int
) -> None:
    """Multi-row INSERTs of `rows` (`width` columns each), `_CHUNK` rows per statement."""
    one = "(" + ", ".join("?" * width) + ")"
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        values = ", ".join([one] * len(chunk))
        conn.execute(f"{head} VALUES {values} {tail}", [v for row in chunk for v in row])



# A run may execute now if it is due, and no older run with its ordering key is unfinished. The
# candidates are each ordering key's oldest unfinished run (the heads: one seek per key into
# runs_blocking, walking the keys in order) and the runs without a key (runs_free, in arrival
# order); the due ones are claimed oldest first. A claim costs one seek per busy key, not one per
# queued run. (The WHERE clauses repeat the partial indexes' so that SQLite can use them.)
_BLOCKING = "state IN ('pending', 'running', 'waiting', 'parked')"
_DUE = (
    "(state = 'pending' OR (state = 'waiting' AND next_attempt_at <= :now) "
    "OR (state = 'running' AND lease_until <= :now))"
)
CLAIM_SQL = f"""
WITH RECURSIVE keys(k) AS (
    SELECT (SELECT min(ordering_key) FROM runs INDEXED BY runs_blocking
            WHERE ordering_key IS NOT NULL AND {_BLOCKING})
    UNION ALL
    SELECT (SELECT min(ordering_key) FROM runs INDEXED BY runs_blocking
            WHERE ordering_key > keys.k AND {_BLOCKING})
    FROM keys WHERE keys.k IS NOT NULL
), heads(seq) AS (
    SELECT (SELECT seq FROM runs INDEXED BY runs_blocking
            WHERE ordering_key = keys.k AND {_BLOCKING} ORDER BY seq LIMIT 1)
    FROM keys WHERE keys.k IS NOT NULL
)
SELECT {RUN_COLUMNS} FROM (
    SELECT {RUN_COLUMNS} FROM runs WHERE seq IN (SELECT seq FROM heads) AND {_DUE}
    UNION ALL
    SELECT * FROM (
        SELECT {RUN_COLUMNS} FROM runs INDEXED BY runs_free
        WHERE ordering_key IS NULL AND state IN ('pending', 'running', 'waiting') AND {_DUE}
        ORDER BY seq LIMIT :limit
    )
)
ORDER BY seq
LIMIT :limit
"""


def _tx_claim(
    conn: sqlite3.Connection, worker: str, limit: int, now: float, lease: float
) -> list[RunRecord]:
    rows = conn.execute(CLAIM_SQL, {"now": now, "limit": limit}).fetchall()
    if not rows:
        return []
    until, wall = now + lease, time.time()
    conn.execute(
        "UPDATE runs SET state = 'running', lease_owner = ?, lease_until = ?, updated_at = ?, "
        "next_attempt_at = NULL WHERE seq IN (SELECT value FROM json_each(?))",
        (worker, until, wall, dumps([row[12] for row in rows])),
    )
    records = _run_records(conn, rows)
    for record in records:
        record.state, record.updated_at, record.next_attempt_at = "running", wall, None
    run_ids = dumps([record.id for record in records])
    events = conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE id IN (SELECT value FROM json_each(?))",
        (dumps([record.event_id for record in records]),),
    ).fetchall()
    steps = conn.execute(
        f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id IN (SELECT value FROM json_each(?))",
        (run_ids,),
    ).fetchall()
    return with_work(records, events, steps)


def _tx_renew(conn: sqlite3.Connection, worker: str, run_ids: Sequence[str], until: float) -> None:
    conn.executemany(
        "UPDATE runs SET lease_until = ? WHERE id = ? AND lease_owner = ? AND state = 'running'",
        [(until, run_id, worker) for run_id in run_ids],
    )


def _tx_checkpoint(
    conn: sqlite3.Connection,
    cp: Checkpoint,
    step: dict[str, Any] | None,
    outbox_rows: list[tuple[Any, ...]],
) -> Reason | None:
    row = conn.execute("SELECT state, reason FROM runs WHERE id = ?", (cp.run_id,)).fetchone()
    if row is None:
        raise StoreError(f"checkpoint for unknown run {cp.run_id!r}")
    cancel = cancel_request(*row)
    run_state = cp.run_state
    acknowledged = cp.reason is not None and cp.reason.code == CANCELLED
    if cancel is not None and run_state not in CANCEL_ENDS and not acknowledged:
        run_state = None  # the operator's cancel request stands (see Store.checkpoint)
    if step is not None:
        conn.execute(
            "INSERT OR REPLACE INTO steps (run_id, step_id, state, output, input_digest, error, "
            "attempts, updated_at) VALUES (:run_id, :step_id, :state, :output, :input_digest, "
            ":error, :attempts, :updated_at)",
            step,
        )
    sets, params = ["updated_at = ?"], [time.time()]  # type: list[str], list[Any]
    if run_state is not None:
        sets += ["state = ?", "next_attempt_at = ?", "reason = ?"]
        params += [run_state, cp.next_attempt_at, reason_json(cp.reason)]
    if cp.clear_lease or (run_state is not None and run_state != "running"):
        sets += ["lease_owner = NULL", "lease_until = NULL"]
    conn.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id = ?", [*params, cp.run_id])
    conn.executemany("INSERT INTO outbox (run_id, event, created_at) VALUES (?, ?, ?)", outbox_rows)
    return cancel


def _tx_set_run_state(
    conn: sqlite3.Connection, change: dict[str, Any], audit: dict[str, Any]
) -> RunRecord:
    run_id, state = change["run_id"], change["state"]
    row = conn.execute("SELECT state FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise StoreError(f"run {run_id!r} does not exist")
    if change["expect"] and row[0] not in change["expect"]:
        expected = " or ".join(repr(s) for s in change["expect"])
        raise StateConflict(
            f"run {run_id!r} is {row[0]!r}, not {expected}: cannot make it {state!r}"
        )
    sets = "state = ?, reason = ?, updated_at = ?, next_attempt_at = NULL"
    params: list[Any] = [state, change["reason"], audit["at"]]
    if state != "running":
        sets += ", lease_owner = NULL, lease_until = NULL"
    if change["bump_generation"]:
        sets += ", generation = generation + 1"
    if change["set_override"]:
        sets += ", data_override = ?, has_override = 1"
        params.append(change["data_override"])
    conn.execute(f"UPDATE runs SET {sets} WHERE id = ?", [*params, run_id])
    conn.executemany(
        "DELETE FROM steps WHERE run_id = ? AND step_id = ?",
        [(run_id, step_id) for step_id in change["reset_steps"]],
    )
    detail = dumps({"from": row[0], **audit["detail"]})
    _tx_audit(conn, (audit["at"], audit["actor"], audit["action"], run_id, detail))
    (record,) = _run_records(
        conn, conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchall()
    )
    return record


def _tx_dispatch(
    conn: sqlite3.Connection, item_seq: int, event: tuple[Any, ...], runs: Sequence[NewRun]
) -> list[Acceptance]:
    acceptances = _tx_accept(conn, event, runs)
    conn.execute(
        "UPDATE outbox SET dispatched_at = ? WHERE seq = ? AND dispatched_at IS NULL",
        (event[-1], item_seq),
    )
    return acceptances


def _tx_save_plan(conn: sqlite3.Connection, digest: str, bundle: str, now: float) -> None:
    conn.execute(
        "INSERT INTO plans (digest, bundle, created_at) VALUES (?, ?, ?) "
        "ON CONFLICT (digest) DO NOTHING",
        (digest, bundle, now),
    )


def _tx_audit(conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    conn.execute(
        "INSERT INTO audit (at, actor, action, run_id, detail) VALUES (?, ?, ?, ?, ?)", row
    )


# -- reads (run on a reader thread, inside a read transaction) -----------------------------------
def _q_run(conn: sqlite3.Connection, run_id: str) -> RunRecord | None:
    rows = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchall()
    return _run_records(conn, rows)[0] if rows else None


def _q_list_runs(conn: sqlite3.Connection, filters: dict[str, Any], limit: int) -> list[RunRecord]:
    where, params = [], []
    for column, value in filters.items():
        if value is not None:
            where.append("seq < ?" if column == "before_seq" else f"{column} = ?")
            params.append(value)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(
        f"SELECT {RUN_COLUMNS} FROM runs {clause} ORDER BY seq DESC LIMIT ?", [*params, limit]
    ).fetchall()
    return _run_records(conn, rows)


def _q_event(conn: sqlite3.Connection, event_id: str) -> EventRecord | None:
    row = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ?", (event_id,)).fetchone()
    return None if row is None else event_record(row)


def _q_next_due(conn: sqlite3.Connection) -> float | None:
    # A waiting run that an older run of its ordering key blocks is not due, whatever its time:
    # answering its (past) time would make the scheduler spin.
    row = conn.execute(
        "SELECT r.next_attempt_at FROM runs AS r INDEXED BY runs_waiting "
        "WHERE r.state = 'waiting' AND (r.ordering_key IS NULL OR NOT EXISTS ("
        "  SELECT 1 FROM runs AS o INDEXED BY runs_blocking "
        "  WHERE o.state IN ('pending', 'running', 'waiting', 'parked') "
        "    AND o.ordering_key = r.ordering_key AND o.seq < r.seq)) "
        "ORDER BY r.next_attempt_at LIMIT 1"
    ).fetchone()
    return row[0] if row else None


def _q_all(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    return conn.execute(sql, params).fetchall()


# -- the store -----------------------------------------------------------------------------------
class SQLiteStore(Store):
    """The embedded `Store`: one SQLite file in WAL mode, group-committed by a writer process.

    `path` is the database file; missing parent directories are created. `max_batch` caps how
    many queued writes one commit carries (default: all that queued; 1 gives one commit per write,
    the baseline the benchmark compares against). Use ``async with SQLiteStore(path) as store:``
    or call `open()` and `close()`.

    `commits` and `writes` count committed transactions and the writes they carried.
    `migrations_applied` lists the schema migrations the last `open()` applied.
    """

    def __init__(self, path: str | Path, *, max_batch: int | None = None) -> None:
        self.path = Path(path)
        self.migrations_applied: list[int] = []
        self._max_batch = max_batch or sys.maxsize
        self._writer: WriterProcess | None = None
        self._readers: _Readers | None = None
        self._closed = False

    @property
    def commits(self) -> int:
        """Transactions committed by the writer since `open()`."""
        return self._writer.commits if self._writer else 0

    @property
    def writes(self) -> int:
        """Writes carried by those transactions (writes / commits = mean batch size)."""
        return self._writer.writes if self._writer else 0

    # lifecycle ---------------------------------------------------------------------------------
    async def open(self) -> None:
        """Create or open the file, apply pending migrations, start the writer process."""
        if self._writer is not None:
            raise StoreError(f"the SQLite store {self.path} is already open")
        self._writer = WriterProcess(__name__, self.path.resolve(), self._max_batch)
        try:
            self.migrations_applied = await self._writer.start()
        except BaseException:
            self._writer = None
            raise
        self._readers = _Readers(self.path)

    async def close(self) -> None:
        """Commit every queued write, stop the writer process and close all connections."""
        if self._writer is None or self._closed:
            return
        self._closed = True
        await self._writer.stop()
        assert self._readers is not None
        self._readers.close()

    def _write(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        if self._writer is None or self._closed:
            raise StoreError(f"the SQLite store {self.path} is not open")
        return self._writer.submit(fn, args)

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._readers is None or self._closed:
            raise StoreError(f"the SQLite store {self.path} is not open")
        return await asyncio.to_thread(self._readers.run, fn, *args)

    # plans -------------------------------------------------------------------------------------
    async def save_plan(self, digest: str, bundle: dict[str, Any]) -> None:
        """Keep a compiled bundle by digest; saving a digest again changes nothing."""
        await self._write(_tx_save_plan, digest, dumps(bundle), time.time())

    async def load_plan(self, digest: str) -> dict[str, Any] | None:
        """The bundle saved under `digest`, or None."""
        rows = await self._read(_q_all, "SELECT bundle FROM plans WHERE digest = ?", (digest,))
        return json.loads(rows[0][0]) if rows else None

    # ingest ------------------------------------------------------------------------------------
    async def accept(self, event: EventRecord, runs: Sequence[NewRun]) -> list[Acceptance]:
        """Store the event (once per event id) and its runs in one transaction.

        A NewRun whose (flow, key) an existing run holds answers `duplicate` with that run. A
        filtered run is recorded but does not hold its key (see the `runs_dedup` index)."""
        return await self._write(_tx_accept, event_row(event, time.time()), tuple(runs))

    # claiming work -----------------------------------------------------------------------------
    async def claim(self, worker: str, limit: int, now: float, lease: float) -> list[RunRecord]:
        """Lease up to `limit` runs that may execute now, oldest first (see `Store.claim`)."""
        if limit <= 0:
            return []
        return await self._write(_tx_claim, worker, limit, now, lease)

    async def renew(self, worker: str, run_ids: Sequence[str], until: float) -> None:
        """Extend the leases `worker` still holds on these running runs to `until`."""
        await self._write(_tx_renew, worker, tuple(run_ids), until)

    async def next_due(self) -> float | None:
        """Earliest next_attempt_at of a waiting run that no older run of its key blocks."""
        return await self._read(_q_next_due)

    # execution ---------------------------------------------------------------------------------
    async def checkpoint(self, cp: Checkpoint) -> Reason | None:
        """Commit a step record, the run's new state and the emitted events atomically; return
        the run's cancel request, if any (see `Store.checkpoint`).

        `next_attempt_at` and `reason` are written together with a new `run_state` (so leaving
        `waiting` clears them); the lease is cleared when asked or when the state is not
        `running`."""
        step = None
        if cp.step is not None:
            if cp.step.run_id != cp.run_id:
                raise StoreError(f"checkpoint of run {cp.run_id!r} carries a step of another run")
            step = step_params(cp.run_id, cp.step)
        now = time.time()
        outbox_rows = [(cp.run_id, dumps(fields(event)), now) for event in cp.emitted]
        return await self._write(_tx_checkpoint, cp, step, outbox_rows)

    async def get_event(self, event_id: str) -> EventRecord | None:
        """The stored event, or None."""
        return await self._read(_q_event, event_id)

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run with `replayed_by` filled in, or None."""
        return await self._read(_q_run, run_id)

    async def get_steps(self, run_id: str) -> dict[str, StepRecord]:
        """The run's step records by step id."""
        rows = await self._read(
            _q_all,
            f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ?",
            (run_id,),
        )
        return {row[1]: step_record(row) for row in rows}

    async def list_runs(
        self,
        *,
        flow: str | None = None,
        state: str | None = None,
        key: str | None = None,
        before_seq: int | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        """Runs newest first; pass the last run's `seq` as `before_seq` for the next page."""
        filters = {"flow": flow, "state": state, "key": key, "before_seq": before_seq}
        return await self._read(_q_list_runs, filters, limit)

    async def count_runs(self) -> dict[tuple[str, str], int]:
        """(flow, state) -> number of runs."""
        rows = await self._read(
            _q_all, "SELECT flow, state, count(*) FROM runs GROUP BY flow, state", ()
        )
        return {(flow, state): count for flow, state, count in rows}

    # operator actions --------------------------------------------------------------------------
    async def set_run_state(
        self,
        run_id: str,
        state: str,
        *,
        expect: Sequence[str] = (),
        reason: Reason | None = None,
        data_override: Any = None,
        set_override: bool = False,
        reset_steps: Sequence[str] = (),
        actor: str = "system",
        action: str | None = None,
        bump_generation: bool = False,
    ) -> RunRecord:
        """Change a run's state as `Store.set_run_state` says, with an audit entry.

        The reason is replaced (None clears it), next_attempt_at is cleared, and so is the lease
        unless the new state is `running`. Raises StoreError naming the run and its actual state
        when `expect` is given and not met; then nothing is written."""
        change = {
            "run_id": run_id,
            "state": state,
            "expect": tuple(expect),
            "reason": reason_json(reason),
            "set_override": set_override,
            "data_override": dumps(data_override),
            "reset_steps": tuple(reset_steps),
            "bump_generation": bump_generation,
        }
        detail = state_change(state, reason, reset_steps, set_override)
        audit = {
            "at": time.time(),
            "actor": actor,
            "action": action or f"set-state:{state}",
            "detail": detail,
        }
        return await self._write(_tx_set_run_state, change, audit)

    # events out --------------------------------------------------------------------------------
    async def outbox(self, limit: int) -> list[OutboxItem]:
        """Emitted events not yet dispatched, oldest first."""
        rows = await self._read(
            _q_all,
            "SELECT seq, run_id, event FROM outbox WHERE dispatched_at IS NULL "
            "ORDER BY seq LIMIT ?",
            (limit,),
        )
        return [outbox_item(row) for row in rows]

    async def dispatch(self, item: OutboxItem, runs: Sequence[NewRun]) -> list[Acceptance]:
        """Store the emitted event, create its runs (deduplicated) and mark the item dispatched,
        in one transaction."""
        event = event_row(item.event, time.time())
        return await self._write(_tx_dispatch, item.seq, event, tuple(runs))

    # audit -------------------------------------------------------------------------------------
    async def audit(self, actor: str, action: str, run_id: str | None, detail: Any) -> None:
        """Append an entry to the audit log (which refuses UPDATE and DELETE)."""
        await self._write(_tx_audit, (time.time(), actor, action, run_id, dumps(detail)))

    async def audit_log(self, run_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Audit entries, newest first, optionally of one run:
        ``{seq, at, actor, action, run_id, detail}``."""
        where, params = ("WHERE run_id = ?", (run_id, limit)) if run_id else ("", (limit,))
        rows = await self._read(
            _q_all,
            f"SELECT {AUDIT_COLUMNS} FROM audit {where} "
            "ORDER BY seq DESC LIMIT ?",
            params,
        )
        return [audit_entry(row) for row in rows]


# The job functions a writer process runs by name (engine/store/writer.py).
WRITES = {
    fn.__name__: fn
    for fn in (
        _tx_accept,
        _tx_claim,
        _tx_renew,
        _tx_checkpoint,
        _tx_set_run_state,
        _tx_dispatch,
        _tx_save_plan,
        _tx_audit,
    )
}
