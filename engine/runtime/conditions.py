"""What each Alert condition finds now: its firing subjects, each with the context its
notification is rendered with (`{alert, subject, run, runs, count, reason, metric, system,
env}`; the keys a condition has no value for are null).

    sources = Sources(store, plan, now)            # reads shared by every alert of one pass
    firing = await find_firing(alert, sources)     # subject -> context

A parked condition lists the parked runs of its flows (a page of the newest MAX_RUNS per flow)
and groups them by `per` (its `count` comes from the store's tallies, so it is exact beyond
that page); a metric or objective condition reads the store's aggregates once per
pass; a circuit condition reads the circuits table (the state every replica shares).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

from engine.compiler.alerts import CompiledAlert
from engine.compiler.plan import Plan
from engine.runtime.business import MetricValue, by_name, measure
from engine.store.aggregates import Aggregates
from engine.store.base import RunQuery, RunRecord, Store
from engine.store.controls import Circuit, Controls

MAX_RUNS = 500  # parked runs read per flow and pass
LISTED = 20     # runs a notification's context lists
Firing = dict[str, dict[str, Any]]


def iso(seconds: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC with milliseconds."""
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Sources:
    """The store reads of one evaluation pass, each made once, when an alert first needs it."""

    def __init__(self, store: Store, plan: Plan, now: float) -> None:
        self.store, self.plan, self.now = store, plan, now
        self._aggregates: Aggregates | None = None
        self._metrics: dict[str, MetricValue] | None = None
        self._circuits: list[Circuit] | None = None
        self._parked: dict[str, list[RunRecord]] = {}

    async def aggregates(self) -> Aggregates:
        if self._aggregates is None:
            self._aggregates = await self.store.read_aggregates()
        return self._aggregates

    async def metrics(self) -> dict[str, MetricValue]:
        if self._metrics is None:
            self._metrics = by_name(measure(self.plan.metrics, await self.aggregates()))
        return self._metrics

    async def parked_counts(self) -> dict[tuple[str, str], int]:
        """(flow, reason code) -> runs parked now, from the store's tallies (all of them, not
        only the MAX_RUNS listed)."""
        counts: dict[tuple[str, str], int] = {}
        for kind, flow, state, code, _, n in (await self.aggregates()).tallies:
            if kind == "runs" and state == "parked" and n:
                counts[(flow, code)] = counts.get((flow, code), 0) + int(n)
        return counts

    async def circuits(self) -> list[Circuit]:
        if self._circuits is None:
            _, self._circuits = await Controls(self.store).snapshot()
        return self._circuits

    async def parked(self, flow: str) -> list[RunRecord]:
        if flow not in self._parked:
            query = RunQuery(flow=flow, state="parked", limit=MAX_RUNS)
            self._parked[flow] = await self.store.list_runs(query)
        return self._parked[flow]


def base_context(alert: CompiledAlert, subject: str, plan: Plan) -> dict[str, Any]:
    return {
        "alert": {"name": alert.name, "owner": alert.owner, "condition": alert.describe()},
        "subject": subject, "run": None, "runs": [], "count": 0, "reason": None,
        "metric": None, "system": None, "env": dict(plan.env),
    }


def run_context(run: RunRecord) -> dict[str, Any]:
    reason = None if run.reason is None else {
        "code": run.reason.code, "step": run.reason.step, "message": run.reason.message}
    return {"id": run.id, "flow": run.flow, "key": run.key, "state": run.state,
            "correlation_id": run.correlation_id, "created_at": iso(run.created_at),
            "parked_at": iso(run.updated_at), "reason": reason}


async def parked(alert: CompiledAlert, sources: Sources) -> Firing:
    groups: dict[str, list[RunRecord]] = {}
    tallied = await sources.parked_counts()  # list only flows with such runs parked
    for flow in alert.flows:
        if not any(f == flow and (not alert.reasons or code in alert.reasons)
                   for f, code in tallied):
            continue
        for run in await sources.parked(flow):
            code = run.reason.code if run.reason is not None else ""
            if alert.reasons and code not in alert.reasons:
                continue
            if sources.now - run.updated_at < alert.hold:
                continue
            subject = {"alert": alert.name, "flow": run.flow, "reason": code,
                       "run": run.id}[alert.per]
            groups.setdefault(subject, []).append(run)
    counts = await _exact_counts(alert, sources) if alert.per != "run" and not alert.hold else {}
    firing: Firing = {}
    for subject, runs in groups.items():
        runs.sort(key=lambda r: (r.updated_at, r.id))
        context = base_context(alert, subject, sources.plan)
        listed = [run_context(run) for run in runs[:LISTED]]
        count = max(len(runs), counts.get(subject, 0))
        context.update(run=listed[0], runs=listed, count=count, reason=listed[0]["reason"])
        firing[subject] = context
    return firing


async def _exact_counts(alert: CompiledAlert, sources: Sources) -> dict[str, int]:
    """Parked runs per subject from the tallies: exact beyond the MAX_RUNS listed per flow."""
    counts: dict[str, int] = {}
    for (flow, code), n in (await sources.parked_counts()).items():
        if flow in alert.flows and (not alert.reasons or code in alert.reasons):
            subject = {"alert": alert.name, "flow": flow, "reason": code}[alert.per]
            counts[subject] = counts.get(subject, 0) + n
    return counts


async def metric(alert: CompiledAlert, sources: Sources) -> Firing:
    assert alert.metric is not None
    value = (await sources.metrics()).get(alert.metric)
    if value is None:
        return {}
    now = value.value(**dict(alert.labels))
    over = alert.above is not None and now > alert.above
    under = alert.below is not None and now < alert.below
    if not (over or under):
        return {}
    subject = alert.metric + "".join(f",{k}={v}" for k, v in alert.labels)
    context = base_context(alert, subject, sources.plan)
    m = value.metric
    context["metric"] = {"name": m.name, "help": m.help, "owner": m.owner, "value": now,
                         "above": alert.above, "below": alert.below,
                         "labels": dict(alert.labels)}
    return {subject: context}


async def objective(alert: CompiledAlert, sources: Sources) -> Firing:
    assert alert.metric is not None
    value = (await sources.metrics()).get(alert.metric)
    if value is None or value.met is not False or value.metric.objective is None:
        return {}
    percentile, under = value.metric.objective
    context = base_context(alert, alert.metric, sources.plan)
    m = value.metric
    context["metric"] = {"name": m.name, "help": m.help, "owner": m.owner, "ratio": value.ratio,
                         "percentile": percentile, "under": under, "count": value.count}
    return {alert.metric: context}


async def circuit(alert: CompiledAlert, sources: Sources) -> Firing:
    firing: Firing = {}
    for found in await sources.circuits():
        if alert.system not in ("*", found.system):
            continue
        context = base_context(alert, found.system, sources.plan)
        context["system"] = {"name": found.system, "state": found.state,
                             "opened_at": iso(found.opened_at), "until": iso(found.until)}
        firing[found.system] = context
    return firing


FINDERS: dict[str, Callable[[CompiledAlert, Sources], Awaitable[Firing]]] = {
    "parked": parked, "metric": metric, "objective": objective, "circuit": circuit,
}


async def find_firing(alert: CompiledAlert, sources: Sources) -> Firing:
    """The alert's firing subjects now, each with its notification's context."""
    return await FINDERS[alert.kind](alert, sources)
