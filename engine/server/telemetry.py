"""Business metrics on /metrics and GET /api/v1/metrics.

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


async def business_values(state: ServerState) -> list[MetricValue]:
    """Every Metric of the active plan, measured now."""
    aggregates = await state.runtime.store.read_aggregates()
    return measure(state.plan.metrics, aggregates)


def render(values: list[MetricValue]) -> bytes:
    """The Prometheus text of the business metric families."""
    if not values:
        return b""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(values))
    return generate_latest(registry)


def as_json(values: list[MetricValue]) -> dict[str, object]:
    at = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z"
    return {"metrics": [value.as_dict() for value in values], "measured_at": stamp}


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
