"""The PostgreSQL store's statements, each run inside a transaction the store opened: batched
accepts (deduplicated by the unique index, ordering keys locked), claims, checkpoints and state
changes. See engine/store/postgres.py for how they keep the `Store` invariants across replicas."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from engine.errors import StoreError
from engine.store import history
from engine.store.audit import append_postgres
from engine.store.base import (
    Acceptance,
    Checkpoint,
    NewRun,
    Reason,
    RunRecord,
    StateChange,
)
from engine.store.controls import run_statements_async
from engine.store.label_tallies import admit_postgres, admit_postgres_many, labels_if_seen
from engine.store.postgres_claims import lease_runs, window
from engine.store.rows import (
    EVENT_COLUMNS,
    RUN_COLUMNS,
    STEP_COLUMNS,
    accept_rows,
    checkpoint_update,
    dumps,
    fields,
    run_record,
    run_rows,
    set_labels,
    state_update,
    with_work,
)

Conn = psycopg.AsyncConnection[Any]
AcceptItem = tuple[tuple[Any, ...], Sequence[NewRun]]  # (event row, its runs)


def settle(future: asyncio.Future[Any], result: Any = None, error: Exception | None = None) -> None:
    if future.done():  # the caller was cancelled; the write happened (or not) all the same
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


# Until a store has accepted PLAN_ONCE_PAST runs, the statements that look keys up are planned at
# every execution: without statistics (a new database, a server without autovacuum) a plan
# cached while `runs` held a hundred rows may probe runs_flow instead of runs_dedup (their costs
# tie at that size), then walk every run of the flow per key for the connection's life: one
# replica's accepts ran 5x slower (20 ms a batch against 4). Past it, the table is large enough
# that a cached plan can only be the runs_dedup probe (runs_flow's estimate grows with the
# table, runs_dedup's is one row), and psycopg prepares them: planning every batch cost the
# server 0.45 ms of CPU a batch of 20 accepts.
PLAN_ONCE_PAST = 10_000
# An index probe per (flow, key), not a join: written as an IN, the planner went by the row
# count it last saw (a new or fast-growing table's is far too low) and hashed a scan of every
# run, once per accept batch: 3.3 ms at 6,000 runs, and growing. The LIMIT (runs_dedup holds
# one run a key) keeps the subquery from being flattened into that join.
_HOLDERS = (
    "SELECT u.flow, u.key, r.id, r.correlation_id "
    "FROM unnest(%s::text[], %s::text[]) AS u (flow, key) CROSS JOIN LATERAL "
    "(SELECT id, correlation_id FROM runs "
    "WHERE runs.flow = u.flow AND runs.key = u.key AND state <> 'filtered' LIMIT 1) AS r"
)


async def accept_many(
    conn: Conn, items: Sequence[AcceptItem], prepare: bool | None = False
) -> list[list[Acceptance]]:
    """Accept every item, in order, with the result of accepting them one after the other: an
    event id stored once, the first run of a (flow, key) accepted and every later one a
    duplicate naming it, a filtered run recorded without holding its key.

    One statement for the whole batch (`_ACCEPT`: the events, the ordering-key locks, the key
    holders, the decisions of `rows.accept_rows` and the runs inserted), so a batch is one
    round trip, its own transaction on an autocommit connection. Per statement, psycopg's
    waiting and parameter work was most of an accept's CPU in the node (6 round trips a batch
    before). Runs with metric labels whose values were all admitted before take the same
    statement (their keys read first); a new value takes `_accept_in_steps`, which admits it
    for the runs inserted only."""
    runs = [run for _, item_runs in items for run in item_runs]
    labels: list[str | None] = [None] * len(runs)
    if any(run.labels is not None for run in runs):
        seen = await labels_if_seen(conn, [run.labels for run in runs])
        if seen is None:  # a label value not admitted yet: admitted with the runs inserted
            async with conn.transaction():
                return await _accept_in_steps(conn, items, prepare)
        labels = seen
    events = _columns([event for event, _ in items])
    if not runs:  # no flow wanted these events: they are stored all the same
        await conn.execute(_INSERT_EVENTS, events)
        return [[] for _ in items]
    rows = [row for _, item_rows in run_rows(items) for row in item_rows]
    rows = [(*row[:15], label) for row, label in zip(rows, labels, strict=True)]  # admitted
    # Ordering keys are locked in one sorted order, so two accepts cannot deadlock on them.
    locks = sorted({run.ordering_key for run in runs if run.ordering_key})
    found = await conn.execute(_ACCEPT, [*events, locks, *_columns(rows)], prepare=prepare)
    answers: list[tuple[str, str, str]] = []
    lost: dict[tuple[str, str], str] = {}
    for run_id, flow, key, state, corr, held_id, held_corr, first_id, first_corr, first_i, i, \
            inserted in await found.fetchall():  # fmt: skip
        if held_id is not None:
            answers.append((held_id, "duplicate", held_corr))
        elif first_i is not None and first_i < i:
            answers.append((first_id, "duplicate", first_corr))
        else:
            answers.append((run_id, "filtered" if state == "filtered" else "accepted", corr))
            if not inserted:  # another replica committed this key after the statement began
                lost[(flow, key)] = run_id
    grouped, at = [], 0
    for _, item_runs in items:
        grouped.append(answers[at : at + len(item_runs)])
        at += len(item_runs)
    return await _settled(conn, grouped, lost, prepare)


async def _accept_in_steps(
    conn: Conn, items: Sequence[AcceptItem], prepare: bool | None
) -> list[list[Acceptance]]:
    """`accept_many` in the caller's transaction, a statement at a time: the key holders are
    read first, so that only the runs inserted have their metric labels admitted."""
    runs = [run for _, item_runs in items for run in item_runs]
    await conn.execute(_INSERT_EVENTS, _columns([event for event, _ in items]))
    locks = sorted({run.ordering_key for run in runs if run.ordering_key})
    if locks:
        await conn.execute(_LOCK_KEYS, (locks,))
    holders = await _key_holders(conn, {(run.flow, run.key) for run in runs}, prepare)
    results, rows = accept_rows(run_rows(items), holders)
    labels = await admit_postgres_many(conn, [row[15] for row in rows])
    rows = [(*row[:15], admitted) for row, admitted in zip(rows, labels, strict=True)]
    return await _settled(conn, results, await _insert_runs(conn, rows), prepare)


async def _settled(
    conn: Conn,
    answers: list[list[tuple[str, str, str]]],
    lost: dict[tuple[str, str], str],
    prepare: bool | None,
) -> list[list[Acceptance]]:
    """Each item's (run id, status, correlation id) answers as Acceptances, a run that `lost`
    its (flow, key) to another replica (it committed the key after we looked) answered as a
    duplicate of the replica's run, which holds the key."""
    renamed = {}  # our run id -> (the holder's id, its correlation id)
    if lost:
        taken = await _key_holders(conn, lost.keys(), prepare)
        renamed = {lost[key]: taken[key] for key in lost}
    return [
        [
            Acceptance(renamed[a[0]][0], "duplicate", renamed[a[0]][1])
            if a[0] in renamed
            else Acceptance._make(a)
            for a in item
        ]
        for item in answers
    ]


