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
key (what every claim did before) is timed on the same file for comparison. With --postgres, the
same backlog in PostgreSQL: a claim through the store, and finding the runs to claim alone, with
the window (engine/store/postgres_claims.py) and as the walk over every key it was before.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
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


@contextlib.contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """The URL of a fresh schema, dropped afterwards."""
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        separator = "&" if "?" in url else "?"
        yield f"{url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


async def postgres_case(url: str, keys: int, depth: int, repeat: int) -> float:
    from engine.store.postgres import PostgresStore

    with postgres_schema(url) as schema_url:
        async with PostgresStore(schema_url) as store:
            await fill(store, keys, depth)
            return await claim_seconds(store, repeat)


async def wide_backlog(store: Store) -> list[str]:
    """1,000 keys with 3 queued runs each; the ids of the 32 runs claimed (executing)."""
    for n in range(3000):
        run = NewRun(id=f"r{n}", flow="f", flow_version=1, plan_digest="p",
                     key=f"r{n}", ordering_key=f"k{n % 1000}", correlation_id=f"r{n}")
        await store.accept(EventRecord(id=f"e{n}", type="t", source="s", data={}), [run])
    return [run.id for run in await store.claim("bench", 32, 10**10, 30)]


async def postgres_wide_case(url: str, repeat: int) -> tuple[float, float | None, float | None]:
    """(claim, the claimable runs' statement with its window, walking every key) median seconds
    on the wide backlog: each round 8 executing runs finish and 8 are claimed. The statements
    are timed as each is planned: the window once (generic, prepared: what the store does), the
    walk anew each time (what the store did); None for both on a tree without the window (run
    with PYTHONPATH=<a checkout of main> to time main's claim)."""
    import psycopg

    from engine.store.postgres import PostgresStore

    try:
        from engine.store.postgres_claims import CLAIMABLE_SQL, window
    except ImportError:
        CLAIMABLE_SQL = None  # noqa: N806 - main, before the window
    times: tuple[list[float], list[float], list[float]] = ([], [], [])
    with postgres_schema(url) as schema_url:
        async with PostgresStore(schema_url) as store:
            running = await wide_backlog(store)
            with psycopg.connect(schema_url, autocommit=True) as conn:
                conn.execute("ANALYZE runs")
                for _ in range(repeat):
                    for run_id in running[:8]:
                        await store.checkpoint(Checkpoint(run_id, None, "succeeded"))
                    if CLAIMABLE_SQL is not None:
                        for rows, size, generic in ((times[1], window(8), True),
                                                    (times[2], 0, False)):  # fmt: skip
                            mode = "force_generic_plan" if generic else "auto"
                            conn.execute(f"SET plan_cache_mode = {mode}")
                            params = {"now": 10**10, "limit": 8, "window": size}
                            started = time.perf_counter()
                            found = conn.execute(CLAIMABLE_SQL, params, prepare=generic)
                            assert len(found.fetchall()) == 8
                            rows.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    claimed = await store.claim("bench", 8, 10**10, 30)
                    times[0].append(time.perf_counter() - started)
                    running = running[8:] + [run.id for run in claimed]
    claim, near, walk = (statistics.median(each) if each else None for each in times)
    assert claim is not None
    return claim, near, walk


async def wide_case(repeat: int) -> tuple[float, float]:
    """(claim, walk) median seconds on a wide backlog (see the module docstring)."""
    import sqlite3

    from engine.store.sqlite_claims import CLAIM_SQL

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        async with SQLiteStore(path) as store:
            running = await wide_backlog(store)
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
    if postgres:
        pg_claim, near, pg_walk = await postgres_wide_case(postgres, repeat)
        print(f"postgres  1,000 busy keys, 32 executing: a claim of 8 runs {pg_claim * 1000:.2f} "
              "ms (round trips included)", end="")
        if near is not None and pg_walk is not None:
            print(f"; finding them alone {near * 1000:.2f} ms, walking every key (before) "
                  f"{pg_walk * 1000:.2f} ms", end="")
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--postgres", default=None, metavar="URL")
    args = parser.parse_args()
    asyncio.run(bench(args.keys, args.repeat, args.postgres))


if __name__ == "__main__":
    main()
