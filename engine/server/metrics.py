"""Prometheus metrics of one server, in its own registry (two apps in a process never mix).

`Metrics` is also the runtime's `Observer`: the runtime calls `run_state` and `step_attempt`.
The two metrics every request touches (requests by route and status, the ingest latency
histogram) are plain counts that a collector turns into metric families when scraped: counting
a request costs a dict update, not prometheus-client's locks and bucket loop (~2 us a request).
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from engine.store.alerts import AlertLog

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# A System is down when each of its last HEALTH_WINDOW calls failed in a way that says so.
HEALTH_WINDOW = 5
DOWN_OUTCOMES = frozenset({"timeout", "network", "5xx"})


class _LabelledCounts:
    """The runtime's Observer hooks that count an event under its labels (a mixin of Metrics,
    whose __init__ creates the counters)."""

    runs: Counter
    attempts: Counter
    retries: Counter
    shadows: Counter
    echoes: Counter
    circuits_opened: Counter
    _children: dict[tuple[object, ...], Counter]

    def run_state(self, flow: str, state: str) -> None:
        self._child(self.runs, flow, state).inc()

    def step_attempt(self, flow: str, step: str, outcome: str, retry: bool) -> None:
        self._child(self.attempts, flow, step, outcome).inc()
        if retry:
            self._child(self.retries, flow, step).inc()

    def shadow_result(self, flow: str, step: str, system: str, result: str) -> None:
        self._child(self.shadows, flow, step, system, result).inc()

    def echo(self, flow: str, system: str) -> None:
        self._child(self.echoes, flow, system).inc()

    def circuit_opened(self, system: str, failure_rate: float, calls: int) -> None:
        self._child(self.circuits_opened, system).inc()

    def _child(self, metric: Counter, *labels: str) -> Counter:
        """`metric.labels(*labels)`, looked up once (`labels` costs ~2 us a call)."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child


