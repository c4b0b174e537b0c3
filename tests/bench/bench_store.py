"""Durable acceptance throughput of SQLiteStore: group commit vs one commit per event.

    python tests/bench/bench_store.py [--events N] [--repeat R]

For 1, 32 and 256 concurrent producers, each looping over `store.accept(event, [run])`, prints
events/s, commits/s and the mean batch size (writes per commit) of the group-committing store,
then the same store with `max_batch=1` (one commit per event, the baseline), and their ratio. Both
run in the same process, one after the other, on fresh files; figures are medians of R runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from engine.store import EventRecord, NewRun, SQLiteStore

PAYLOAD = {  # ~1 KB, the size of a CRM opportunity webhook
    "Id": "0065g00000XyZ1AAA",
    "StageName": "Closed Won",
    "AccountId": "0015g00000AbCdEAA",
    "CurrencyIsoCode": "EUR",
    "Amount": 125000.0,
    "OpportunityLineItems": [
        {"ProductCode": f"SKU-{n:04d}", "Quantity": n, "UnitPrice": 99.5, "Description": "x" * 40}
        for n in range(8)
    ],
}


@dataclass
class Result:
    events_per_s: float
    commits_per_s: float
    mean_batch: float


def make(n: int) -> tuple[EventRecord, list[NewRun]]:
    """The n-th delivery: its event and the one run it starts."""
    run = NewRun(
        id=f"run-{n}",
        flow="closed-won-to-order",
        flow_version=3,
        plan_digest="sha256:bench",
        key=f"opp-{n}",
        ordering_key=f"acct-{n % 100}",
        correlation_id=f"corr-{n}",
    )
    return EventRecord(f"evt-{n}", "webhook:/hooks/crm", "crm", PAYLOAD), [run]


async def produce(store: SQLiteStore, numbers: range) -> None:
    for n in numbers:
        await store.accept(*make(n))


async def measure(path: Path, producers: int, events: int, max_batch: int | None) -> Result:
    """Accept `events` deliveries from `producers` concurrent loops into a fresh store."""
    async with SQLiteStore(path, max_batch=max_batch) as store:
        commits = store.commits
        start = time.perf_counter()
        await asyncio.gather(
            *(produce(store, range(p, events, producers)) for p in range(producers))
        )
        elapsed = time.perf_counter() - start
        done = store.commits - commits
    return Result(events / elapsed, done / elapsed, events / done)


def median(results: list[Result]) -> Result:
    return Result(
        statistics.median(r.events_per_s for r in results),
        statistics.median(r.commits_per_s for r in results),
        statistics.median(r.mean_batch for r in results),
    )


async def bench(events: int, repeat: int) -> None:
    print(f"{events} events per run, median of {repeat} run(s), payload ~1 KB, WAL+NORMAL")
    print(
        f"{'producers':>9} {'mode':<22} {'events/s':>9} {'commits/s':>9} {'batch':>7} {'ratio':>6}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for producers in (1, 32, 256):
            runs: dict[int | None, list[Result]] = {None: [], 1: []}
            for attempt in range(repeat):
                for max_batch in (None, 1):  # interleaved, so drift hits both alike
                    path = Path(tmp) / f"p{producers}-b{max_batch}-{attempt}" / "syncline.db"
                    runs[max_batch].append(await measure(path, producers, events, max_batch))
            group, single = median(runs[None]), median(runs[1])
            for label, r in (("group commit, no linger", group), ("one commit per event", single)):
                ratio = r.events_per_s / single.events_per_s
                print(
                    f"{producers:>9} {label:<22} {r.events_per_s:>9,.0f} "
                    f"{r.commits_per_s:>9,.0f} {r.mean_batch:>7.1f} {ratio:>5.2f}x"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(bench(args.events, args.repeat))


if __name__ == "__main__":
    main()
