"""Prometheus metrics of one server, in its own registry (two apps in a process never mix).

`Metrics` is also the runtime's `Observer`: the runtime calls `run_state` and `step_attempt`.
The two metrics every request touches (requests by route and status, the ingest latency
histogram) are plain counts that a collector turns into metric families when scraped: counting
a request costs a dict update, not prometheus-client's locks and bucket loop (~2 us a request).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Every metric `syncline serve` exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # (route, method, status) -> requests; kind -> [count per bucket (+Inf last), sum]
        self._requests: dict[tuple[str, str, int], int] = {}
        self._latency: dict[str, tuple[list[int], list[float]]] = {}
        r.register(_Collector(self))
        self.runs = Counter(
            "syncline_runs",
            "Runs entering a state, by flow and state",
            ["flow", "state"],
            registry=r,
        )
        self.attempts = Counter(
            "syncline_step_attempts",
            "Step attempts by outcome",
            ["flow", "step", "outcome"],
            registry=r,
        )
        self.retries = Counter(
            "syncline_step_retries", "Step attempts that were retries", ["flow", "step"], registry=r
        )
        self.shadows = Counter(
            "syncline_shadow", "Shadow calls to a candidate System by result",
            ["flow", "step", "system", "result"], registry=r,
        )
        self.queue_depth = Gauge(
            "syncline_queue_depth", "Runs accepted but not finished", registry=r
        )
        self.pending_ingest = Gauge(
            "syncline_ingest_pending", "Ingest requests in progress", registry=r
        )
        self.rejected = Counter(
            "syncline_ingest_rejected", "Ingest requests refused with 503", registry=r
        )
        self.reloads = Counter("syncline_reloads", "Hot reloads by result", ["result"], registry=r)
        self.plan = Gauge("syncline_plan_info", "The active plan (value 1)", ["digest"], registry=r)
        self.circuits_opened = Counter(
            "syncline_circuit_opened",
            "Circuit breakers this server opened, by System",
            ["system"],
            registry=r,
        )
        self._children: dict[tuple[object, ...], Counter] = {}

    def watch_queue(self, depth: Callable[[], int], pending: Callable[[], int]) -> None:
        """Read the queue depth and pending ingest count when scraped."""
        self.queue_depth.set_function(lambda: float(depth()))
        self.pending_ingest.set_function(lambda: float(pending()))

    def request(self, route: str, method: str, status: int) -> None:
        key = (route, method, status)
        self._requests[key] = self._requests.get(key, 0) + 1

    def ingest(self, kind: str, seconds: float) -> None:
        counts, total = self._latency.get(kind) or self._latency.setdefault(
            kind, ([0] * (len(LATENCY_BUCKETS) + 1), [0.0])
        )
        counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1  # le: a bound counts as in
        total[0] += seconds

    def reload(self, ok: bool) -> None:
        self.reloads.labels("success" if ok else "failure").inc()

    def active_plan(self, digest: str) -> None:
        self.plan.clear()
        self.plan.labels(digest).set(1)

    # the runtime's Observer ------------------------------------------------------------------

    def run_state(self, flow: str, state: str) -> None:
        self._child(self.runs, flow, state).inc()

    def step_attempt(self, flow: str, step: str, outcome: str, retry: bool) -> None:
        self._child(self.attempts, flow, step, outcome).inc()
        if retry:
            self._child(self.retries, flow, step).inc()

    def shadow_result(self, flow: str, step: str, system: str, result: str) -> None:
        self._child(self.shadows, flow, step, system, result).inc()

    def circuit_opened(self, system: str, failure_rate: float, calls: int) -> None:
        self._child(self.circuits_opened, system).inc()

    def _child(self, metric: Counter, *labels: str) -> Counter:
        """`metric.labels(*labels)`, looked up once (`labels` costs ~2 us a call)."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def render(self) -> bytes:
        """The exposition text of every metric."""
        return generate_latest(self.registry)


class _Collector:
    """Turns the plain counts of `Metrics.request` and `Metrics.ingest` into metric families."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return list(self._families({}, {}))

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        # Copies: requests go on counting on the event loop while a scrape renders.
        latency = {kind: (list(c), t[0]) for kind, (c, t) in list(m._latency.items())}
        return self._families(dict(m._requests), latency)

    @staticmethod
    def _families(
        requests: dict[tuple[str, str, int], int], latency: dict[str, tuple[list[int], float]]
    ) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "syncline_http_requests",
            "HTTP requests by route and status",
            labels=["route", "method", "status"],
        )
        for (route, method, status), count in sorted(requests.items()):
            family.add_metric([route, method, str(status)], count)
        yield family
        histogram = HistogramMetricFamily(
            "syncline_ingest_seconds",
            "Time from request start to durable acknowledgement",
            labels=["kind"],
        )
        bounds = [*(repr(bound) for bound in LATENCY_BUCKETS), "+Inf"]
        for kind, (counts, total) in sorted(latency.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(bounds, counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            histogram.add_metric([kind], buckets, total)
        yield histogram
