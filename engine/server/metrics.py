"""Prometheus metrics of one server, in its own registry (two apps in a process never mix).

`Metrics` is also the runtime's `Observer`: the runtime calls `run_state` and `step_attempt`.
Labelled children are cached, so counting a request costs a dict lookup and an increment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Every metric `syncline serve` exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "syncline_http_requests",
            "HTTP requests by route and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.ingest_latency = Histogram(
            "syncline_ingest_seconds",
            "Time from request start to durable acknowledgement",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
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
        self._children: dict[tuple[Any, ...], Any] = {}

    def watch_queue(self, depth: Callable[[], int], pending: Callable[[], int]) -> None:
        """Read the queue depth and pending ingest count when scraped."""
        self.queue_depth.set_function(lambda: float(depth()))
        self.pending_ingest.set_function(lambda: float(pending()))

    def request(self, route: str, method: str, status: int) -> None:
        key = ("req", route, method, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(route, method, str(status))
        child.inc()

    def ingest(self, kind: str, seconds: float) -> None:
        key = ("ingest", kind)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.ingest_latency.labels(kind)
        child.observe(seconds)

    def reload(self, ok: bool) -> None:
        self.reloads.labels("success" if ok else "failure").inc()

    def active_plan(self, digest: str) -> None:
        self.plan.clear()
        self.plan.labels(digest).set(1)

    # the runtime's Observer ------------------------------------------------------------------

    def run_state(self, flow: str, state: str) -> None:
        self.runs.labels(flow, state).inc()

    def step_attempt(self, flow: str, step: str, outcome: str, retry: bool) -> None:
        self.attempts.labels(flow, step, outcome).inc()
        if retry:
            self.retries.labels(flow, step).inc()

    def render(self) -> bytes:
        """The exposition text of every metric."""
        return generate_latest(self.registry)
