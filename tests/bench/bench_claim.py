"""A claim's cost does not grow with the runs queued behind parked runs of their ordering keys.

    python tests/bench/bench_claim.py [--keys K] [--repeat R] [--postgres URL]

For each store (SQLite; PostgreSQL with --postgres, a fresh schema dropped afterwards), K ordering
keys each get a parked head and a queue behind it, 10 runs deep and then 200 deep. Nothing is due
(every head is parked, whileParked: block), so every claim looks at each key and finds nothing:
the question is only whether it looks at the queued runs too. Prints the median time of a claim
for both depths and their ratio (deep / shallow; ~1 means the queue behind a key costs nothing).

Then a wide backlog, what a busy ingest node leaves (SQLite): 1,000 keys with 3 queued runs each,
32 runs executing; each claim takes 8 runs after 8 executing ones finished. The claim's window
(engine/store/sqlite_claims.py) finds them at the front of the queue; the walk over every busy
key (what every claim did before) is timed on the same file for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from engine.store import Checkpoint, EventRecord, NewRun, SQLiteStore, Store


async def fill(store: Store, keys: int, depth: int) -> None:
    n = 0
    for k in range(keys):
        runs = []
        for _ in range(depth):
            n += 1
            runs.append(NewRun(id=f"r{n}", flow="f", flow_version=1, plan_digest="p",
                               key=f"r{n}", ordering_key=f"k{k}", correlation_id=f"r{n}"))
        await store.accept(EventRecord(id=f"e{k}", type="t", source="s", data={}), runs)
    for run in await store.claim("bench", keys, 10**10, 30):  # the heads
        await store.checkpoint(Checkpoint(run.id, None, "parked"))


async def claim_seconds(store: Store, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        assert await store.claim("bench", 64, 10**10, 30) == []
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def sqlite_case(keys: int, depth: int, repeat: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        async with SQLiteStore(Path(tmp) / "bench.db") as store:
            await fill(store, keys, depth)
            return await claim_seconds(store, repeat)


async def postgres_case(url: str, keys: int, depth: int, repeat: int) -> float:
    import psycopg

    from engine.store.postgres import PostgresStore

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        separator = "&" if "?" in url else "?"
        async with PostgresStore(f"{url}{separator}options=-csearch_path%3D{schema}") as store:
            await fill(store, keys, depth)
            return await claim_seconds(store, repeat)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


async def wide_case(repeat: int) -> tuple[float, float]:
    """(claim, walk) median seconds on a wide backlog (see the module docstring)."""
    import sqlite3

    from engine.store.sqlite_claims import CLAIM_SQL

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        async with SQLiteStore(path) as store:
            for n in range(3000):
                run = NewRun(id=f"r{n}", flow="f", flow_version=1, plan_digest="p",
                             key=f"r{n}", ordering_key=f"k{n % 1000}", correlation_id=f"r{n}")
                await store.accept(EventRecord(id=f"e{n}", type="t", source="s", data={}), [run])
            running = [run.id for run in await store.claim("bench", 32, 10**10, 30)]
            claims = []
            for _ in range(repeat):
                for run_id in running[:8]:
                    await store.checkpoint(Checkpoint(run_id, None, "succeeded"))
                started = time.perf_counter()
                claimed = await store.claim("bench", 8, 10**10, 30)
                claims.append(time.perf_counter() - started)
                running = running[8:] + [run.id for run in claimed]
        conn = sqlite3.connect(path)
        walks = []
        for _ in range(repeat):
            started = time.perf_counter()
            conn.execute(CLAIM_SQL, {"now": 10**10, "limit": 8, "bound": 2**62}).fetchall()
            walks.append(time.perf_counter() - started)
        conn.close()
    return statistics.median(claims), statistics.median(walks)


async def bench(keys: int, repeat: int, postgres: str | None) -> None:
    cases = [("sqlite", lambda d: sqlite_case(keys, d, repeat))]
    if postgres:
        cases.append(("postgres", lambda d: postgres_case(postgres, keys, d, repeat)))
    for name, case in cases:
        shallow, deep = await case(10), await case(200)
        print(f"{name:<9} {keys} parked keys: claim {shallow * 1000:.2f} ms with 10 runs a key, "
              f"{deep * 1000:.2f} ms with 200: ratio {deep / shallow:.2f}")
    claim, walk = await wide_case(repeat)
    print(f"sqlite    1,000 busy keys, 32 executing: a claim of 8 runs {claim * 1000:.2f} ms "
          f"(writer round trip included); the walk over every key alone {walk * 1000:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--postgres", default=None, metavar="URL")
    args = parser.parse_args()
    asyncio.run(bench(args.keys, args.repeat, args.postgres))


if __name__ == "__main__":
    main()
