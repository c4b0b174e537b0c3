"""Business metric values from the store's aggregates (engine/store/aggregates.py).

`measure(metrics, aggregates)` turns a plan's compiled Metrics and the few rows the store keeps
into values: a gauge or counter is a list of series (labels -> number), a duration a cumulative
histogram with its objective. Labels are evaluated once per aggregate row, not per run; a label
that fails on a row reads `unknown`, and past `MAX_LABEL_VALUES` distinct values of one label the
smallest series read `other`. A metric with labels that read a run's data or steps is counted
from its own rows, each carrying the values its runs resolved (engine/store/label_tallies.py,
which bounds them when they are written).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.compiler.metric_labels import label_value
from engine.compiler.metrics import CompiledMetric
from engine.store.aggregates import Aggregates
from engine.store.label_tallies import ALWAYS, MAX_LABEL_VALUES

__all__ = ["MAX_LABEL_VALUES", "MetricValue", "by_name", "measure"]
Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class MetricValue:
    """One metric now. `series` for gauges and counters; the histogram fields for durations."""

    metric: CompiledMetric
    series: tuple[tuple[Labels, int], ...] = ()
    buckets: tuple[tuple[float, int], ...] = ()  # (upper bound, cumulative count), +inf last
    count: int = 0
    total: float = 0.0                           # sum of the observed seconds
    ratio: float | None = None                   # share of observations meeting the objective

    @property
    def met(self) -> bool | None:
        if self.ratio is None or self.metric.objective is None:
            return None
        return self.ratio * 100 >= self.metric.objective[0]

    def value(self, **labels: str) -> int:
        """The sum of the series whose labels include `labels` (all series without any)."""
        wanted = set(labels.items())
        return sum(n for key, n in self.series if wanted <= set(key))

    def as_dict(self) -> dict[str, Any]:
        m = self.metric
        out: dict[str, Any] = {"name": m.name, "kind": m.kind, "help": m.help, "owner": m.owner,
                               "prometheus": m.family + _SUFFIX[m.kind]}
        if m.kind != "duration":
            out["series"] = [{"labels": dict(key), "value": n} for key, n in self.series]
            out["value"] = self.value()
            return out
        out.update(count=self.count, sum=round(self.total, 6), buckets=[
            {"le": "+Inf" if math.isinf(le) else le, "count": n} for le, n in self.buckets])
        if m.objective is not None:
            out["objective"] = {"percentile": m.objective[0], "under": m.objective[1],
                                "ratio": self.ratio, "met": self.met}
        return out


_SUFFIX = {"gauge": "", "counter": "_total", "duration": "_seconds"}


def measure(metrics: Mapping[str, CompiledMetric], aggregates: Aggregates) -> list[MetricValue]:
    """Every metric's value, by name."""
    return [_measure(metric, aggregates) for _, metric in sorted(metrics.items())]


def _measure(metric: CompiledMetric, aggregates: Aggregates) -> MetricValue:
    if metric.kind == "duration":
        buckets, count, total = aggregates.durations.get(metric.name, ([], 0, 0.0))
        ratio = None
        if metric.objective is not None and count:
            under = dict(buckets).get(metric.objective[1], 0)
            ratio = round(under / count, 6)
        return MetricValue(metric, buckets=tuple(buckets), count=count, total=total, ratio=ratio)
    if metric.run_labels:
        return MetricValue(metric, series=tuple(sorted(_bounded(_labelled(metric, aggregates)
                                                                ).items())))
    series: dict[Labels, int] = {}
    for kind, flow, name, code, step, n in aggregates.tallies:
        sign = _counts(metric, kind, flow, name)
        if sign:
            key = _labels(metric, flow, name, code, step, kind)
            series[key] = series.get(key, 0) + sign * int(n)
    if not metric.labels:
        series.setdefault((), 0)
    return MetricValue(metric, series=tuple(sorted(_bounded(series).items())))


def _counts(metric: CompiledMetric, kind: str, flow: str, name: str) -> int:
    """+1 if a tally row counts towards the metric, -1 if it is subtracted, else 0."""
    if metric.flows is not None and flow not in metric.flows:
        return 0
    if metric.kind == "gauge":
        if name not in metric.states:
            return 0
        if kind == "runs":
            return 1
        return -1 if metric.before_step and kind == f"done:{metric.before_step}" else 0
    if metric.actions:
        return 1 if kind == "action" and name in metric.actions else 0
    return 1 if kind == "entered" and name in metric.states else 0


def _labelled(metric: CompiledMetric, aggregates: Aggregates) -> dict[Labels, int]:
    """A metric with run labels, from the rows counted under the values its runs resolved: a
    gauge counts the runs now in its states, a counter those that entered its state."""
    series: dict[Labels, int] = {}
    for name, flow, state, code, step, values, now, entered in aggregates.labelled:
        if name != metric.name or state not in metric.states or (
                metric.flows is not None and flow not in metric.flows):
            continue
        resolved = iter(values)
        key = tuple(
            (label, next(resolved, "unknown") if label in metric.run_labels else value)
            for label, value in _labels(metric, flow, state, code, step, "runs"))
        series[key] = series.get(key, 0) + (now if metric.kind == "gauge" else entered)
    return series


def _labels(metric: CompiledMetric, flow: str, name: str, code: str, step: str,
            kind: str) -> Labels:
    if not metric.labels:
        return ()
    action = name if kind == "action" else None
    run = {"flow": flow, "state": None if action else name, "action": action,
           "reason": {"code": code, "step": step or None} if code else None}
    return tuple((label, "" if label in metric.run_labels else label_value(expression, run))
                 for label, expression in metric.labels)


def _bounded(series: dict[Labels, int]) -> dict[Labels, int]:
    """At most MAX_LABEL_VALUES values per label (besides `other` and `unknown`): the largest
    series keep theirs."""
    if not series:
        return series
    names = [label for label, _ in next(iter(series))]
    for i, _ in enumerate(names):
        totals: dict[str, int] = {}
        for key, n in series.items():
            if key[i][1] not in ALWAYS:
                totals[key[i][1]] = totals.get(key[i][1], 0) + abs(n)
        if len(totals) <= MAX_LABEL_VALUES:
            continue
        keep = set(sorted(totals, key=lambda v: (-totals[v], v))[:MAX_LABEL_VALUES]) | ALWAYS
        merged: dict[Labels, int] = {}
        for key, n in series.items():
            if key[i][1] not in keep:
                key = (*key[:i], (key[i][0], "other"), *key[i + 1:])
            merged[key] = merged.get(key, 0) + n
        series = merged
    return series


def by_name(values: Iterable[MetricValue]) -> dict[str, MetricValue]:
    return {value.metric.name: value for value in values}
