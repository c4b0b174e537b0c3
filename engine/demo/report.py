"""The demo's report: runs by flow and state, throughput, sync latency, exceptions and the
reconciliation, as a dict (`--format json`) or as text."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from engine.demo.driver import DayLog
from engine.demo.migration import cloud_records, migration_lines
from engine.demo.published import backbone_lines
from engine.demo.reconcile import Reconciliation
from engine.demo.revenue_report import revenue_summary
from engine.server.times import seconds

STATES = (
    "succeeded",
    "filtered",
    "parked",
    "waiting",
    "running",
    "pending",
    "dead-lettered",
    "failed",
    "compensated",
    "cancelled",
)
UNFINISHED = frozenset({"pending", "running", "waiting"})


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def sync_latencies(runs: Iterable[Mapping[str, Any]], exclude: set[str]) -> list[float]:
    """Seconds from a webhook's acceptance to the last run it caused reaching its end state,
    per business event (runs share the correlation id of the delivery that started them).
    Events involving a run in `exclude` (an exception waiting for a human) are left out."""
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[run["correlation_id"]].append(run)
    latencies = []
    for group in groups.values():
        if any(r["id"] in exclude or r["state"] in UNFINISHED for r in group):
            continue
        if all(r["state"] == "filtered" for r in group):
            continue
        latencies.append(max(seconds(r["updated_at"]) for r in group)
                         - min(seconds(r["created_at"]) for r in group))
    return latencies


def runs_table(runs: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for run in runs:
        table[run["flow"]][run["state"]] += 1
    return {flow: dict(counts) for flow, counts in sorted(table.items())}


def busy_seconds(runs: Iterable[Mapping[str, Any]]) -> float:
    """Seconds in which at least one run was between acceptance and its end state: the union
    of the runs' lifetimes, so the pauses between the day's phases do not count."""
    spans = sorted((seconds(r["created_at"]), seconds(r["updated_at"])) for r in runs)
    total, start, end = 0.0, None, None
    for begin, finish in spans:
        if end is None or begin > end:
            total += (end - start) if end is not None and start is not None else 0.0
            start, end = begin, finish
        else:
            end = max(end, finish)
    return total + ((end - start) if end is not None and start is not None else 0.0)


def build_report(
    *,
    events: int,
    seed: int,
    log: DayLog,
    runs: list[dict[str, Any]],
    reconciliation: Reconciliation,
    wall: float,
    states: Mapping[str, Any] | None = None,
    backbone: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the demo shows, as data (`states`: the systems' states, with the business
    metrics Syncline reported under `syncline`; `backbone`: engine.demo.published.summary)."""
    executed = [r for r in runs if r["state"] != "filtered"]
    busy = busy_seconds(executed)
    latencies = sync_latencies(runs, {e.run_id for e in log.exceptions})
    return {
        "events": events,
        "seed": seed,
        "duration_s": round(wall, 2),
        "day": {
            "phases": [{"name": n, "seconds": round(s, 2)} for n, s in log.phases],
            **log.counts,
            "faults": [{"fault": f.label, "hits": f.hits} for f in log.faults],
        },
        "runs": {
            "total": len(runs),
            "executed": len(executed),
            "by_flow": runs_table(runs),
            "busy_s": round(busy, 2),
            "throughput_runs_per_s": round(len(executed) / busy, 1) if busy else None,
        },
        "latency_ms": _latency(latencies),
        "exceptions": [_exception(e) for e in log.exceptions],
        "reconciliation": reconciliation.as_dict(),
        "business": business_summary(states or {}),
        "alerts": alerts_summary(states or {}),
        "migration": log.migration,
        "revenue": revenue_summary(states or {}),
        "echoes": echo_summary(runs, log.counts),
        "backbone": dict(backbone or {}),
    }


# The flows a person's change (and only that) starts, and the day's count of such changes: more
# runs than changes would be Syncline reacting to its own writes, the start of a sync loop.
ROUND_TRIPS = {"account-changed": "account moves", "subscription-amended": "amendments"}


def echo_summary(runs: Iterable[Mapping[str, Any]], counts: Mapping[str, int]) -> dict[str, Any]:
    """How many deliveries were echoes of Syncline's own writes (by webhook flow), and whether
    any round-trip flow ran more often than people changed something."""
    echoes: dict[str, int] = defaultdict(int)
    executed: dict[str, int] = defaultdict(int)
    for run in runs:
        if run["state"] == "filtered" and (run.get("reason") or {}).get("code") == "ECHO":
            echoes[run["flow"]] += 1
        elif run["state"] != "filtered":
            executed[run["flow"]] += 1
    extra = {flow: executed[flow] - counts.get(changes, 0) for flow, changes in ROUND_TRIPS.items()
             if executed[flow] > counts.get(changes, 0)}
    return {"suppressed": sum(echoes.values()), "by_flow": dict(sorted(echoes.items())),
            "loop": bool(extra), "unexplained_runs": extra}


