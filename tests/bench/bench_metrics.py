"""Business metrics (the Metric kind): their cost on the hot path, and the cost of a scrape.

1. Ingest and execution (the `local` flow of bench_runtime.py: map, validate, emit) with ten
   Metric definitions active (four of them with a label that reads the run's data or a step's
   output, resolved when the run is written) vs none: runs/s on fresh SQLite stores, rounds
   alternating which goes first, the median of each; the issue asks for a ratio of at least 0.90.
   Also the CPU a run costs the runtime and its SQLite writer process together, with and
   without: on a machine shared with other work, runs/s swings by a fifth between runs of this
   bench, the CPU far less (the ratio of CPU is what throughput would be if CPU were all).
2. A scrape of the business metrics (read the aggregates, measure, render the Prometheus text)
   with 1,000,000 runs in a SQLite store (inserted with SQL, through the triggers that keep the
   aggregates, the data labels among 8 currencies) and the ten Metrics: the median of 20
   scrapes; the issue asks for < 50 ms.

    python tests/bench/bench_metrics.py [--runs N] [--rounds R] [--stored M]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_runtime import write_project  # noqa: E402

from engine.compiler import compile_project  # noqa: E402
from engine.runtime import EventMeta, Runtime  # noqa: E402
from engine.runtime.business import measure  # noqa: E402
from engine.server.telemetry import render  # noqa: E402
from engine.store import SQLiteStore  # noqa: E402
from engine.store.aggregates import metric_config  # noqa: E402

METRICS = """\
apiVersion: syncline/v1
kind: Metric
metadata: {name: m1-awaiting-check}
spec:
  help: x
  gauge: {flow: local, states: [pending, running, waiting, parked], beforeStep: check}
  labels: {reason: reason.code, currency: steps.order.currency}
---
apiVersion: syncline/v1
kind: Metric
metadata: {name: m2-parked}
spec:
  help: x
  gauge: {flow: local, states: [parked]}
  labels: {reason: reason.code, currency: data.Currency}
---
apiVersion: syncline/v1
kind: Metric
metadata: {name: m3-exceptions}
spec: {help: x, gauge: {flow: "*", states: [parked, dead-lettered]}, labels: {flow: flow}}
---
apiVersion: syncline/v1
kind: Metric
metadata: {name: m4-queued}
spec: {help: x, gauge: {flow: local, states: [pending]}, labels: {currency: data.Currency}}
---
apiVersion: syncline/v1
kind: Metric
metadata: {name: m5-not-emitted}
spec: {help: x, gauge: {flow: local, states: [pending, running, parked], beforeStep: done}}
---
apiVersion: syncline/v1
kind: Metric
metadata: {name: m6-succeeded}
spec: {help: x, counter: {flow: local, to: succeeded}}
---
apiVersion: syncline/v1
kind: Metric
metadata: {name: m7-interventions}
spec: {help: x, counter: {flow: "*", actions: [resume, retry, cancel, replay]}}
---
apiVersion: syncline/v1
kind: Metric
metadata: {name: m8-parked-total}
spec:
  help: x
  counter: {flow: local, to: parked}
  labels: {reason: reason.code, currency: data.Currency}
---
apiVersion: syncline/v1
kind: Metric
metadata: {name: m9-cycle}
spec:
  help: x
  duration: {from: {flow: local, state: pending}, to: {flow: local, state: succeeded}}
  objective: {percentile: 95, under: 1m}
---
apiVersion: syncline/v1
kind: Metric
metadata: {name: m10-to-emit}
spec:
  help: x
  duration: {from: {flow: local, state: running}, to: {event: com.bench.done}}
"""


def with_metrics(root: Path, on: bool) -> Path:
    path = root / "flows" / "metrics.yaml"
    if on:
        path.write_text(METRICS)
    elif path.exists():
        path.unlink()
    return root


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU of process `pid` (the SQLite writer child), from /proc."""
    if pid is None or not Path(f"/proc/{pid}/stat").exists():
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one_round(root: Path, runs: int) -> tuple[float, float]:
    """(runs/s, CPU us per run of the runtime and its writer process together): `runs` ingested,
    then timed until every run finished. CPU is counted from the runtime's start to its last
    run (no process start-up, no compile), so it varies far less than runs/s with the load of
    a shared machine."""
    plan = compile_project(root)
    async with SQLiteStore(root / f".syncline/local-{time.monotonic_ns()}.db") as store:
        runtime = Runtime(store, plan, concurrency=32, poll=0.05)
        started = time.perf_counter()
        await runtime.start()
        pid = store._writer.pid if store._writer is not None else None
        cpu = time.process_time() + _cpu_seconds(pid)
        await asyncio.gather(*(runtime.ingest(plan.flows["local"], PAYLOAD,
                                              EventMeta(id=f"e{i}", type="bench", source="b"))
                               for i in range(runs)))
        while not await runtime.idle(0.05):
            pass
        elapsed, cpu = time.perf_counter() - started, time.process_time() + _cpu_seconds(pid) - cpu
        counts = await store.count_runs()
        await runtime.stop()
    assert counts.get(("local", "succeeded")) == runs, counts
    return runs / elapsed, cpu / runs * 1e6


