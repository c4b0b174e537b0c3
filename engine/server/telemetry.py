"""What /metrics and GET /api/v1/metrics read from the store: the business metrics and the runs
by flow, state and reason (`syncline_runs`), plus the last reload's result.

Values come from the store's aggregates at scrape time (engine/runtime/business.py), so every
replica answers the same after any restart, and a scrape reads a few rows however many runs
the store holds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from engine.runtime.business import MetricValue, measure
from engine.server.state import ServerState
from engine.server.times import iso
from engine.store.aggregates import Aggregates


async def business_values(state: ServerState) -> list[MetricValue]:
    """Every Metric of the active plan, measured now."""
    aggregates = await state.runtime.store.read_aggregates()
    return measure(state.plan.metrics, aggregates)


async def scrape(state: ServerState) -> bytes:
    """The Prometheus text of what the store knows, and of the last reload."""
    aggregates = await state.runtime.store.read_aggregates()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StoreFamilies(aggregates, state))
    return generate_latest(registry) + render(measure(state.plan.metrics, aggregates))


def render(values: list[MetricValue]) -> bytes:
    """The Prometheus text of the business metric families."""
    if not values:
        return b""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(values))
    return generate_latest(registry)


class _StoreFamilies:
    def __init__(self, aggregates: Aggregates, state: ServerState) -> None:
        self._aggregates, self._state = aggregates, state

    def collect(self) -> Iterator[Metric]:
        runs = GaugeMetricFamily(
            "syncline_runs", "Runs now, by flow, state and reason code (the store's counts)",
            labels=["flow", "state", "reason"])
        counts: dict[tuple[str, str, str], int] = {}
        for kind, flow, state, code, _, n in self._aggregates.tallies:
            if kind == "runs":
                counts[(flow, state, code)] = counts.get((flow, state, code), 0) + n
        for key, n in sorted(counts.items()):
            runs.add_metric(list(key), n)
        yield runs
        reload = self._state.reload
        last = GaugeMetricFamily("syncline_reload_success",
                                 "1 if the last hot reload was accepted, 0 if it was rejected")
        last.add_metric([], 1 if reload is None or reload.ok else 0)
        yield last


def as_json(values: list[MetricValue]) -> dict[str, object]:
    return {"metrics": [value.as_dict() for value in values], "measured_at": iso(time.time())}


class _Families:
    def __init__(self, values: list[MetricValue]) -> None:
        self._values = values

    def collect(self) -> Iterator[Metric]:
        for value in self._values:
            yield from _families(value)


def _families(value: MetricValue) -> Iterator[Metric]:
    m = value.metric
    help_text = m.help + (f" (owner: {m.owner})" if m.owner else "")
    names = [label for label, _ in m.labels]
    if m.kind == "duration":
        histogram = HistogramMetricFamily(m.family + "_seconds", help_text)
        buckets = [("+Inf" if math.isinf(le) else repr(le), n) for le, n in value.buckets]
        if buckets:
            histogram.add_metric([], buckets, value.total)
        yield histogram
        if m.objective is not None:
            ratio = GaugeMetricFamily(
                m.family + "_objective_ratio",
                f"Share of {m.name} observations under {m.objective[1]:g}s "
                f"(objective: {m.objective[0]:g}%)")
            ratio.add_metric([], value.ratio if value.ratio is not None else math.nan)
            yield ratio
        return
    family_type = GaugeMetricFamily if m.kind == "gauge" else CounterMetricFamily
    family = family_type(m.family, help_text, labels=names)
    for key, n in value.series:
        family.add_metric([v for _, v in key], n)
    yield family
