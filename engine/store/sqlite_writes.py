"""The SQLite store's writes: the job functions its writer process runs (engine/store/writer.py),
each inside a savepoint of one group-committed transaction, and `commit_batch`, which runs a
batch. Claims and batched accepts, the hot paths, are here."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.errors import StoreError
from engine.store import audit, history
from engine.store.aggregates import sqlite_sync
from engine.store.base import (
    Checkpoint,
    Reason,
    RunRecord,
    StateChange,
)
from engine.store.controls import run_statements
from engine.store.label_backfill import tx_relabel
from engine.store.label_tallies import admit_sqlite, forget_keys
from engine.store.rows import (
    RUN_COLUMNS,
    accept_rows,
    checkpoint_update,
    dumps,
    set_labels,
    state_update,
)
from engine.store.sqlite_checkpoints import Checkpoints
from engine.store.sqlite_claims import run_records, tx_claim
from engine.store.sqlite_schema import BUSY_TIMEOUT_MS, open_connection, store_error
from engine.store.writer_child import Job

__all__ = ["WRITES", "close_writer", "commit_batch", "open_writer"]

AcceptanceRow = tuple[str, str, str]  # an Acceptance as a plain tuple: pickles without a reduce


_checkpoints: Checkpoints | None = None  # the writer process's (it has one connection)


def open_writer(path: Path) -> tuple[sqlite3.Connection, list[int]]:
    """The write connection (the schema brought up to date; the migrations applied), and the
    thread that checkpoints its WAL (engine/store/sqlite_checkpoints.py)."""
    global _checkpoints
    conn, applied = open_connection(path)
    _checkpoints = Checkpoints(path)
    return conn, applied


def close_writer(conn: sqlite3.Connection) -> None:
    global _checkpoints
    if _checkpoints is not None:
        _checkpoints.close()
        _checkpoints = None
    conn.close()


def commit_batch(conn: sqlite3.Connection, jobs: list[Job]) -> bool:
    """Run `jobs` in one transaction, each in its own savepoint (accepts together as one bulk
    write); set each job's result or error. True if the transaction committed."""
    accepts = [job for job in jobs if job.fn is tx_accept]
    try:
        _begin(conn)
        forget_keys()  # the metric label keys another process may have synced
        if len(accepts) > 1:
            _accept_batch(conn, accepts)
        for job in jobs:
            if len(accepts) <= 1 or job.fn is not tx_accept:
                _run_job(conn, job)
        conn.execute("COMMIT")
        if _checkpoints is not None:
            _checkpoints.committed(conn, len(jobs))
    except sqlite3.Error as exc:  # the transaction as a whole is lost: nothing was written
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        error = store_error("the SQLite store could not commit", exc)
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
            store_error("SQLite write failed", exc) if isinstance(exc, sqlite3.Error) else exc
        )
    else:
        conn.execute("RELEASE job")


# -- write transactions (run in the writer process, inside a savepoint) -------------------------
def tx_accept(
    conn: sqlite3.Connection, event: tuple[Any, ...], runs: Sequence[tuple[Any, ...]]
) -> list[AcceptanceRow]:
    """One accept of an event row and its runs' rows (`rows.run_rows`): the batch of one (see
    `tx_accept_many`)."""
    return tx_accept_many(conn, [(event, runs)])[0]


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
    "traceparent, created_at, updated_at, replay_of, parked_holds_key, reason, labels)"
)
_INSERT_EVENTS = "INSERT INTO events " + _EVENT_COLUMNS
_INSERT_RUNS = "INSERT INTO runs " + _RUN_COLUMNS
_CHUNK = 64  # rows per multi-row statement: at most 16 * 64 parameters, few statement texts


def _accept_batch(conn: sqlite3.Connection, jobs: Sequence[Job]) -> None:
    """Run queued `tx_accept` jobs as one bulk write; if that fails, undo it and run them one
    by one, so that a failing accept fails alone (with its own error) and the writer lives."""
    conn.execute("SAVEPOINT accepts")
    try:
        results = tx_accept_many(conn, [job.args for job in jobs])
    except Exception:  # noqa: BLE001 - whatever it was, the one-by-one replay reports it per job
        conn.execute("ROLLBACK TO accepts")
        conn.execute("RELEASE accepts")
        for job in jobs:
            _run_job(conn, job)
        return
    conn.execute("RELEASE accepts")
    for job, result in zip(jobs, results, strict=True):
        job.result = result


def tx_accept_many(
    conn: sqlite3.Connection, items: Sequence[tuple[tuple[Any, ...], Sequence[tuple[Any, ...]]]]
) -> list[list[AcceptanceRow]]:
    """`tx_accept` of every item, in order, in a fixed number of statements."""
    events = [event for event, _ in items]
    _insert_rows(conn, _INSERT_EVENTS, "ON CONFLICT (id) DO NOTHING", events, 8)
    holders = _key_holders(conn, {(run[1], run[6]) for _, runs in items for run in runs})
    results, rows = accept_rows(items, holders)
    rows = [row if row[15] is None else (*row[:15], admit_sqlite(conn, row[15])) for row in rows]
    _insert_rows(conn, _INSERT_RUNS, "", rows, 16)
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