async def _insert_runs(conn: Conn, rows: list[tuple[Any, ...]]) -> dict[tuple[str, str], str]:
    """Insert the runs; return {(flow, key): run id} of those a concurrent holder of their key
    kept out."""
    if not rows:
        return {}
    found = await conn.execute(_INSERT_RUNS, _columns(rows))
    inserted = {row[0] for row in await found.fetchall()}
    # run_row: (id, flow, flow_version, plan_digest, event_id, state, key, ...)
    return {(row[1], row[6]): row[0] for row in rows if row[0] not in inserted}


def _columns(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """`rows` as one list per column (the arrays the unnest statements take)."""
    columns = [list(column) for column in zip(*rows, strict=True)]
    return columns


def _unnest(types: Sequence[str]) -> str:
    return "unnest(" + ", ".join(f"%b::{kind}[]" for kind in types) + ")"


# event_row: (id, type, source, subject, time, data, attributes, received_at)
_EVENT_TYPES = ("text",) * 7 + ("float8",)
_INSERT_EVENTS = (
    "INSERT INTO events (id, type, source, subject, time, data, attributes, received_at) "
    f"SELECT * FROM {_unnest(_EVENT_TYPES)} ON CONFLICT (id) DO NOTHING"
)
# run_row: (id, flow, flow_version, plan_digest, event_id, state, key, ordering_key,
# correlation_id, traceparent, created_at, updated_at, replay_of, parked_holds_key, reason,
# labels (admitted: JSON text))
_RUN_TYPES = (
    "text", "text", "int4", *("text",) * 7, "float8", "float8", "text", "bool", "text", "text",
)  # fmt: skip
_INSERT_RUNS = (
    "INSERT INTO runs (id, flow, flow_version, plan_digest, event_id, state, key, ordering_key, "
    "correlation_id, traceparent, created_at, updated_at, replay_of, parked_holds_key, reason, "
    "labels) "
    f"SELECT * FROM {_unnest(_RUN_TYPES)} "
    "ON CONFLICT (flow, key) WHERE state <> 'filtered' DO NOTHING RETURNING id"
)
_RUN_NAMES = (
    "id, flow, flow_version, plan_digest, event_id, state, key, ordering_key, correlation_id, "
    "traceparent, created_at, updated_at, replay_of, parked_holds_key, reason, labels"
)
# `accept_many` in one statement. `lk` takes the ordering keys' locks (in the array's sorted
# order) before the first run is inserted, so one key's runs get their seq in commit order;
# `held` reads the runs already holding the batch's keys; `first` is each free key's first
# unfiltered run in the batch. A run is inserted unless held or after its key's first; what is
# not inserted although it should have been lost its key to another replica (ON CONFLICT).
_ACCEPT = f"""
WITH ev AS (
    INSERT INTO events (id, type, source, subject, time, data, attributes, received_at)
    SELECT * FROM {_unnest(_EVENT_TYPES)} ON CONFLICT (id) DO NOTHING),
lk AS (SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) AS n
       FROM unnest(%b::text[]) AS k),
b AS (SELECT * FROM {_unnest(_RUN_TYPES)} WITH ORDINALITY AS b ({_RUN_NAMES}, i)),
held AS (
    SELECT u.flow, u.key, r.id, r.correlation_id FROM (SELECT DISTINCT flow, key FROM b) AS u
    CROSS JOIN LATERAL (SELECT id, correlation_id FROM runs
        WHERE runs.flow = u.flow AND runs.key = u.key AND state <> 'filtered' LIMIT 1) AS r),
first AS (
    SELECT DISTINCT ON (flow, key) flow, key, id, correlation_id, i FROM b
    WHERE state <> 'filtered' AND (flow, key) NOT IN (SELECT flow, key FROM held)
    ORDER BY flow, key, i),
decided AS (
    SELECT b.*, h.id AS held_id, h.correlation_id AS held_corr, f.id AS first_id,
           f.correlation_id AS first_corr, f.i AS first_i
    FROM b LEFT JOIN held AS h USING (flow, key) LEFT JOIN first AS f USING (flow, key)),
ins AS (
    INSERT INTO runs ({_RUN_NAMES})
    SELECT {_RUN_NAMES} FROM decided
    WHERE held_id IS NULL AND (first_i IS NULL OR first_i >= i) AND (SELECT n FROM lk) >= 0
    ORDER BY i
    ON CONFLICT (flow, key) WHERE state <> 'filtered' DO NOTHING RETURNING id)
SELECT d.id, d.flow, d.key, d.state, d.correlation_id, d.held_id, d.held_corr, d.first_id,
       d.first_corr, d.first_i, d.i, ins.id IS NOT NULL
FROM decided AS d LEFT JOIN ins ON ins.id = d.id ORDER BY d.i
"""
# The keys in the array's (sorted) order: a function scan yields an array's elements in order.
_LOCK_KEYS = "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest(%s::text[]) AS k"


async def _key_holders(
    conn: Conn, keys: Iterable[tuple[str, str]], prepare: bool | None
) -> dict[tuple[str, str], tuple[str, str]]:
    """(flow, key) -> (id, correlation id) of the run holding each of `keys`, if any."""
    pairs = list(keys)
    if not pairs:
        return {}
    columns = ([flow for flow, _ in pairs], [key for _, key in pairs])
    found = await conn.execute(_HOLDERS, columns, prepare=prepare)
    return {(flow, key): (run_id, corr) for flow, key, run_id, corr in await found.fetchall()}


async def select_runs(conn: Conn, rest: str, params: list[Any]) -> list[RunRecord]:
    query = f"SELECT {RUN_COLUMNS} FROM runs {rest}"
    rows = await (await conn.execute(query, params)).fetchall()
    return await run_records_with_replays(conn, rows)


async def run_records_with_replays(conn: Conn, rows: Sequence[Sequence[Any]]) -> list[RunRecord]:
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


async def audit(
    conn: Conn, at: float, actor: str, action: str,
    run_id: str | None, detail: Any,
) -> None:  # fmt: skip
    await append_postgres(conn, at, actor, action, run_id, dumps(detail))


async def claim(conn: Conn, worker: str, limit: int, now: float, lease: float) -> list[RunRecord]:
    """Lease up to `limit` due runs to `worker` (see `Store.claim`), with their events and steps."""
    params = {"now": now, "limit": limit, "window": window(limit), "worker": worker,
              "until": now + lease, "wall": time.time()}  # fmt: skip
    rows = await lease_runs(conn, params)
    records = await run_records_with_replays(conn, sorted(rows, key=lambda row: row[12]))
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


async def checkpoint(
    conn: Conn, cp: Checkpoint, step: dict[str, Any] | None, now: float
) -> Reason | None:
    """`Store.checkpoint`: the step record, the run's new state (unless a cancel request stands)
    and the emitted events; answers the run's cancel request."""
    found = await (
        await conn.execute("SELECT state, reason FROM runs WHERE id = %s FOR UPDATE", (cp.run_id,))
    ).fetchone()
    if found is None:
        raise StoreError(f"checkpoint for unknown run {cp.run_id!r}")
    cancel, written, sets, params = checkpoint_update(cp, found, now, "%s")
    sets = set_labels(sets, params, await admit_postgres(conn, cp.labels), "%s")
    if step is not None:
        await conn.execute(_UPSERT_STEP, step)
    await conn.execute(
        f"UPDATE runs SET {sets} WHERE id = %s",
        [*params, cp.run_id],
    )
    if cp.emitted:
        async with conn.cursor() as cursor:
            await cursor.executemany(
                "INSERT INTO outbox (run_id, event, created_at) VALUES (%s, %s, %s)",
                [(cp.run_id, dumps(fields(event)), now) for event in cp.emitted],
            )
    await run_statements_async(conn, history.after_checkpoint(cp, written, found, now), False)
    return cancel


_UPSERT_STEP = (
    "INSERT INTO steps (run_id, step_id, state, output, input_digest, error, attempts, "
    "updated_at) VALUES (%(run_id)s, %(step_id)s, %(state)s, %(output)s, %(input_digest)s, "
    "%(error)s, %(attempts)s, %(updated_at)s) "
    "ON CONFLICT (run_id, step_id) DO UPDATE SET state = EXCLUDED.state, "
    "output = EXCLUDED.output, input_digest = EXCLUDED.input_digest, error = EXCLUDED.error, "
    "attempts = EXCLUDED.attempts, updated_at = EXCLUDED.updated_at"
)


async def set_run_state(conn: Conn, run_id: str, change: StateChange, now: float) -> RunRecord:
    """`Store.set_run_state`: the change and its audit entry."""
    found = await (
        await conn.execute("SELECT state FROM runs WHERE id = %s FOR UPDATE", (run_id,))
    ).fetchone()
    if found is None:
        raise StoreError(f"run {run_id!r} does not exist")
    data = None if change.data is None else dumps(change.data.value)
    sets, params = state_update(run_id, found[0], change, now, data, "%s")
    sets = set_labels(sets, params, await admit_postgres(conn, change.labels), "%s")
    await run_statements_async(conn, history.before_change(run_id, change, now), False)
    await conn.execute(
        f"UPDATE runs SET {sets} WHERE id = %s",
        [*params, run_id],
    )
    if change.reset_steps:
        await conn.execute(
            "DELETE FROM steps WHERE run_id = %s AND step_id = ANY(%s)",
            (run_id, list(change.reset_steps)),
        )
    await run_statements_async(conn, history.after_change(run_id, change, data, now), False)
    detail = change.audit_detail(found[0])
    await audit(conn, now, change.actor, change.audit_action, run_id, detail)
    (record,) = await select_runs(conn, "WHERE id = %s", [run_id])
    return record
