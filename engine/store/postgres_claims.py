"""The PostgreSQL store's claim statement: which runs may execute now, leased in the statement
that finds them (engine/store/postgres_sql.py runs it inside the claim's transaction).

As on SQLite (engine/store/sqlite_claims.py), a run may execute now if it is due and the head of
its ordering key (engine/store/ordering.py), runs are claimed oldest first, and the heads are
found the cheaper way first, in one statement (one round trip):

- the window (`held`, `near`): the oldest runs holding a key, in arrival order through
  runs_held. Being the oldest, they hold every older holder (and active run) of their keys, so
  the window itself says which of them are heads: its first active run of each key, else its
  first holder, if no active run of the key lies beyond it (a seek into runs_active, for such
  firsts only). Every claimable run up to the window's last one is known exactly, so if `limit`
  of them are due, they are the oldest `limit`.
- the walk (`keys`, `walked`), only when the window was full and holds fewer: the keys through
  runs_blocking (a skip scan: one seek per key), per key a seek into runs_active for its active
  run, else one into runs_blocking for its oldest holder. Two seeks per busy key, however long
  its queue; its first term is false when the window sufficed, and then it reads nothing.

The candidates are leased with FOR UPDATE SKIP LOCKED: a row another replica is claiming right now
is skipped, not waited for, and one it committed meanwhile is checked again (due?) in its new
version, so replicas racing never lease one run twice. Which runs are heads is decided in the
statement's snapshot; a run becomes a head only once its key's head stops, which a racing claim
cannot do.
"""

from __future__ import annotations

from typing import Any

import psycopg

from engine.store.ordering import ACTIVE, HOLDS_KEY
from engine.store.rows import RUN_COLUMNS

# The window: room for the runs executing (the oldest holders are the active runs, which are
# not due), and 4 candidates for each run the claim may take (as on SQLite).
WINDOW_BASE, WINDOW_MAX = 64, 256
_NO_BOUND = 2**62  # a window that holds every run holding a key

_DUE = (
    "(state = 'pending' OR (state = 'waiting' AND next_attempt_at <= %(now)s) "
    "OR (state = 'running' AND lease_until <= %(now)s))"
)
_FREE = (
    "SELECT seq FROM runs WHERE ordering_key IS NULL "
    f"AND state IN ('pending', 'running', 'waiting') AND {_DUE}"
)
# The seqs of the claimable runs' candidates (`candidates`), for a window of %(window)s runs
# (0: walk every key). `plan.walk`: the window was full and holds fewer than %(limit)s due runs.
_CANDIDATES = f"""
WITH RECURSIVE held AS MATERIALIZED (
    SELECT seq, ordering_key AS k, {ACTIVE} AS active, {_DUE} AS due FROM runs
    WHERE ordering_key IS NOT NULL AND {HOLDS_KEY}
    ORDER BY seq LIMIT %(window)s
), bound(seq) AS (
    SELECT CASE WHEN count(*) < %(window)s THEN {_NO_BOUND} ELSE coalesce(max(seq), 0) END
    FROM held
), firsts AS (
    SELECT seq, k, active, due, min(seq) OVER (PARTITION BY k) AS first_held,
           min(seq) FILTER (WHERE active) OVER (PARTITION BY k) AS first_active
    FROM held
), near(seq) AS MATERIALIZED (
    SELECT f.seq FROM firsts AS f
    WHERE f.due AND CASE WHEN f.first_active IS NOT NULL THEN f.seq = f.first_active
                         ELSE f.seq = f.first_held AND NOT EXISTS (
                             SELECT 1 FROM runs
                             WHERE ordering_key IS NOT NULL AND ordering_key = f.k AND {ACTIVE})
                    END
    UNION ALL
    ({_FREE} AND seq <= (SELECT seq FROM bound) ORDER BY seq LIMIT %(limit)s)
), plan(walk) AS (
    SELECT (SELECT seq FROM bound) < {_NO_BOUND}
           AND (SELECT count(*) FROM (SELECT 1 FROM near LIMIT %(limit)s) AS n) < %(limit)s
), keys(k) AS (
    (SELECT ordering_key FROM runs WHERE ordering_key IS NOT NULL AND {HOLDS_KEY}
     AND (SELECT walk FROM plan) ORDER BY ordering_key LIMIT 1)
    UNION ALL
    SELECT (SELECT ordering_key FROM runs WHERE ordering_key > keys.k AND {HOLDS_KEY}
            ORDER BY ordering_key LIMIT 1)
    FROM keys WHERE keys.k IS NOT NULL
), candidates(seq) AS (
    SELECT seq FROM near
    UNION ALL
    SELECT coalesce(
        (SELECT seq FROM runs WHERE ordering_key = keys.k AND {ACTIVE} ORDER BY seq LIMIT 1),
        (SELECT seq FROM runs WHERE ordering_key = keys.k AND {HOLDS_KEY} ORDER BY seq LIMIT 1))
    FROM keys WHERE keys.k IS NOT NULL
    UNION ALL
    ({_FREE} AND (SELECT walk FROM plan) ORDER BY seq LIMIT %(limit)s)
)"""
_DUE_CANDIDATES = f"""
    SELECT r.seq FROM runs AS r
    WHERE r.seq = ANY (ARRAY(SELECT seq FROM candidates)) AND {_DUE}
    ORDER BY r.seq
    LIMIT %(limit)s"""

# The seqs of the runs a claim would lease, oldest first, without leasing them (tests, bench).
CLAIMABLE_SQL = _CANDIDATES + _DUE_CANDIDATES
# Lease them: due runs in arrival order that are heads, and due runs without a key.
CLAIM_SQL = f"""{_CANDIDATES}, due AS ({_DUE_CANDIDATES}
    FOR UPDATE OF r SKIP LOCKED
)
UPDATE runs SET state = 'running', lease_owner = %(worker)s, lease_until = %(until)s,
                updated_at = %(wall)s, next_attempt_at = NULL
FROM due WHERE runs.seq = due.seq
RETURNING {", ".join(f"runs.{column.strip()}" for column in RUN_COLUMNS.split(","))}
"""


async def lease_runs(conn: psycopg.AsyncConnection[Any], params: dict[str, Any]) -> list[Any]:
    """Run CLAIM_SQL (inside the caller's transaction); return the leased runs' rows.

    Planned once per connection (a prepared, generic plan): PostgreSQL takes ~1.3 ms to plan
    the statement and 0.2-0.4 ms to run its window, and on its own it keeps planning it anew
    for each claim's values. Its plan does not depend on them: every step is an index seek or
    a LIMITed index scan."""
    await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
    found = await conn.execute(CLAIM_SQL, params, prepare=True)
    return await found.fetchall()


def window(limit: int) -> int:
    """How many of the oldest runs holding a key a claim of `limit` runs looks at first."""
    return min(WINDOW_BASE + 4 * limit, WINDOW_MAX)


# runs_held: the runs holding their ordering key, in arrival order (the window's index).
MIGRATION = f"""
CREATE INDEX runs_held ON runs (seq) WHERE ordering_key IS NOT NULL AND {HOLDS_KEY};
"""