# The money behind a count, from the ERP's records: metric -> (collection, amount field, words).
MONEY = {
    "orders-activated": ("sales_orders", "total",
                         "all sales orders in both ERPs (renewals included)"),
    "payments-posted": ("payments", "amount", "all payments posted in the ERP"),
}


def business_summary(states: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The business metrics as a finance reader wants them: a sentence each, with money where
    the ERP holds the amounts."""
    old = states.get("erp", {}).get("data", {})
    cloud = cloud_records(states)  # the EU entity's, booked in the cloud ERP
    erp = {name: list((old.get(name) or {}).values() if isinstance(old.get(name), Mapping)
                      else old.get(name) or []) + cloud.get(name, [])
           for name in ("sales_orders", "payments")}
    return [{"name": m["name"], "owner": m["owner"], "text": _sentence(m, erp)}
            for m in states.get("syncline", {}).get("metrics", [])]


def _sentence(metric: Mapping[str, Any], erp: Mapping[str, Any]) -> str:
    help_text = metric["help"]
    if metric["kind"] == "duration":
        count, objective = metric["count"], metric.get("objective")
        if not count:
            return f"{help_text}: nothing measured yet"
        mean = _duration(metric["sum"] / count)
        text = f"{help_text}: {count} measured, {mean} on average"
        if objective and objective["ratio"] is not None:
            verdict = "met" if objective["met"] else "MISSED"
            text += (f"; {objective['ratio']:.0%} within {_duration(objective['under'])} "
                     f"(objective {objective['percentile']:g}%: {verdict})")
        return text
    text = f"{help_text}: {metric['value']}"
    parts = [(_where(s["labels"]), s["labels"].get("reason") or "in progress", s["value"])
             for s in metric["series"] if s["value"]]
    if metric["kind"] == "gauge" and any(r != "in progress" or w for w, r, _ in parts):
        text += " (" + ", ".join(f"{n} {w}{' ' if w else ''}{r}" for w, r, n in parts) + ")"
    if metric["name"] in MONEY:
        collection, field, words = MONEY[metric["name"]]
        text += f"; {words}: " + _money(erp.get(collection, {}), field)
    return text


def _where(labels: Mapping[str, str]) -> str:
    """A series' labels other than reason, flow and state, as `EU/EUR` (its entity, currency)."""
    return "/".join(v for k, v in labels.items() if k not in ("reason", "flow", "state") and v)


def alerts_summary(states: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What each team's chat channel received from the Alerts: how many messages, and each."""
    channels: dict[str, list[str]] = defaultdict(list)
    for message in states.get("chat", {}).get("data", {}).get("messages", []):
        channels[message["channel"]].append(message.get("text") or "")
    return [{"team": team, "messages": len(texts), "texts": texts}
            for team, texts in sorted(channels.items())]


def _money(records: Mapping[str, Any] | list[Any], field: str) -> str:
    totals: dict[str, float] = defaultdict(float)
    for record in records.values() if isinstance(records, Mapping) else records:
        totals[record.get("currency", "?")] += float(record.get(field) or 0)
    return ", ".join(f"{currency} {total:,.2f}" for currency, total in sorted(totals.items()))


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds * 1000:.0f} ms"


def _latency(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"samples": 0}
    ms = [v * 1000 for v in values]
    return {
        "samples": len(ms),
        "p50": round(percentile(ms, 50), 1),
        "p95": round(percentile(ms, 95), 1),
        "max": round(max(ms), 1),
        "mean": round(statistics.fmean(ms), 1),
    }


def _exception(e: Any) -> dict[str, Any]:
    resolved = e.state == "succeeded" and e.finished_at is not None
    return {
        "run_id": e.run_id,
        "flow": e.flow,
        "reason": e.reason,
        "erp_code": e.erp_code,
        "fix": e.fix,
        "state": e.state,
        "resolution_s": round(e.finished_at - e.parked_at, 2) if resolved else None,
    }


# -- text ------------------------------------------------------------------------------------
def format_report(report: Mapping[str, Any]) -> str:
    """The report as a terminal shows it."""
    lines = [
        f"Syncline demo: {report['events']} deals (seed {report['seed']}) in "
        f"{report['duration_s']:.1f} s",
        "",
    ]
    lines += _day(report["day"])
    lines += _runs(report["runs"], report["latency_ms"])
    lines += _exceptions(report["exceptions"])
    lines += _business(report.get("business", []))
    lines += _alerts(report.get("alerts", []))
    lines += migration_lines(report.get("migration") or {})
    revenue = report.get("revenue") or {}
    if revenue:
        lines += ["Revenue (finance view, from both ERPs and billing)"]
        lines += [f"  {line}" for line in revenue["lines"]] + [""]
    lines += _echoes(report.get("echoes"))
    lines += backbone_lines(report.get("backbone"))
    lines += _reconciliation(report["reconciliation"])
    return "\n".join(lines)


def _business(business: list[Mapping[str, Any]]) -> list[str]:
    if not business:
        return []
    lines = ["Business metrics (GET /api/v1/metrics; owners in brackets)"]
    lines += [f"  {b['text']} [{b['owner']}]" for b in business]
    return [*lines, ""]


def _alerts(alerts: list[Mapping[str, Any]]) -> list[str]:
    lines = ["Alerts (Alert kinds, through the team chat)"]
    if not alerts:
        lines.append("  no team was alerted")
    for alert in alerts:
        n = alert["messages"]
        times = "once" if n == 1 else f"{n} times"
        lines.append(f"  {alert['team']} was alerted {times}: {alert['texts'][0]}")
    return [*lines, ""]


def _echoes(echoes: Mapping[str, Any] | None) -> list[str]:
    if not echoes:
        return []
    by_flow = ", ".join(f"{flow} {n}" for flow, n in echoes["by_flow"].items())
    verdict = ("no sync loop" if not echoes["loop"] else "SYNC LOOP: runs no person's change "
               f"explains: {echoes['unexplained_runs']}")
    return [f"Echo suppression: {echoes['suppressed']} echoes of Syncline's own writes "
            f"suppressed; {verdict} (echoes by flow: {by_flow or 'none'})", ""]


def _day(day: Mapping[str, Any]) -> list[str]:
    lines = ["The day"]
    lines += [f"  {p['name']:<32} {p['seconds']:6.1f} s" for p in day["phases"]]
    counts = {k: v for k, v in day.items() if k not in ("phases", "faults")}
    lines.append("  " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    lines += [f"  fault: {f['fault']} ({f['hits']} requests hit)" for f in day["faults"]]
    return [*lines, ""]


def _runs(runs: Mapping[str, Any], latency: Mapping[str, Any]) -> list[str]:
    states = [s for s in STATES if any(s in c for c in runs["by_flow"].values())]
    width = max([len(f) for f in runs["by_flow"]] + [4])
    lines = [
        "Runs by flow and state",
        "  " + "flow".ljust(width) + "".join(f"{s:>15}" for s in states),
    ]
    for flow, counts in runs["by_flow"].items():
        lines.append("  " + flow.ljust(width) + "".join(f"{counts.get(s, 0):>15}" for s in states))
    lines.append(
        f"  {runs['total']} runs, {runs['executed']} executed; throughput "
        f"{runs['throughput_runs_per_s']} runs/s (over the {runs['busy_s']:.1f} s runs were "
        "in flight)"
    )
    if latency.get("samples"):
        lines.append(
            f"  sync latency (webhook accepted -> last run done): p50 "
            f"{latency['p50']:.0f} ms, p95 {latency['p95']:.0f} ms, max "
            f"{latency['max']:.0f} ms over {latency['samples']} business events"
        )
    return [*lines, ""]


def _exceptions(exceptions: list[Mapping[str, Any]]) -> list[str]:
    lines = [f"Exceptions ({len(exceptions)})"]
    for e in exceptions:
        reason = e["reason"] or {}
        code = e["erp_code"] or reason.get("code")
        lines.append(
            f"  {e['flow']} run {e['run_id'][:12]} parked at step '{reason.get('step')}'"
            f": {code} ({reason.get('code')})"
        )
        if e["fix"]:
            lines.append(f"    operator: {e['fix']}; resumed")
        outcome = (
            f"resolved in {e['resolution_s']:.1f} s"
            if e["resolution_s"] is not None
            else f"unresolved, {e['state']}"
        )
        lines.append(f"    {outcome}")
    return [*lines, ""]


def _reconciliation(result: Mapping[str, Any]) -> list[str]:
    checks = sum(result["checked"].values())
    verdict = "OK" if result["ok"] else f"FAILED ({len(result['problems'])} problems)"
    lines = [f"Reconciliation across CRM, ERP, billing and support: {verdict}, {checks} checks"]
    lines += [f"  {name}: {n}" for name, n in sorted(result["checked"].items())]
    lines += [f"  PROBLEM {p}" for p in result["problems"][:50]]
    if len(result["problems"]) > 50:
        lines.append(f"  ... and {len(result['problems']) - 50} more")
    return lines
