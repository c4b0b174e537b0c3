"""The SQLite claim's window (engine/store/sqlite_claims.py): it must claim exactly what the walk
over every busy ordering key claims, and cost a few seeks per claimed run where a backlog is
spread over many keys."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

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
