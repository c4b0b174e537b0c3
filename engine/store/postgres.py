"""The scale-out store: PostgreSQL, shared by several `serve` and `worker` replicas.

`syncline serve --database postgresql://...` runs the same runtime on it (SPEC section 8). How
it keeps the `Store` invariants when several processes write at once:

- Every write is one transaction on a pooled connection, except that concurrent accepts are
  batched: one transaction carries whatever queued while the previous batches committed (see
  `accept`). Across transactions, group commit is PostgreSQL's own: the backend that flushes the
  WAL flushes every commit record queued behind it.
- Deduplication is the unique index on (flow, key) itself (`ON CONFLICT ... DO NOTHING`): two
  replicas accepting the same delivery at the same instant create one run; the loser answers
  `duplicate` naming the winner's run.
- Arrival order: a run's `seq` comes from an identity column, and an accept first takes a
  transaction-scoped advisory lock on each of its ordering keys. Two accepts for one ordering
  key therefore commit in `seq` order, so no reader ever sees a later run of a key before an
  earlier one (which would let a worker start it first).
- Claiming leases runs with `FOR UPDATE SKIP LOCKED`: replicas never wait for, nor double-claim,
  each other's runs. A replica that dies leaves runs `running` under a lease nobody renews; when
  it expires, any other replica claims and finishes them (completed steps are checkpointed, and
  calls repeat with the same idempotency keys).
- Migrations are numbered like SQLite's and applied under an advisory lock, so replicas starting
  together apply each one once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from engine.errors import StoreError
from engine.store import audit as audit_sql
from engine.store.aggregates import Aggregates, MetricConfig, run_counts
from engine.store.aggregates_postgres import postgres_read, postgres_sync
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
from engine.store.controls import run_statements_async
from engine.store.postgres_schema import migrate
from engine.store.postgres_sql import (
    AcceptItem,
    accept_many,
    audit,
    checkpoint,
    claim,
    select_runs,
    set_run_state,
    settle,
)
from engine.store.rows import (
    EVENT_COLUMNS,
    STEP_COLUMNS,
    dumps,
    event_record,
    event_row,
    outbox_item,
    reconciliation_row,
    step_params,
    step_record,
)

BATCHES_IN_FLIGHT = 2  # accept batches committing at once (see `PostgresStore.accept`)


class PostgresStore(Store):
    """The `Store` on PostgreSQL (psycopg 3 with a connection pool).

    `url` is a libpq connection string or URL (``postgresql://user@host:5432/db``; a
    ``?options=-csearch_path%3Dname`` parameter selects a schema). `pool_size` caps the
    connections this process opens; `open()` gives up after `connect_timeout` seconds. Use
    ``async with PostgresStore(url) as store:`` or call `open()` and `close()`.
    `migrations_applied` lists what the last `open()` applied.
    """

    def __init__(self, url: str, *, pool_size: int = 10, connect_timeout: float = 10.0) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self.migrations_applied: list[int] = []
        self._pool_size = pool_size
        self._pool: AsyncConnectionPool | None = None
        self._accepts: list[tuple[AcceptItem, asyncio.Future[Any]]] = []  # queued for a batch
        self._batchers: set[asyncio.Future[None]] = set()  # the tasks committing them

    def __repr__(self) -> str:
        return f"PostgresStore({_redacted(self.url)!r})"

    # lifecycle ---------------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect, and apply the migrations the database has not seen (once across replicas)."""
        if self._pool is not None:
            raise StoreError(f"the PostgreSQL store {_redacted(self.url)} is already open")
        pool = AsyncConnectionPool(
            self.url, min_size=1, max_size=self._pool_size, open=False,
            kwargs={"autocommit": True}, name="syncline",
        )  # fmt: skip
        try:
            await pool.open(wait=True, timeout=self.connect_timeout)
        except Exception as exc:  # PoolTimeout (with the real cause inside), OperationalError
            await pool.close()
            raise StoreError(
                f"cannot connect to the PostgreSQL store {_redacted(self.url)}: {exc}"
            ) from exc
        self._pool = pool
        try:
            self.migrations_applied = await self._migrate()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the pool (queued accepts and in-flight transactions finish first)."""
        if self._batchers:
            await asyncio.gather(*self._batchers)
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _migrate(self) -> list[int]:
        async with self._transaction() as conn:
            return await migrate(conn)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """One transaction on a pooled connection; database errors become StoreError."""
        if self._pool is None:
            raise StoreError("the PostgreSQL store is not open")
        try:
            async with self._pool.connection() as conn, conn.transaction():
                yield conn
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {exc}".strip()) from exc

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self._transaction() as conn:
            return await (await conn.execute(sql, params)).fetchall()

    # plans -------------------------------------------------------------------------------------
    async def save_plan(self, digest: str, bundle: dict[str, Any]) -> None:
        """Keep a compiled bundle by digest; saving a digest again changes nothing."""
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO plans (digest, bundle, created_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (digest) DO NOTHING",
                (digest, dumps(bundle), time.time()),
            )

    async def load_plan(self, digest: str) -> dict[str, Any] | None:
        rows = await self._rows("SELECT bundle FROM plans WHERE digest = %s", (digest,))
        return json.loads(rows[0][0]) if rows else None

    # ingest ------------------------------------------------------------------------------------
    async def accept(self, event: EventRecord, runs: Sequence[NewRun]) -> list[Acceptance]:
        """Store the event (once per event id) and its runs in one transaction (see the module
        docstring for deduplication and arrival order across replicas).

        Concurrent accepts are batched: a transaction carries every accept that queued while
        the previous ones committed, in a fixed number of round trips. Up to
        `BATCHES_IN_FLIGHT` batches commit at once, so that PostgreSQL's own group commit
        shares one WAL flush among them. If a batch fails, its accepts are tried one by one, so
        that a failing accept fails alone."""
        future = asyncio.get_running_loop().create_future()
        self._accepts.append(((event_row(event, time.time()), tuple(runs)), future))
        if len(self._batchers) < BATCHES_IN_FLIGHT:
            task = asyncio.ensure_future(self._commit_accepts())
            self._batchers.add(task)
            task.add_done_callback(self._batchers.discard)
        result: list[Acceptance] = await future
        return result

    async def _commit_accepts(self) -> None:
        """Commit the queued accepts, a batch per transaction, until none are left."""
        while self._accepts:
            batch, self._accepts = self._accepts, []
            try:
                async with self._transaction() as conn:
                    results = await accept_many(conn, [item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - each accept's caller sees its own outcome
                if len(batch) == 1:
                    settle(batch[0][1], error=exc)
                else:
                    await asyncio.gather(*(self._accept_alone(*entry) for entry in batch))
                continue
            for (_, future), result in zip(batch, results, strict=True):
                settle(future, result)

    async def _accept_alone(self, item: AcceptItem, future: asyncio.Future[Any]) -> None:
        try:
            async with self._transaction() as conn:
                [result] = await accept_many(conn, [item])
        except Exception as exc:  # noqa: BLE001 - the caller's to see
            settle(future, error=exc)
        else:
            settle(future, result)

    # claiming work -----------------------------------------------------------------------------
    async def claim(self, worker: str, limit: int, now: float, lease: float) -> list[RunRecord]:
        """Lease up to `limit` runs that may execute now, oldest first (see `Store.claim`)."""
        if limit <= 0:
            return []
        async with self._transaction() as conn:
            return await claim(conn, worker, limit, now, lease)

    async def renew(self, worker: str, run_ids: Sequence[str], until: float) -> None:
        """Extend the leases `worker` still holds on these running runs to `until`."""
        if not run_ids:
            return
        async with self._transaction() as conn:
            await conn.execute(
                "UPDATE runs SET lease_until = %s "
                "WHERE id = ANY(%s) AND lease_owner = %s AND state = 'running'",
                (until, list(run_ids), worker),
            )

    # execution ---------------------------------------------------------------------------------
    async def checkpoint(self, cp: Checkpoint) -> Reason | None:
        """Commit a step record, the run's new state and the emitted events atomically; return
        the run's cancel request, if any (see `Store.checkpoint`)."""
        step = None
        if cp.step is not None:
            if cp.step.run_id != cp.run_id:
                raise StoreError(f"checkpoint of run {cp.run_id!r} carries a step of another run")
            step = step_params(cp.run_id, cp.step)
        async with self._transaction() as conn:
            return await checkpoint(conn, cp, step, time.time())

    async def get_event(self, event_id: str) -> EventRecord | None:
        rows = await self._rows(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = %s", (event_id,))
        return event_record(rows[0]) if rows else None

    async def get_run(self, run_id: str) -> RunRecord | None:
        async with self._transaction() as conn:
            records = await select_runs(conn, "WHERE id = %s", [run_id])
        return records[0] if records else None

    async def get_steps(self, run_id: str) -> dict[str, StepRecord]:
        rows = await self._rows(
            f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = %s",
            (run_id,),
        )
        return {row[1]: step_record(row) for row in rows}

    async def list_runs(self, query: RunQuery) -> list[RunRecord]:
        """Runs matching `query`, newest first."""
        where, params = [], []  # type: list[str], list[Any]
        for column, value in (
            ("flow", query.flow), ("state", query.state), ("key", query.key),
            ("correlation_id", query.correlation_id),
        ):  # fmt: skip
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        if query.before_seq is not None:
            where.append("seq < %s")
            params.append(query.before_seq)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        async with self._transaction() as conn:
            return await select_runs(
                conn, f"{clause} ORDER BY seq DESC LIMIT %s", [*params, query.limit]
            )

    async def count_runs(self) -> dict[tuple[str, str], int]:
        return run_counts(await self.read_aggregates())  # the tallies: no scan of runs

    async def blocked_by(self, run: RunRecord) -> str | None:
        if run.ordering_key is None or run.state not in ("pending", "waiting"):
            return None
        rows = await self._rows(
            "SELECT id FROM runs WHERE ordering_key = %s AND seq < %s "
            "AND state IN ('pending', 'running', 'waiting', 'parked') ORDER BY seq LIMIT 1",
            (run.ordering_key, run.seq),
        )
        return str(rows[0][0]) if rows else None

    # business metrics --------------------------------------------------------------------------
    async def sync_metrics(self, config: MetricConfig) -> None:
        async with self._transaction() as conn:
            await postgres_sync(conn, config)

    async def read_aggregates(self) -> Aggregates:
        async with self._transaction() as conn:
            return await postgres_read(conn)

    # operator actions --------------------------------------------------------------------------
    async def set_run_state(self, run_id: str, change: StateChange) -> RunRecord:
        """Apply `change` with its audit entry (see `Store.set_run_state`)."""
        async with self._transaction() as conn:
            return await set_run_state(conn, run_id, change, time.time())

    # events out --------------------------------------------------------------------------------
    async def outbox(self, limit: int) -> list[OutboxItem]:
        rows = await self._rows(
            "SELECT seq, run_id, event FROM outbox WHERE dispatched_at IS NULL "
            "ORDER BY seq LIMIT %s",
            (limit,),
        )
        return [outbox_item(row) for row in rows]

    async def dispatch(self, item: OutboxItem, runs: Sequence[NewRun]) -> list[Acceptance]:
        """Store the emitted event, create its runs (deduplicated) and mark the item dispatched,
        in one transaction. Another replica dispatching the same item meanwhile is harmless:
        the event is stored once and the runs' keys deduplicate."""
        now = time.time()
        async with self._transaction() as conn:
            [acceptances] = await accept_many(conn, [(event_row(item.event, now), tuple(runs))])
            await conn.execute(
                "UPDATE outbox SET dispatched_at = %s WHERE seq = %s AND dispatched_at IS NULL",
                (now, item.seq),
            )
            return acceptances

    # operating switches ------------------------------------------------------------------------
    async def transact(
        self,
        statements: Sequence[tuple[str, tuple[Any, ...]]],
        *,
        only_if_first: bool = False,
        read_only: bool = False,
    ) -> list[tuple[list[tuple[Any, ...]], int]]:
        """See `Store.transact`."""
        async with self._transaction() as conn:
            return await run_statements_async(conn, statements, only_if_first)

    # audit -------------------------------------------------------------------------------------
    async def audit(self, actor: str, action: str, run_id: str | None, detail: Any) -> None:
        """Append an entry to the audit log (a trigger refuses UPDATE and DELETE)."""
        async with self._transaction() as conn:
            await audit(conn, time.time(), actor, action, run_id, detail)

    async def get_trigger_state(self, name: str) -> Any:
        """What a timed trigger stored under `name` (None: nothing yet)."""
        rows = await self._rows("SELECT value FROM trigger_state WHERE name = %s", (name,))
        return json.loads(rows[0][0]) if rows else None

    async def put_trigger_state(self, name: str, value: Any) -> None:
        """Store a timed trigger's state under `name`, replacing what was there."""
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO trigger_state (name, value, updated_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at",
                (name, json.dumps(value), time.time()),
            )

    async def claim_reconciliation(self, name: str, tick: str, now: float, lease: float) -> str:
        """Claim a Reconciliation's tick (see `Store.claim_reconciliation`)."""
        async with self._transaction() as conn:
            cursor = await conn.execute(
                "INSERT INTO reconciliations (name, tick, started_at, state) "
                "VALUES (%s, %s, %s, 'running') ON CONFLICT (name, tick) DO UPDATE "
                "SET started_at = excluded.started_at "
                "WHERE reconciliations.state = 'running' AND reconciliations.started_at < %s",
                (name, tick, now, now - lease),
            )
            if cursor.rowcount == 1:
                return "claimed"
            row = await (await conn.execute(
                "SELECT state FROM reconciliations WHERE name = %s AND tick = %s", (name, tick)
            )).fetchone()
            return "running" if row is not None and row[0] == "running" else "done"

    async def finish_reconciliation(
        self, name: str, tick: str, state: str, report: dict[str, Any]
    ) -> None:
        """Store the report of a claimed tick."""
        async with self._transaction() as conn:
            await conn.execute(
                "UPDATE reconciliations SET state = %s, report = %s WHERE name = %s AND tick = %s",
                (state, json.dumps(report, default=str), name, tick),
            )

    async def list_reconciliations(
        self, name: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Reconciliation results, newest first: `{name, tick, started_at, state, report}`."""
        where, params = ("WHERE name = %s", (name, limit)) if name else ("", (limit,))
        rows = await self._rows(
            f"SELECT name, tick, started_at, state, report FROM reconciliations {where} "
            "ORDER BY seq DESC LIMIT %s",
            params,
        )
        return [reconciliation_row(row) for row in rows]

    async def audit_log(self, query: AuditQuery | None = None) -> list[dict[str, Any]]:
        """Audit entries, newest first: ``{seq, at, actor, action, run_id, detail, hash}``."""
        sql, params = audit_sql.select(query or AuditQuery(), "%s")
        return [audit_sql.entry(row) for row in await self._rows(sql, params)]

    async def audit_chain(self, after_seq: int, limit: int) -> list[tuple[Any, ...]]:
        """Raw audit rows in chain order after `after_seq` (for `audit_sql.Verifier`)."""
        return await self._rows(audit_sql.chain_page("%s"), (after_seq, limit))


def _redacted(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return "<invalid connection string>"
    if "password" not in info:
        return url
    info["password"] = "***"
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]
