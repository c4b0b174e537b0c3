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
import json
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from engine.errors import StoreError
from engine.store import audit as audit_sql
from engine.store.aggregates import (
    Aggregates,
    MetricConfig,
    run_counts,
    sqlite_read,
    sqlite_sync,
)
from engine.store.audit import AuditQuery
from engine.store.base import (
    Acceptance,
    Checkpoint,
    EventRecord,
    NewRun,
    OutboxItem,
    Reason,
    RunQuery,
    RunRecord,
    StateChange,
    StepRecord,
    Store,
)
from engine.store.controls import run_statements
from engine.store.rows import (
    EVENT_COLUMNS,
    RUN_COLUMNS,
    STEP_COLUMNS,
    dumps,
    event_record,
    event_row,
    fields,
    outbox_item,
    reconciliation_row,
    step_params,
    step_record,
)
from engine.store.sqlite_schema import MIGRATIONS, connect
from engine.store.sqlite_writes import (
    run_records,
    tx_accept,
    tx_audit,
    tx_checkpoint,
    tx_claim,
    tx_claim_reconciliation,
    tx_dispatch,
    tx_finish_reconciliation,
    tx_put_trigger_state,
    tx_renew,
    tx_save_plan,
    tx_set_run_state,
)
from engine.store.writer import WriterProcess

_T = TypeVar("_T")

__all__ = ["MIGRATIONS", "SQLiteStore"]

WRITER_MODULE = "engine.store.sqlite_writes"  # what the writer process imports


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
            conn = connect(self._path)
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


# -- reads (run on a reader thread, inside a read transaction) -----------------------------------
def _q_run(conn: sqlite3.Connection, run_id: str) -> RunRecord | None:
    rows = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchall()
    return run_records(conn, rows)[0] if rows else None


def _q_list_runs(conn: sqlite3.Connection, query: RunQuery) -> list[RunRecord]:
    where, params = [], []  # type: list[str], list[Any]
    for column, value in (
        ("flow", query.flow), ("state", query.state), ("key", query.key),
        ("correlation_id", query.correlation_id),
    ):  # fmt: skip
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if query.before_seq is not None:
        where.append("seq < ?")
        params.append(query.before_seq)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(
        f"SELECT {RUN_COLUMNS} FROM runs {clause} ORDER BY seq DESC LIMIT ?",
        [*params, query.limit],
    ).fetchall()
    return run_records(conn, rows)


def _q_event(conn: sqlite3.Connection, event_id: str) -> EventRecord | None:
    row = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ?", (event_id,)).fetchone()
    return None if row is None else event_record(row)