class Metrics(_LabelledCounts):
    """Every metric `syncline serve` exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # (route, method, status) -> requests; kind -> [count per bucket (+Inf last), sum]
        self._requests: dict[tuple[str, str, int], int] = {}
        self._latency: dict[str, tuple[list[int], list[float]]] = {}
        # (route, outcome) -> deliveries: accepted/duplicate/filtered, or the refusal's code
        self.deliveries: dict[tuple[str, str], int] = {}
        # (system, operation, outcome) -> calls; (system, operation) -> [counts, sum]; system ->
        # whether each of its last calls failed
        self.calls: dict[tuple[str, str, str], int] = {}
        self._call_latency: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
        self._recent: dict[str, deque[bool]] = {}
        r.register(_Collector(self))
        r.register(_CallCollector(self))
        self.runs = Counter(
            "syncline_run_transitions",
            "Runs entering a state in this process, by flow and state (the store's counts: "
            "syncline_runs)",
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
        self.mismatches = Gauge(
            "syncline_reconciliation_mismatches",
            "Mismatches of each Reconciliation's latest result, by kind",
            ["name", "kind"],
            registry=r,
        )
        self.quota_remaining = Gauge(
            "syncline_quota_remaining",
            "Calls left in the current window of a System's budget (rateLimit perSecond on a "
            "shared store, perHour, perDay), among all replicas",
            ["system", "period"],
            registry=r,
        )
        self.circuits_opened = Counter(
            "syncline_circuit_opened",
            "Circuit breakers this server opened, by System",
            ["system"],
            registry=r,
        )
        self.echoes = Counter(
            "syncline_echoes",
            "Deliveries filtered as the echo of Syncline's own write (reason ECHO), by flow and "
            "the System written to",
            ["flow", "system"],
            registry=r,
        )
        self._children: dict[tuple[object, ...], Counter] = {}
        self.alerts: dict[tuple[str, str], int] = {}  # (alert, state) -> notifications (store)
        r.register(_AlertCollector(self))

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

    def delivery(self, route: str, outcome: str) -> None:
        key = (route, outcome)
        self.deliveries[key] = self.deliveries.get(key, 0) + 1

    def reload(self, ok: bool) -> None:
        self.reloads.labels("success" if ok else "failure").inc()

    def active_plan(self, digest: str) -> None:
        self.plan.clear()
        self.plan.labels(digest).set(1)

    async def read_store(self, store: Any, quotas: dict[tuple[str, str], int]) -> None:
        """Before a scrape: the metrics kept in the store (each Reconciliation's latest result,
        the calls left in each System's budgets)."""
        self.quota_remaining.clear()
        for (system, period), left in quotas.items():
            self.quota_remaining.labels(system, period).set(left)
        latest: dict[str, dict[str, int]] = {}
        for result in await store.list_reconciliations(None, 500):
            report = result["report"]
            if result["state"] != "running" and report and result["name"] not in latest:
                latest[result["name"]] = report.get("counts") or {}
        self.mismatches.clear()
        for name, counts in latest.items():
            for kind, count in counts.items():
                self.mismatches.labels(name, kind).set(count)
        self.alerts = await AlertLog(store).counts()

    # the runtime's Observer ------------------------------------------------------------------

    def call(self, system: str, operation: str, outcome: str, seconds: float) -> None:
        key = (system, operation, outcome)
        self.calls[key] = self.calls.get(key, 0) + 1
        counts, total = self._call_latency.get(key[:2]) or self._call_latency.setdefault(
            key[:2], ([0] * (len(CALL_BUCKETS) + 1), [0.0])
        )
        counts[bisect.bisect_left(CALL_BUCKETS, seconds)] += 1
        total[0] += seconds
        recent = self._recent.get(system) or self._recent.setdefault(
            system, deque(maxlen=HEALTH_WINDOW))
        recent.append(outcome in DOWN_OUTCOMES)

    def render(self) -> bytes:
        """The exposition text of every metric."""
        return generate_latest(self.registry)


class _AlertCollector:
    """syncline_alerts_total{alert,state}: the notifications in the store (every replica
    exports the same counts, and they survive a restart)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return [self._family({})]

    def collect(self) -> Iterator[Metric]:
        yield self._family(dict(self._metrics.alerts))

    @staticmethod
    def _family(counts: dict[tuple[str, str], int]) -> CounterMetricFamily:
        family = CounterMetricFamily(
            "syncline_alerts",
            "Alert notifications by alert and state (pending, sent, failed)",
            labels=["alert", "state"],
        )
        for (alert, state), count in sorted(counts.items()):
            family.add_metric([alert, state], count)
        return family


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
        yield _histogram(
            "syncline_ingest_seconds",
            "Time from request start to durable acknowledgement",
            ["kind"],
            LATENCY_BUCKETS,
            {(kind,): series for kind, series in latency.items()},
        )


def _histogram(name: str, help_text: str, labels: list[str], bounds: tuple[float, ...],
               series: dict[tuple[str, ...], tuple[list[int], float]]) -> HistogramMetricFamily:
    histogram = HistogramMetricFamily(name, help_text, labels=labels)
    names = [*(repr(bound) for bound in bounds), "+Inf"]
    for key, (counts, total) in sorted(series.items()):
        cumulative, buckets = 0, []
        for bound, count in zip(names, counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        histogram.add_metric(list(key), buckets, total)
    return histogram


class _CallCollector:
    """Outbound calls, System health and deliveries, from `Metrics`' plain counts."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        calls = CounterMetricFamily("syncline_calls", "Outbound call attempts by outcome",
                                    labels=["system", "operation", "outcome"])
        for key, count in sorted(dict(m.calls).items()):
            calls.add_metric(list(key), count)
        yield calls
        latency: dict[tuple[str, ...], tuple[list[int], float]] = {
            key: (list(c), t[0]) for key, (c, t) in list(m._call_latency.items())}
        yield _histogram("syncline_call_seconds", "Outbound call attempt duration",
                         ["system", "operation"], CALL_BUCKETS, latency)
        up = GaugeMetricFamily(
            "syncline_system_up",
            f"0 when each of a System's last {HEALTH_WINDOW} calls timed out, failed to connect "
            "or answered 5xx; else 1",
            labels=["system"])
        for system, recent in sorted(list(m._recent.items())):
            up.add_metric([system], 0 if len(recent) == HEALTH_WINDOW and all(recent) else 1)
        yield up
        deliveries = CounterMetricFamily(
            "syncline_deliveries",
            "Webhook, /events and stream-trigger (route stream:<flow>) deliveries: accepted, "
            "duplicate, filtered, or the refusal's code (rejected: a stream message that is no "
            "CloudEvent)",
            labels=["route", "outcome"])
        for route_outcome, count in sorted(dict(m.deliveries).items()):
            deliveries.add_metric(list(route_outcome), count)
        yield deliveries
