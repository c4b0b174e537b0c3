"""Alerts: what one evaluation pass costs on a big store, next to a scrape of the business
metrics (the same aggregates read), which a Prometheus server does every 15 s or so.

1,000,000 runs of the `local` flow in a SQLite store (inserted with SQL, as bench_metrics.py
does: 4% parked with NO_AMOUNT, 3% dead-lettered), four Alerts (parked runs as one subject,
parked runs per reason, a metric over a threshold, a circuit) and the ten Metrics of
bench_metrics.py. The first pass creates the notifications (nothing is delivered: no chat runs
here); the steady passes after it find every subject notified within its interval. Medians of
20 passes.

    python tests/bench/bench_alerts.py [--stored M]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_metrics import METRICS, fill  # noqa: E402
from bench_runtime import write_project  # noqa: E402

from engine.compiler import compile_project  # noqa: E402
from engine.runtime.alerting import Alerting  # noqa: E402
from engine.runtime.business import measure  # noqa: E402
from engine.store import SQLiteStore  # noqa: E402
from engine.store.aggregates import metric_config  # noqa: E402

ALERTS = """\
apiVersion: syncline/v1
kind: System
metadata: {name: chat}
spec:
  baseUrl: http://127.0.0.1:9
  idempotencyHeader: Idempotency-Key
  operations: {post-message: {method: POST, path: "/hooks/{channel}"}}
---
apiVersion: syncline/v1
kind: Alert
metadata: {name: a1-parked}
spec:
  when: {parked: {flows: [local], reasons: [NO_AMOUNT]}}
  notify: {system: chat, operation: post-message, params: {channel: "'a'"},
           body: "{text: join(' ', [to_string(count), 'parked, oldest', run.id])}"}
---
apiVersion: syncline/v1
kind: Alert
metadata: {name: a2-by-reason}
spec:
  when: {parked: {flows: ["*"], per: reason}}
  notify: {system: chat, operation: post-message, params: {channel: "'a'"},
           body: {template: "{{ {'text': subject ~ ': ' ~ count} }}"}}
---
apiVersion: syncline/v1
kind: Alert
metadata: {name: a3-metric}
spec:
  when: {metric: {name: m2-parked, above: 10}}
  notify: {system: chat, operation: post-message, params: {channel: "'a'"},
           body: "{text: to_string(metric.value)}"}
---
apiVersion: syncline/v1
kind: Alert
metadata: {name: a4-circuit}
spec:
  when: {circuit: {system: chat}}
  notify: {system: chat, operation: post-message, params: {channel: "'a'"},
           body: "{text: system.name}"}
"""


async def measure_ms(root: Path, stored: int) -> tuple[float, float, float]:
    """(first pass, steady pass, scrape) in milliseconds."""
    (root / "flows" / "metrics.yaml").write_text(METRICS)
    (root / "flows" / "alerts.yaml").write_text(ALERTS)
    plan = compile_project(root)
    db = root / ".syncline" / "alerts.db"
    async with SQLiteStore(db) as store:
        await store.sync_metrics(metric_config(plan.metrics))
    fill(db, stored)
    async with SQLiteStore(db) as store:
        alerting = Alerting(store, lambda: plan, lambda _: None,  # type: ignore[arg-type,return-value]
                            clock=time.time)
        started = time.perf_counter()
        created = await alerting.evaluate()
        first = (time.perf_counter() - started) * 1000
        assert {n.alert for n in created} == {"a1-parked", "a2-by-reason", "a3-metric"}, created
        parked = stored * 4 // 100  # counted exactly, beyond the page of runs listed
        assert {n.summary for n in created if n.alert == "a1-parked"} == {f"{parked} runs parked"}
        steady, scrapes = [], []
        for _ in range(20):
            started = time.perf_counter()
            assert await alerting.evaluate() == []
            steady.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            measure(plan.metrics, await store.read_aggregates())
            scrapes.append((time.perf_counter() - started) * 1000)
    return first, statistics.median(steady), statistics.median(scrapes)


async def main(stored: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = write_project(Path(tmp), "http://127.0.0.1:9")
        first, steady, scrape = await measure_ms(root, stored)
    print(f"{stored:,} stored runs ({stored * 4 // 100:,} parked), 4 Alerts, 10 Metrics")
    print(f"  first pass (3 notifications created): {first:.1f} ms")
    print(f"  steady pass: {steady:.1f} ms = x{steady / scrape:.1f} a business-metrics scrape "
          f"({scrape:.1f} ms); every 10 s that is {steady / 100:.2f}% of one core")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stored", type=int, default=1_000_000)
    asyncio.run(main(parser.parse_args().stored))