async def throughput(root: Path, runs: int, rounds: int
                     ) -> dict[bool, tuple[float, float]]:
    """Metrics on/off -> medians of (runs/s, CPU us per run) of `rounds` rounds after a
    discarded warm-up; the order alternates per round (the first of two back-to-back runs tends
    to be the faster on this machine)."""
    await one_round(with_metrics(root, False), runs)
    figures: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for i in range(rounds):
        for on in (False, True) if i % 2 == 0 else (True, False):
            figures[on].append(await one_round(with_metrics(root, on), runs))
    return {on: (statistics.median(r for r, _ in found), statistics.median(c for _, c in found))
            for on, found in figures.items()}


PAYLOAD = {"Id": "O1", "Amount": 10, "Currency": "EUR"}
CURRENCIES = ("EUR", "USD", "GBP", "JPY", "CHF", "CAD", "AUD", "SEK")


def fill(db: Path, stored: int) -> None:
    """`stored` runs of `local` in a spread of states (as a day's history would leave them),
    each with the labels its data would resolve (as the store keeps them: by metric key)."""
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO events VALUES ('ev', 'bench', 'b', NULL, NULL, '{}', '{}', 0)")
    keys = dict(conn.execute("SELECT metric, key FROM metric_labels").fetchall())
    states = ["succeeded"] * 90 + ["parked"] * 4 + ["pending"] * 3 + ["dead-lettered"] * 3
    reasons = ['{"code": "NO_AMOUNT", "step": "check", "message": "m"}', None]

    def labels(i: int) -> str:
        currency = [CURRENCIES[i % len(CURRENCIES)]]
        found = {keys[m]: currency for m in ("m2-parked", "m4-queued", "m8-parked-total")}
        if states[i % 100] != "succeeded":  # m1 counts until `check` is done
            found[keys["m1-awaiting-check"]] = currency
        return json.dumps(found)

    with conn:
        conn.executemany(
            "INSERT INTO runs (id, flow, flow_version, plan_digest, event_id, state, key, "
            "correlation_id, created_at, updated_at, reason, labels) "
            "VALUES (?, 'local', 1, 'd', 'ev', ?, ?, ?, 0, 0, ?, ?)",
            ((f"r{i}", states[i % 100], f"k{i}", f"c{i}",
              reasons[0] if states[i % 100] in ("parked", "dead-lettered") else reasons[1],
              labels(i))
             for i in range(stored)),
        )
    conn.close()


async def scrape_ms(root: Path, stored: int) -> float:
    plan = compile_project(with_metrics(root, True))
    db = root / ".syncline" / "scrape.db"
    async with SQLiteStore(db) as store:
        await store.sync_metrics(metric_config(plan.metrics))
    fill(db, stored)
    async with SQLiteStore(db) as store:
        timings = []
        for _ in range(20):
            started = time.perf_counter()
            text = render(measure(plan.metrics, await store.read_aggregates()))
            timings.append((time.perf_counter() - started) * 1000)
        assert b"syncline_business_m3_exceptions" in text
        found = measure(plan.metrics, await store.read_aggregates())
        parked = next(v for v in found if v.metric.name == "m2-parked")
        assert parked.value() == stored * 4 // 100, parked
        assert len({dict(key)["currency"] for key, _ in parked.series}) == len(CURRENCIES)
    return statistics.median(timings)


async def main(runs: int, rounds: int, stored: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = write_project(Path(tmp), "http://127.0.0.1:9")
        found = await throughput(root, runs, rounds)
        (without, cpu_without), (with_, cpu_with) = found[False], found[True]
        print(f"ingest+execution, no Metrics:  {without:8.0f} runs/s {cpu_without:6.0f} us CPU/run")
        print(f"ingest+execution, ten Metrics: {with_:8.0f} runs/s {cpu_with:6.0f} us CPU/run")
        print(f"ratio with/without:            {with_ / without:8.2f}   (issue: >= 0.90)")
        print(f"CPU ratio without/with:        {cpu_without / cpu_with:8.2f}   (runtime + writer)")
        started = time.perf_counter()
        ms = await scrape_ms(root, stored)
        print(f"({stored:,} runs inserted in {time.perf_counter() - started:.0f} s)")
        print(f"scrape with {stored:,} runs, ten Metrics: {ms:6.2f} ms (issue: < 50 ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stored", type=int, default=1_000_000)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.rounds, args.stored))
