"""The SQLite store's claim: which runs may execute now, leased in the writer process
(engine/store/sqlite_writes.py runs `tx_claim` as one of its jobs), and run rows read back into
records.

A run may execute now if it is due and the head of its ordering key (engine/store/ordering.py):
its key's active run (running or waiting) if it has one, else its oldest run holding the key.
Runs are claimed oldest first. Two ways to find the heads, the cheaper first:

- the window (`WINDOW_SQL`, `NEAR_SQL`): the oldest runs holding a key, in arrival
  order through runs_held, each asked whether it is its key's head (two seeks). Every claimable
  run up to the window's last one is known exactly, so if `limit` of them are found, they are
  the oldest `limit`. A backlog spread over many keys (a busy ingest node: ~1,000 accounts) has
  its heads at its front, and the claim costs a few seeks per run it takes.
- the walk (`CLAIM_SQL`), when the window holds fewer: the keys in order through runs_blocking,
  per key a seek into runs_active for its active run, else one into runs_blocking for its
  oldest holder. Two seeks per busy key, not one per queued run, however long the queue behind
  a key is; but every busy key, however few runs the claim takes (1.5 ms of the writer's CPU at
  ~1,000 busy keys, in every claim while a backlog drains, before the window).

(The WHERE clauses repeat the partial indexes' so that SQLite can use them.)
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from engine.store.base import RunRecord
from engine.store.ordering import ACTIVE, HOLDS_KEY
from engine.store.rows import (
    EVENT_COLUMNS,
    RUN_COLUMNS,
    STEP_COLUMNS,
    dumps,
    run_record,
    with_work,
)

# The window: room for the runs executing (the oldest holders are the active runs, which are
# not due), and 4 candidates for each run the claim may take, so that keys with more than one
# queued run near the front do not send it to the walk. Small, because when the window fails
# (a few keys with long queues) its seeks were spent in vain.
_WINDOW_BASE, _WINDOW_MAX = 64, 256
_NO_BOUND = 2**62  # a window that holds every run holding a key

_DUE = (
    "(state = 'pending' OR (state = 'waiting' AND next_attempt_at <= :now) "
    "OR (state = 'running' AND lease_until <= :now))"
)
_FREE = f"""
    SELECT * FROM (
        SELECT {RUN_COLUMNS} FROM runs INDEXED BY runs_free
        WHERE ordering_key IS NULL AND state IN ('pending', 'running', 'waiting') AND {_DUE}
        AND seq <= :bound
        ORDER BY seq LIMIT :limit
    )
"""
# The due heads (a CTE `heads` names them) and the due runs without an ordering key, oldest first.
_HEADS_AND_FREE = f"""SELECT {RUN_COLUMNS} FROM (
    SELECT {RUN_COLUMNS} FROM runs WHERE seq IN (SELECT seq FROM heads) AND {_DUE}
    UNION ALL
    {_FREE}
)
ORDER BY seq
LIMIT :limit
"""
CLAIM_SQL = f"""
WITH RECURSIVE keys(k) AS (
    SELECT (SELECT min(ordering_key) FROM runs INDEXED BY runs_blocking
            WHERE ordering_key IS NOT NULL AND {HOLDS_KEY})
    UNION ALL
    SELECT (SELECT min(ordering_key) FROM runs INDEXED BY runs_blocking
            WHERE ordering_key > keys.k AND {HOLDS_KEY})
    FROM keys WHERE keys.k IS NOT NULL
), heads(seq) AS (
    SELECT coalesce(
        (SELECT seq FROM runs INDEXED BY runs_active
         WHERE ordering_key = keys.k AND {ACTIVE} ORDER BY seq LIMIT 1),
        (SELECT seq FROM runs INDEXED BY runs_blocking
         WHERE ordering_key = keys.k AND {HOLDS_KEY} ORDER BY seq LIMIT 1))
    FROM keys WHERE keys.k IS NOT NULL
)
{_HEADS_AND_FREE}"""
# The window's last run (its seq) and how many runs it holds.
WINDOW_SQL = f"""
SELECT max(seq), count(*) FROM (
    SELECT seq FROM runs INDEXED BY runs_held
    WHERE ordering_key IS NOT NULL AND {HOLDS_KEY}
    ORDER BY seq LIMIT :window
)
"""
# The claimable runs up to the window's last one (:bound): a run holding its key is its head if
# it is its key's first active run, or, not active itself, if its key has no active run and no
# older holder.
NEAR_SQL = f"""
WITH window(seq, k, active) AS (
    SELECT seq, ordering_key, state IN ('running', 'waiting') FROM runs INDEXED BY runs_held
    WHERE ordering_key IS NOT NULL AND {HOLDS_KEY} AND seq <= :bound
), heads(seq) AS (
    SELECT w.seq FROM window AS w
    WHERE NOT EXISTS (
        SELECT 1 FROM runs INDEXED BY runs_active
        WHERE ordering_key IS NOT NULL AND ordering_key = w.k AND {ACTIVE}
        AND (seq < w.seq OR NOT w.active)
    ) AND (w.active OR NOT EXISTS (
        SELECT 1 FROM runs INDEXED BY runs_blocking
        WHERE ordering_key IS NOT NULL AND ordering_key = w.k AND {HOLDS_KEY} AND seq < w.seq
    ))
)
{_HEADS_AND_FREE}"""


def claimable(conn: sqlite3.Connection, limit: int, now: float) -> list[Any]:
    """The rows (RUN_COLUMNS) of the oldest `limit` runs that may execute at `now`."""
    window = min(_WINDOW_BASE + 4 * limit, _WINDOW_MAX)
    last, held = conn.execute(WINDOW_SQL, {"window": window}).fetchone()
    bound = last if held == window else _NO_BOUND
    params = {"now": now, "limit": limit, "bound": bound}
    rows = conn.execute(NEAR_SQL, params).fetchall()
    if len(rows) < limit and bound != _NO_BOUND:  # older claimable runs may lie beyond it
        rows = conn.execute(CLAIM_SQL, {**params, "bound": _NO_BOUND}).fetchall()
    return rows


def tx_claim(
    conn: sqlite3.Connection, worker: str, limit: int, now: float, lease: float
) -> list[RunRecord]:
    rows = claimable(conn, limit, now)
    if not rows:
        return []
    until, wall = now + lease, time.time()
    conn.execute(
        "UPDATE runs SET state = 'running', lease_owner = ?, lease_until = ?, updated_at = ?, "
        "next_attempt_at = NULL WHERE seq IN (SELECT value FROM json_each(?))",
        (worker, until, wall, dumps([row[12] for row in rows])),
    )
    records = run_records(conn, rows)
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


def run_records(conn: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> list[RunRecord]:
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


# runs_held: the runs holding their ordering key, in arrival order (the window's index).
MIGRATION = f"""
CREATE INDEX runs_held ON runs (seq) WHERE ordering_key IS NOT NULL AND {HOLDS_KEY};
"""