def tx_renew(conn: sqlite3.Connection, worker: str, run_ids: Sequence[str], until: float) -> None:
    conn.executemany(
        "UPDATE runs SET lease_until = ? WHERE id = ? AND lease_owner = ? AND state = 'running'",
        [(until, run_id, worker) for run_id in run_ids],
    )


def tx_checkpoint(
    conn: sqlite3.Connection,
    cp: Checkpoint,
    step: dict[str, Any] | None,
    outbox_rows: list[tuple[Any, ...]],
) -> Reason | None:
    row = conn.execute("SELECT state, reason FROM runs WHERE id = ?", (cp.run_id,)).fetchone()
    if row is None:
        raise StoreError(f"checkpoint for unknown run {cp.run_id!r}")
    now = time.time()
    cancel, written, sets, params = checkpoint_update(cp, row, now, "?")
    sets = set_labels(sets, params, admit_sqlite(conn, cp.labels), "?")
    if step is not None:
        conn.execute(
            "INSERT OR REPLACE INTO steps (run_id, step_id, state, output, input_digest, error, "
            "attempts, updated_at) VALUES (:run_id, :step_id, :state, :output, :input_digest, "
            ":error, :attempts, :updated_at)",
            step,
        )
    conn.execute(f"UPDATE runs SET {sets} WHERE id = ?", [*params, cp.run_id])
    conn.executemany("INSERT INTO outbox (run_id, event, created_at) VALUES (?, ?, ?)", outbox_rows)
    run_statements(conn, history.after_checkpoint(cp, written, row, now), False)
    return cancel


def tx_set_run_state(
    conn: sqlite3.Connection, run_id: str, change: StateChange, data: str | None, at: float
) -> RunRecord:
    """`change` (with `data`, its corrected data as JSON) and its audit entry."""
    row = conn.execute("SELECT state FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise StoreError(f"run {run_id!r} does not exist")
    sets, params = state_update(run_id, row[0], change, at, data, "?")
    sets = set_labels(sets, params, admit_sqlite(conn, change.labels), "?")
    run_statements(conn, history.before_change(run_id, change, at), False)
    conn.execute(f"UPDATE runs SET {sets} WHERE id = ?", [*params, run_id])
    conn.executemany(
        "DELETE FROM steps WHERE run_id = ? AND step_id = ?",
        [(run_id, step_id) for step_id in change.reset_steps],
    )
    run_statements(conn, history.after_change(run_id, change, data, at), False)
    detail = dumps(change.audit_detail(row[0]))
    tx_audit(conn, (at, change.actor, change.audit_action, run_id, detail))
    (record,) = run_records(
        conn, conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchall()
    )
    return record


def tx_dispatch(
    conn: sqlite3.Connection, item_seq: int, event: tuple[Any, ...], runs: Sequence[tuple[Any, ...]]
) -> list[AcceptanceRow]:
    acceptances = tx_accept(conn, event, runs)
    conn.execute(
        "UPDATE outbox SET dispatched_at = ? WHERE seq = ? AND dispatched_at IS NULL",
        (event[-1], item_seq),
    )
    return acceptances


def tx_save_plan(conn: sqlite3.Connection, digest: str, bundle: str, now: float) -> None:
    conn.execute(
        "INSERT INTO plans (digest, bundle, created_at) VALUES (?, ?, ?) "
        "ON CONFLICT (digest) DO NOTHING",
        (digest, bundle, now),
    )


def tx_audit(conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    audit.append_sqlite(conn, *row)


def tx_put_trigger_state(conn: sqlite3.Connection, name: str, value: str, now: float) -> None:
    conn.execute(
        "INSERT INTO trigger_state (name, value, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        (name, value, now),
    )


def tx_claim_reconciliation(
    conn: sqlite3.Connection, name: str, tick: str, now: float, lease: float
) -> str:
    cursor = conn.execute(
        "INSERT INTO reconciliations (name, tick, started_at, state) VALUES (?, ?, ?, 'running') "
        "ON CONFLICT (name, tick) DO UPDATE SET started_at = excluded.started_at "
        "WHERE reconciliations.state = 'running' AND reconciliations.started_at < ?",
        (name, tick, now, now - lease),
    )
    if cursor.rowcount == 1:
        return "claimed"
    row = conn.execute(
        "SELECT state FROM reconciliations WHERE name = ? AND tick = ?", (name, tick)
    ).fetchone()
    return "running" if row[0] == "running" else "done"


def tx_finish_reconciliation(
    conn: sqlite3.Connection, name: str, tick: str, state: str, report: str
) -> None:
    conn.execute(
        "UPDATE reconciliations SET state = ?, report = ? WHERE name = ? AND tick = ?",
        (state, report, name, tick),
    )


# The job functions a writer process runs by name (engine/store/writer.py).
WRITES = {
    fn.__name__: fn
    for fn in (
        tx_accept,
        tx_claim,
        tx_renew,
        tx_checkpoint,
        tx_set_run_state,
        tx_dispatch,
        tx_save_plan,
        tx_audit,
        sqlite_sync,
        tx_relabel,
        tx_put_trigger_state,
        tx_claim_reconciliation,
        tx_finish_reconciliation,
        run_statements,
    )
}
