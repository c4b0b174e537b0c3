"""The claim's window (engine/store/sqlite_claims.py, engine/store/postgres_claims.py): it must
claim exactly what the walk over every busy ordering key claims, and cost a few seeks per claimed
run where a backlog is spread over many keys."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from engine.store import EventRecord, NewRun, SQLiteStore
from engine.store.sqlite_claims import CLAIM_SQL, claimable

pytestmark = pytest.mark.anyio
NOW = 1000.0
EVERYTHING = 2**62


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def backlog(path: Path, keys: list[str | None]) -> sqlite3.Connection:
    """A store with one pending run per entry of `keys` (its ordering key), in that order."""
    async with SQLiteStore(path) as store:
        for n, key in enumerate(keys):
            run = NewRun(f"r{n}", "sync", 1, "p", f"k{n}", key, f"c{n}")
            await store.accept(EventRecord(f"e{n}", "t", "tests", {}), [run])
    return sqlite3.connect(path)


def walk(conn: sqlite3.Connection, limit: int) -> list[str]:
    rows = conn.execute(CLAIM_SQL, {"now": NOW, "limit": limit, "bound": EVERYTHING})
    return [row[0] for row in rows]


def window(conn: sqlite3.Connection, limit: int) -> list[str]:
    return [row[0] for row in claimable(conn, limit, NOW)]


async def test_the_window_claims_what_the_walk_claims_in_every_state(tmp_path: Path) -> None:
    rng = random.Random(15)
    # a few hot keys with long queues, many cold ones, and runs without a key
    choices = [None, "hot1", "hot2", *(f"acct{i}" for i in range(60))]
    keys = [rng.choice(choices) for _ in range(600)]
    conn = await backlog(tmp_path / "s.db", keys)
    states = [
        ("running", "lease_until = 1100"),  # executing elsewhere: not due, holds its key
        ("running", "lease_until = 900"),  # its worker died: due again
        ("waiting", "next_attempt_at = 1100"),
        ("waiting", "next_attempt_at = 900"),
        ("parked", "parked_holds_key = 1"),
        ("parked", "parked_holds_key = 0"),
        ("succeeded", "lease_until = NULL"),
    ]
    for trial in range(40):
        conn.execute("UPDATE runs SET state = 'pending', lease_until = NULL, "
                     "next_attempt_at = NULL, parked_holds_key = 1")  # fmt: skip
        for seq in rng.sample(range(1, 601), rng.choice([5, 40, 200])):
            state, extra = rng.choice(states)
            conn.execute(f"UPDATE runs SET state = ?, {extra} WHERE seq = ?", (state, seq))
        for limit in (1, 4, 32, 100):
            assert window(conn, limit) == walk(conn, limit), (trial, limit)
    conn.close()


async def test_a_claim_of_a_wide_backlog_costs_a_few_seeks_per_run(tmp_path: Path) -> None:
    # ~1,000 accounts with 3 queued runs each, the 32 oldest executing: the walk visits every
    # key on every claim (1.4 ms of the writer's CPU); the window only the front of the queue.
    conn = await backlog(tmp_path / "s.db", [f"acct{n % 1000}" for n in range(3000)])
    conn.execute("UPDATE runs SET state = 'running', lease_until = 2000 WHERE seq <= 32")
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(count, 100)
    claimed = window(conn, 8)
    near, steps = steps, 0
    assert claimed == walk(conn, 8) == [f"r{n}" for n in range(32, 40)]
    assert near * 10 < steps, (near, steps)
    conn.close()


# PostgreSQL (engine/store/postgres_claims.py): the same window, in the claim's one statement.

PG_STATES = [
    ("running", "lease_until = 1100"),
    ("running", "lease_until = 900"),
    ("waiting", "next_attempt_at = 1100"),
    ("waiting", "next_attempt_at = 900"),
    ("parked", "parked_holds_key = true"),
    ("parked", "parked_holds_key = false"),
    ("succeeded", "lease_until = NULL"),
]


async def pg_backlog(url: str, keys: list[str | None]) -> Any:
    """A PostgreSQL schema with one pending run per entry of `keys`, in that order; a plain
    connection to it."""
    import psycopg

    from engine.store.postgres import PostgresStore

    async with PostgresStore(url) as store:
        for n, key in enumerate(keys):
            run = NewRun(f"r{n}", "sync", 1, "p", f"k{n}", key, f"c{n}")
            await store.accept(EventRecord(f"e{n}", "t", "tests", {}), [run])
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("ANALYZE runs")
    return conn


def pg_claimable(conn: Any, limit: int, window: int) -> list[int]:
    from engine.store.postgres_claims import CLAIMABLE_SQL

    params = {"now": NOW, "limit": limit, "window": window}
    return [row[0] for row in conn.execute(CLAIMABLE_SQL, params).fetchall()]


def pg_leased(conn: Any, limit: int) -> list[int]:
    """The seqs the claim statement itself leases (rolled back afterwards)."""
    from engine.store.postgres_claims import CLAIM_SQL, window

    params = {"now": NOW, "limit": limit, "window": window(limit), "worker": "w",
              "until": NOW + 30, "wall": NOW}  # fmt: skip
    with conn.transaction(force_rollback=True):
        return sorted(row[12] for row in conn.execute(CLAIM_SQL, params).fetchall())


def heads(conn: Any, limit: int) -> list[int]:
    """What ordering.py says may execute, worked out in Python from every row (the oracle)."""
    rows = conn.execute(
        "SELECT seq, ordering_key, state, parked_holds_key, lease_until, next_attempt_at "
        "FROM runs ORDER BY seq"
    ).fetchall()
    head: dict[str, int] = {}
    for seq, key, state, _, _, _ in rows:  # the first active run of each key
        if key is not None and state in ("running", "waiting") and key not in head:
            head[key] = seq
    for seq, key, state, holds, _, _ in rows:  # else its oldest holder
        if key is not None and key not in head and (
            state in ("pending", "running", "waiting") or (state == "parked" and holds)
        ):
            head[key] = seq
    due = [
        seq
        for seq, key, state, _, lease, attempt in rows
        if (key is None or head.get(key) == seq)
        and (
            state == "pending"
            or (state == "waiting" and attempt <= NOW)
            or (state == "running" and lease <= NOW)
        )
    ]
    return due[:limit]


async def test_postgres_window_claims_what_the_walk_claims_in_every_state(
    postgres_url: str,
) -> None:
    from engine.store.postgres_claims import window

    rng = random.Random(15)
    choices = [None, "hot1", "hot2", *(f"acct{i}" for i in range(60))]
    conn = await pg_backlog(postgres_url, [rng.choice(choices) for _ in range(600)])
    walked_beyond = 0
    for trial in range(30):
        conn.execute("UPDATE runs SET state = 'pending', lease_until = NULL, "
                     "next_attempt_at = NULL, parked_holds_key = true")  # fmt: skip
        for seq in rng.sample(range(1, 601), rng.choice([5, 40, 200])):
            state, extra = rng.choice(PG_STATES)
            conn.execute(f"UPDATE runs SET state = %s, {extra} WHERE seq = %s", (state, seq))
        for limit in (1, 4, 32, 100):
            expected = heads(conn, limit)
            claimed = pg_claimable(conn, limit, window(limit))
            assert claimed == pg_claimable(conn, limit, 0) == expected, (trial, limit)
            assert pg_leased(conn, limit) == expected, (trial, limit)
            walked_beyond += bool(expected) and expected[-1] > 64 + 4 * limit
    assert walked_beyond, "no trial needed the walk: the fallback went untested"
    conn.close()


def buffers(conn: Any, limit: int, window: int) -> int:
    """Shared buffers the claimable runs' statement touches (EXPLAIN ANALYZE): its cost."""
    from engine.store.postgres_claims import CLAIMABLE_SQL

    params = {"now": NOW, "limit": limit, "window": window}
    query = f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {CLAIMABLE_SQL}"
    plan = conn.execute(query, params).fetchone()[0][0]["Plan"]
    return int(plan["Shared Hit Blocks"]) + int(plan["Shared Read Blocks"])


async def test_a_postgres_claim_of_a_wide_backlog_reads_only_the_front(postgres_url: str) -> None:
    from engine.store.postgres_claims import window

    conn = await pg_backlog(postgres_url, [f"acct{n % 1000}" for n in range(3000)])
    conn.execute("UPDATE runs SET state = 'running', lease_until = 2000 WHERE seq <= 32")
    conn.execute("VACUUM ANALYZE runs")
    expected = list(range(33, 41))
    assert pg_claimable(conn, 8, window(8)) == pg_claimable(conn, 8, 0) == expected
    near, walk = buffers(conn, 8, window(8)), buffers(conn, 8, 0)
    assert near * 5 < walk, (near, walk)
    conn.close()
