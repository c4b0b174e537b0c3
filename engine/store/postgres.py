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
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

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

MIGRATION_LOCK = 0x53594E43  # "SYNC": the advisory lock replicas migrate under

# Numbered schema migrations, as in SQLite: append, never edit one that has shipped.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE plans (
        digest      text PRIMARY KEY,
        bundle      text NOT NULL,
        created_at  double precision NOT NULL
    );
    CREATE TABLE events (
        id          text PRIMARY KEY,
        type        text NOT NULL,
        source      text NOT NULL,
        subject     text,
        time        text,
        data        text NOT NULL,
        attributes  text NOT NULL,
        received_at double precision NOT NULL
    );
    CREATE TABLE runs (
        seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id              text NOT NULL UNIQUE,
        flow            text NOT NULL,
        flow_version    integer NOT NULL,
        plan_digest     text NOT NULL,
        event_id        text NOT NULL REFERENCES events (id),
        state           text NOT NULL,
        key             text NOT NULL,
        ordering_key    text,
        correlation_id  text NOT NULL,
        traceparent     text,
        created_at      double precision NOT NULL,
        updated_at      double precision NOT NULL,
        next_attempt_at double precision,
        reason          text,
        replay_of       text,
        data_override   text,
        has_override    boolean NOT NULL DEFAULT false,
        lease_owner     text,
        lease_until     double precision,
        generation      integer NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX runs_dedup ON runs (flow, key) WHERE state <> 'filtered';
    CREATE INDEX runs_key ON runs (key, seq);
    CREATE INDEX runs_flow ON runs (flow, seq);
    CREATE INDEX runs_state ON runs (state, seq);
    CREATE INDEX runs_replay_of ON runs (replay_of) WHERE replay_of IS NOT NULL;
    CREATE INDEX runs_runnable ON runs (seq) WHERE state IN ('pending', 'running', 'waiting');
    CREATE INDEX runs_blocking ON runs (ordering_key, seq)
        WHERE state IN ('pending', 'running', 'waiting', 'parked');
    CREATE INDEX runs_waiting ON runs (next_attempt_at) WHERE state = 'waiting';
    CREATE TABLE steps (
        run_id        text NOT NULL REFERENCES runs (id),
        step_id       text NOT NULL,
        state         text NOT NULL,
        output        text NOT NULL,
        input_digest  text,
        error         text,
        attempts      text NOT NULL,
        updated_at    double precision NOT NULL,
        PRIMARY KEY (run_id, step_id)
    );
    CREATE TABLE outbox (
        seq           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id        text NOT NULL REFERENCES runs (id),
        event         text NOT NULL,
        created_at    double precision NOT NULL,
        dispatched_at double precision
    );
    CREATE INDEX outbox_pending ON outbox (seq) WHERE dispatched_at IS NULL;
    CREATE TABLE audit (
        seq     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at      double precision NOT NULL,
        actor   text NOT NULL,
        action  text NOT NULL,
        run_id  text,
        detail  text NOT NULL
    );
    CREATE INDEX audit_run ON audit (run_id, seq);
    CREATE FUNCTION syncline_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the audit log is append-only';
    END $$;
    CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
        FOR EACH ROW EXECUTE FUNCTION syncline_audit_append_only();
    """,
)

_BLOCKED = """
    r.ordering_key IS NOT NULL AND EXISTS (
        SELECT 1 FROM runs AS o
        WHERE o.state IN ('pending', 'running', 'waiting', 'parked')
          AND o.ordering_key = r.ordering_key AND o.seq < r.seq)
"""

# Due runs in arrival order that no older run of their ordering key blocks, leased at once; rows
# another replica is claiming right now are skipped, not waited for.
CLAIM_SQL = f"""
WITH due AS (
    SELECT r.seq FROM runs AS r
    WHERE r.state IN ('pending', 'running', 'waiting')
      AND (r.state = 'pending'
           OR (r.state = 'waiting' AND r.next_attempt_at <= %(now)s)
           OR (r.state = 'running' AND r.lease_until <= %(now)s))
      AND NOT ({_BLOCKED})
    ORDER BY r.seq
    LIMIT %(limit)s
    FOR UPDATE OF r SKIP LOCKED
)
UPDATE runs SET state = 'running', lease_owner = %(worker)s, lease_until = %(until)s,
                updated_at = %(wall)s, next_attempt_at = NULL
FROM due WHERE runs.seq = due.seq
RETURNING {", ".join(f"runs.{column.strip()}" for column in RUN_COLUMNS.split(","))}
"""

NEXT_DUE_SQL = f"""
SELECT r.next_attempt_at FROM runs AS r
WHERE r.state = 'waiting' AND NOT ({_BLOCKED})
ORDER BY r.next_attempt_at LIMIT 1
"""

_INSERT_EVENT = (
    "INSERT INTO events (id, type, source, subject, time, data, attributes, received_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING"
)
_INSERT_RUN = (
    "INSERT INTO runs (id, flow, flow_version, plan_digest, event_id, state, key, ordering_key, "
    "correlation_id, traceparent, created_at, updated_at, replay_of) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


class PostgresStore(Store):
    """The `Store` on PostgreSQL (psycopg 3 with a connection pool).

    `url` is a libpq connection string or URL (``postgresql://user@host:5432/db``; a
    ``?options=-csearch_path%3Dname`` parameter selects a schema). `pool_size` caps the
    connections this process opens. Use ``async with PostgresStore(url) as store:`` or call
    `open()` and `close()`. `migrations_applied` lists what the last `open()` applied.
    """

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.migrations_applied: list[int] = []
        self._pool_size = pool_size
        self._pool: AsyncConnectionPool | None = None
        self._accepts: list[tuple[_AcceptItem, asyncio.Future[Any]]] = []  # queued for a batch
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
            await pool.open(wait=True, timeout=10.0)
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
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS syncline_schema (version integer NOT NULL)"
            )
            row = await (await conn.execute("SELECT max(version) FROM syncline_schema")).fetchone()
            version = (row[0] if row else None) or 0
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"the database schema is version {version}, newer than this Syncline "
                    f"understands ({len(MIGRATIONS)}); upgrade Syncline"
                )
            applied = list(range(version + 1, len(MIGRATIONS) + 1))
            for number in applied:
                await conn.execute(MIGRATIONS[number - 1])  # type: ignore[arg-type]
                await conn.execute("INSERT INTO syncline_schema (version) VALUES (%s)", (number,))
        return applied

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
            return await (await conn.execute(sql, params)).fetchall()  # type: ignore[arg-type]

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
        `_BATCHES_IN_FLIGHT` batches commit at once, so that PostgreSQL's own group commit
        shares one WAL flush among them. If a batch fails, its accepts are tried one by one, so
        that a failing accept fails alone."""
        future = asyncio.get_running_loop().create_future()
        self._accepts.append(((event_row(event, time.time()), tuple(runs)), future))
        if len(self._batchers) < _BATCHES_IN_FLIGHT:
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
                    results = await _accept_many(conn, [item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - each accept's caller sees its own outcome
                if len(batch) == 1:
                    _settle(batch[0][1], error=exc)
                else:
                    await asyncio.gather(*(self._accept_alone(*entry) for entry in batch))
                continue
            for (_, future), result in zip(batch, results, strict=True):
                _settle(future, result)

    async def _accept_alone(self, item: _AcceptItem, future: asyncio.Future[Any]) -> None:
        try:
            async with self._transaction() as conn:
                [result] = await _accept_many(conn, [item])
        except Exception as exc:  # noqa: BLE001 - the caller's to see
            _settle(future, error=exc)
        else:
            _settle(future, result)

    # claiming work -----------------------------------------------------------------------------
    async def claim(self, worker: str, limit: int, now: float, lease: float) -> list[RunRecord]:
        """Lease up to `limit` runs that may execute now, oldest first (see `Store.claim`)."""
        if limit <= 0:
            return []
        params = {"now": now, "limit": limit, "worker": worker, "until": now + lease,
                  "wall": time.time()}  # fmt: skip
        async with self._transaction() as conn:
            rows = await (await conn.execute(CLAIM_SQL, params)).fetchall()
            records = await _run_records(conn, sorted(rows, key=lambda row: row[12]))
            if not records:
                return records
            events = await conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ANY(%s)",
                ([record.event_id for record in records],),
            )
            steps = await conn.execute(
                f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ANY(%s)",
                ([record.id for record in records],),
            )
            return with_work(records, await events.fetchall(), await steps.fetchall())

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

    async def next_due(self) -> float | None:
        rows = await self._rows(NEXT_DUE_SQL)
        return rows[0][0] if rows else None

    # execution ---------------------------------------------------------------------------------
    async def checkpoint(self, cp: Checkpoint) -> Reason | None:
        """Commit a step record, the run's new state and the emitted events atomically; return
        the run's cancel request, if any (see `Store.checkpoint`)."""
        step = None
        if cp.step is not None:
            if cp.step.run_id != cp.run_id:
                raise StoreError(f"checkpoint of run {cp.run_id!r} carries a step of another run")
            step = step_params(cp.run_id, cp.step)
        now = time.time()
        async with self._transaction() as conn:
            found = await (
                await conn.execute(
                    "SELECT state, reason FROM runs WHERE id = %s FOR UPDATE", (cp.run_id,)
                )
            ).fetchone()
            if found is None:
                raise StoreError(f"checkpoint for unknown run {cp.run_id!r}")
            cancel = cancel_request(*found)
            run_state = cp.run_state
            acknowledged = cp.reason is not None and cp.reason.code == CANCELLED
            if cancel is not None and run_state not in CANCEL_ENDS and not acknowledged:
                run_state = None  # the operator's cancel request stands (see Store.checkpoint)
            if step is not None:
                await conn.execute(
                    "INSERT INTO steps (run_id, step_id, state, output, input_digest, error, "
                    "attempts, updated_at) VALUES (%(run_id)s, %(step_id)s, %(state)s, "
                    "%(output)s, %(input_digest)s, %(error)s, %(attempts)s, %(updated_at)s) "
                    "ON CONFLICT (run_id, step_id) DO UPDATE SET state = EXCLUDED.state, "
                    "output = EXCLUDED.output, input_digest = EXCLUDED.input_digest, "
                    "error = EXCLUDED.error, attempts = EXCLUDED.attempts, "
                    "updated_at = EXCLUDED.updated_at",
                    step,
                )
            sets, params = ["updated_at = %s"], [now]  # type: list[str], list[Any]
            if run_state is not None:
                sets += ["state = %s", "next_attempt_at = %s", "reason = %s"]
                params += [run_state, cp.next_attempt_at, reason_json(cp.reason)]
            if cp.clear_lease or (run_state is not None and run_state != "running"):
                sets += ["lease_owner = NULL", "lease_until = NULL"]
            await conn.execute(
                f"UPDATE runs SET {', '.join(sets)} WHERE id = %s",  # type: ignore[arg-type]
                [*params, cp.run_id],
            )
            if cp.emitted:
                async with conn.cursor() as cursor:
                    await cursor.executemany(
                        "INSERT INTO outbox (run_id, event, created_at) VALUES (%s, %s, %s)",
                        [(cp.run_id, dumps(fields(event)), now) for event in cp.emitted],
                    )
            return cancel

    async def get_event(self, event_id: str) -> EventRecord | None:
        rows = await self._rows(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = %s", (event_id,))
        return event_record(rows[0]) if rows else None

    async def get_run(self, run_id: str) -> RunRecord | None:
        async with self._transaction() as conn:
            records = await _select_runs(conn, "WHERE id = %s", [run_id])
        return records[0] if records else None

    async def get_steps(self, run_id: str) -> dict[str, StepRecord]:
        rows = await self._rows(
            f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = %s",
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
        where, params = [], []  # type: list[str], list[Any]
        for column, value in (("flow", flow), ("state", state), ("key", key)):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        if before_seq is not None:
            where.append("seq < %s")
            params.append(before_seq)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        async with self._transaction() as conn:
            return await _select_runs(conn, f"{clause} ORDER BY seq DESC LIMIT %s",
                                      [*params, limit])  # fmt: skip

    async def count_runs(self) -> dict[tuple[str, str], int]:
        rows = await self._rows("SELECT flow, state, count(*) FROM runs GROUP BY flow, state")
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
        """Change a run's state as `Store.set_run_state` says, with an audit entry."""
        now = time.time()
        async with self._transaction() as conn:
            found = await (
                await conn.execute("SELECT state FROM runs WHERE id = %s FOR UPDATE", (run_id,))
            ).fetchone()
            if found is None:
                raise StoreError(f"run {run_id!r} does not exist")
            if expect and found[0] not in expect:
                expected = " or ".join(repr(s) for s in expect)
                raise StateConflict(
                    f"run {run_id!r} is {found[0]!r}, not {expected}: cannot make it {state!r}"
                )
            sets = "state = %s, reason = %s, updated_at = %s, next_attempt_at = NULL"
            params: list[Any] = [state, reason_json(reason), now]
            if state != "running":
                sets += ", lease_owner = NULL, lease_until = NULL"
            if bump_generation:
                sets += ", generation = generation + 1"
            if set_override:
                sets += ", data_override = %s, has_override = true"
                params.append(dumps(data_override))
            await conn.execute(
                f"UPDATE runs SET {sets} WHERE id = %s", [*params, run_id]  # type: ignore[arg-type]
            )
            if reset_steps:
                await conn.execute(
                    "DELETE FROM steps WHERE run_id = %s AND step_id = ANY(%s)",
                    (run_id, list(reset_steps)),
                )
            detail = {"from": found[0], **state_change(state, reason, reset_steps, set_override)}
            await _audit(conn, now, actor, action or f"set-state:{state}", run_id, detail)
            (record,) = await _select_runs(conn, "WHERE id = %s", [run_id])
            return record

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
            [acceptances] = await _accept_many(conn, [(event_row(item.event, now), tuple(runs))])
            await conn.execute(
                "UPDATE outbox SET dispatched_at = %s WHERE seq = %s AND dispatched_at IS NULL",
                (now, item.seq),
            )
            return acceptances

    # audit -------------------------------------------------------------------------------------
    async def audit(self, actor: str, action: str, run_id: str | None, detail: Any) -> None:
        """Append an entry to the audit log (a trigger refuses UPDATE and DELETE)."""
        async with self._transaction() as conn:
            await _audit(conn, time.time(), actor, action, run_id, detail)

    async def audit_log(
        self, run_id: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Audit entries, newest first, optionally of one run."""
        where, params = ("WHERE run_id = %s", (run_id, limit)) if run_id else ("", (limit,))
        rows = await self._rows(
            f"SELECT {AUDIT_COLUMNS} FROM audit {where} "
            "ORDER BY seq DESC LIMIT %s",
            params,
        )
        return [audit_entry(row) for row in rows]


# -- statements inside a transaction -------------------------------------------------------------
_AcceptItem = tuple[tuple[Any, ...], Sequence[NewRun]]  # (event row, its runs)
_BATCHES_IN_FLIGHT = 2


def _settle(
    future: asyncio.Future[Any], result: Any = None, error: Exception | None = None
) -> None:
    if future.done():  # the caller was cancelled; the write happened (or not) all the same
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
_HOLDERS = (
    "SELECT flow, key, id, correlation_id FROM runs WHERE state <> 'filtered' "
    "AND (flow, key) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
)


async def _accept_many(
    conn: psycopg.AsyncConnection[Any], items: Sequence[_AcceptItem]
) -> list[list[Acceptance]]:
    """Accept every item, in order, with the result of accepting them one after the other: an
    event id stored once, the first run of a (flow, key) accepted and every later one a
    duplicate naming it, a filtered run recorded without holding its key."""
    runs = [run for _, item_runs in items for run in item_runs]
    async with conn.cursor() as cur:
        await cur.executemany(_INSERT_EVENT, [event for event, _ in items])
        # Ordering keys are locked in one sorted order, so two accepts cannot deadlock on them.
        locks = sorted({(run.ordering_key,) for run in runs if run.ordering_key})
        await cur.executemany("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", locks)
    holders = await _key_holders(conn, {(run.flow, run.key) for run in runs})
    results: list[list[Acceptance]] = []
    rows = []
    for event, item_runs in items:
        acceptances = []
        for run in item_runs:
            holder = holders.get((run.flow, run.key))
            if holder is not None:
                acceptances.append(Acceptance(holder[0], "duplicate", holder[1]))
                continue
            rows.append(run_row(run, event[0], event[-1]))
            if run.state == "filtered":
                acceptances.append(Acceptance(run.id, "filtered", run.correlation_id))
            else:
                holders[(run.flow, run.key)] = (run.id, run.correlation_id)
                acceptances.append(Acceptance(run.id, "accepted", run.correlation_id))
        results.append(acceptances)
    lost = await _insert_runs(conn, rows)
    if lost:  # another replica committed one of these keys after we looked: its run holds it
        taken = await _key_holders(conn, lost.keys())
        renamed = {lost[key]: taken[key] for key in lost}  # our run id -> the holder's
        results = [
            [
                Acceptance(renamed[a.run_id][0], "duplicate", renamed[a.run_id][1])
                if a.run_id in renamed
                else a
                for a in acceptances
            ]
            for acceptances in results
        ]
    return results


async def _insert_runs(
    conn: psycopg.AsyncConnection[Any], rows: list[tuple[Any, ...]]
) -> dict[tuple[str, str], str]:
    """Insert the runs; return {(flow, key): run id} of those a concurrent holder of their key
    kept out."""
    if not rows:
        return {}
    sql = (
        _INSERT_RUN + " ON CONFLICT (flow, key) WHERE state <> 'filtered' DO NOTHING RETURNING id"
    )
    inserted: set[str] = set()
    async with conn.cursor() as cur:
        await cur.executemany(sql, rows, returning=True)
        while True:
            inserted.update(row[0] for row in await cur.fetchall())
            if not cur.nextset():
                break
    # run_row: (id, flow, flow_version, plan_digest, event_id, state, key, ...)
    return {(row[1], row[6]): row[0] for row in rows if row[0] not in inserted}


async def _key_holders(
    conn: psycopg.AsyncConnection[Any], keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str, str]]:
    """(flow, key) -> (id, correlation id) of the run holding each of `keys`, if any."""
    pairs = list(keys)
    if not pairs:
        return {}
    found = await conn.execute(_HOLDERS, ([f for f, _ in pairs], [k for _, k in pairs]))
    return {(flow, key): (run_id, corr) for flow, key, run_id, corr in await found.fetchall()}


async def _select_runs(
    conn: psycopg.AsyncConnection[Any], rest: str, params: list[Any]
) -> list[RunRecord]:
    query = f"SELECT {RUN_COLUMNS} FROM runs {rest}"
    rows = await (await conn.execute(query, params)).fetchall()  # type: ignore[arg-type]
    return await _run_records(conn, rows)


async def _run_records(
    conn: psycopg.AsyncConnection[Any], rows: Sequence[Sequence[Any]]
) -> list[RunRecord]:
    """Records with `replayed_by` (runs whose replay_of is this one), in one query."""
    replays: dict[str, list[str]] = {}
    if rows:
        found = await conn.execute(
            "SELECT replay_of, id FROM runs WHERE replay_of = ANY(%s) ORDER BY seq",
            ([row[0] for row in rows],),
        )
        for original, replay in await found.fetchall():
            replays.setdefault(original, []).append(replay)
    return [run_record(row, replays.get(row[0], [])) for row in rows]


async def _audit(
    conn: psycopg.AsyncConnection[Any], at: float, actor: str, action: str,
    run_id: str | None, detail: Any,
) -> None:  # fmt: skip
    await conn.execute(
        "INSERT INTO audit (at, actor, action, run_id, detail) VALUES (%s, %s, %s, %s, %s)",
        (at, actor, action, run_id, dumps(detail)),
    )


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