def _q_all(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    return conn.execute(sql, params).fetchall()


_BLOCKER_SQL = """
SELECT id FROM runs INDEXED BY runs_blocking
WHERE ordering_key IS NOT NULL AND ordering_key = ?
  AND state IN ('pending', 'running', 'waiting', 'parked') AND seq < ?
ORDER BY seq LIMIT 1
"""


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
        self._writer = WriterProcess(WRITER_MODULE, self.path.resolve(), self._max_batch)
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

    def _write(self, fn: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        if self._writer is None or self._closed:
            raise StoreError(f"the SQLite store {self.path} is not open")
        return cast("asyncio.Future[_T]", self._writer.submit(fn, args))

    async def _read(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._readers is None or self._closed:
            raise StoreError(f"the SQLite store {self.path} is not open")
        return cast(_T, await asyncio.to_thread(self._readers.run, fn, *args))

    # plans -------------------------------------------------------------------------------------
    async def save_plan(self, digest: str, bundle: dict[str, Any]) -> None:
        """Keep a compiled bundle by digest; saving a digest again changes nothing."""
        await self._write(tx_save_plan, digest, dumps(bundle), time.time())

    async def load_plan(self, digest: str) -> dict[str, Any] | None:
        """The bundle saved under `digest`, or None."""
        rows = await self._read(_q_all, "SELECT bundle FROM plans WHERE digest = ?", (digest,))
        return json.loads(rows[0][0]) if rows else None

    # ingest ------------------------------------------------------------------------------------
    async def accept(self, event: EventRecord, runs: Sequence[NewRun]) -> list[Acceptance]:
        """Store the event (once per event id) and its runs in one transaction.

        A NewRun whose (flow, key) an existing run holds answers `duplicate` with that run. A
        filtered run is recorded but does not hold its key (see the `runs_dedup` index)."""
        return await self._write(tx_accept, event_row(event, time.time()), tuple(runs))

    # claiming work -----------------------------------------------------------------------------
    async def claim(self, worker: str, limit: int, now: float, lease: float) -> list[RunRecord]:
        """Lease up to `limit` runs that may execute now, oldest first (see `Store.claim`)."""
        if limit <= 0:
            return []
        return await self._write(tx_claim, worker, limit, now, lease)

    async def renew(self, worker: str, run_ids: Sequence[str], until: float) -> None:
        """Extend the leases `worker` still holds on these running runs to `until`."""
        await self._write(tx_renew, worker, tuple(run_ids), until)

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
        return await self._write(tx_checkpoint, cp, step, outbox_rows)

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

    async def list_runs(self, query: RunQuery) -> list[RunRecord]:
        """Runs matching `query`, newest first."""
        query.before_seq  # noqa: B018 - a bad cursor raises UsageError here, before any read
        return await self._read(_q_list_runs, query)

    async def count_runs(self) -> dict[tuple[str, str], int]:
        """(flow, state) -> number of runs."""
        return run_counts(await self.read_aggregates())  # the tallies: no scan of runs

    async def blocked_by(self, run: RunRecord) -> str | None:
        if run.ordering_key is None or run.state not in ("pending", "waiting"):
            return None
        rows = await self._read(_q_all, _BLOCKER_SQL, (run.ordering_key, run.seq))
        return str(rows[0][0]) if rows else None

    # business metrics --------------------------------------------------------------------------
    async def sync_metrics(self, config: MetricConfig) -> None:
        await self._write(sqlite_sync, config)

    async def read_aggregates(self) -> Aggregates:
        result: Aggregates = await self._read(sqlite_read)
        return result

    # operator actions --------------------------------------------------------------------------
    async def set_run_state(self, run_id: str, change: StateChange) -> RunRecord:
        """Apply `change` with its audit entry (see `Store.set_run_state`)."""
        data = None if change.data is None else dumps(change.data.value)
        return await self._write(tx_set_run_state, run_id, change, data, time.time())

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
        return await self._write(tx_dispatch, item.seq, event, tuple(runs))

    # operating switches ------------------------------------------------------------------------
    async def transact(
        self,
        statements: Sequence[tuple[str, tuple[Any, ...]]],
        *,
        only_if_first: bool = False,
        read_only: bool = False,
    ) -> list[tuple[list[tuple[Any, ...]], int]]:
        """See `Store.transact`: one job of the writer, so it commits with the others (reads on
        a reader connection)."""
        if read_only:
            return await self._read(run_statements, tuple(statements), only_if_first)
        return await self._write(run_statements, tuple(statements), only_if_first)

    # audit -------------------------------------------------------------------------------------
    async def audit(self, actor: str, action: str, run_id: str | None, detail: Any) -> None:
        """Append an entry to the audit log (which refuses UPDATE and DELETE)."""
        await self._write(tx_audit, (time.time(), actor, action, run_id, dumps(detail)))

    async def get_trigger_state(self, name: str) -> Any:
        """What a timed trigger stored under `name` (None: nothing yet)."""
        rows = await self._read(_q_all, "SELECT value FROM trigger_state WHERE name = ?", (name,))
        return json.loads(rows[0][0]) if rows else None

    async def put_trigger_state(self, name: str, value: Any) -> None:
        """Store a timed trigger's state under `name`, replacing what was there."""
        await self._write(tx_put_trigger_state, name, dumps(value), time.time())

    async def claim_reconciliation(self, name: str, tick: str, now: float, lease: float) -> str:
        """Claim a Reconciliation's tick (see `Store.claim_reconciliation`)."""
        claimed: str = await self._write(tx_claim_reconciliation, name, tick, now, lease)
        return claimed

    async def finish_reconciliation(
        self, name: str, tick: str, state: str, report: dict[str, Any]
    ) -> None:
        """Store the report of a claimed tick."""
        await self._write(tx_finish_reconciliation, name, tick, state, dumps(report))

    async def list_reconciliations(
        self, name: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Reconciliation results, newest first: `{name, tick, started_at, state, report}`."""
        where, params = ("WHERE name = ?", (name, limit)) if name else ("", (limit,))
        rows = await self._read(
            _q_all,
            f"SELECT name, tick, started_at, state, report FROM reconciliations {where} "
            "ORDER BY seq DESC LIMIT ?",
            params,
        )
        return [reconciliation_row(row) for row in rows]

    async def audit_log(self, query: AuditQuery | None = None) -> list[dict[str, Any]]:
        """Audit entries, newest first: ``{seq, at, actor, action, run_id, detail, hash}``."""
        sql, params = audit_sql.select(query or AuditQuery(), "?")
        return [audit_sql.entry(row) for row in await self._read(_q_all, sql, params)]

    async def audit_chain(self, after_seq: int, limit: int) -> list[tuple[Any, ...]]:
        """Raw audit rows in chain order after `after_seq` (for `audit_sql.Verifier`)."""
        rows: list[tuple[Any, ...]] = await self._read(
            _q_all, audit_sql.chain_page("?"), (after_seq, limit)
        )
        return rows
