"""What the console's pages show, shaped for people: readable UTC times and ages, secrets
redacted, exceptions grouped, runs counted into bars. Pure functions of the admin API's values,
plus the Jinja2 environment (autoescaped) that renders them."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from engine.server.times import seconds

REDACTED = "[redacted]"
SECRET_NAME = re.compile(
    r"authori[sz]ation|cookie|secret|token|passw(or)?d|api[-_]?key|signature|credential",
    re.IGNORECASE,
)
# States people resolve, and the words and colours a state gets on the page.
STATE_WORDS = {
    "pending": "Queued",
    "running": "Running",
    "waiting": "Waiting to retry",
    "succeeded": "Succeeded",
    "filtered": "Filtered out",
    "parked": "Needs attention",
    "dead-lettered": "Failed after retries",
    "compensated": "Undone",
    "cancelled": "Cancelled",
    "failed": "Failed",
}
ACTIONS_BY_STATE = {
    "resume": ("parked",),
    "retry": ("dead-lettered", "failed"),
    "cancel": ("pending", "waiting", "parked", "dead-lettered", "running"),
    "replay": tuple(STATE_WORDS),
}


def when(at: float | str | None) -> str:
    """`4 Dec 2026, 10:15:30 UTC` (unix seconds or ISO 8601 text)."""
    if at is None or at == "":
        return ""
    try:
        unix = seconds(at) if isinstance(at, str) else at
    except ValueError:
        return str(at)
    return datetime.fromtimestamp(unix, UTC).strftime("%-d %b %Y, %H:%M:%S UTC")


def age(at: float | str, now: float | None = None) -> str:
    """How long ago (unix seconds or ISO 8601 text), in the largest two units: `2 d 3 h`,
    `5 min`, `12 s`."""
    return span((now or time.time()) - (seconds(at) if isinstance(at, str) else at))


def span(seconds: float) -> str:
    """A duration in the largest two units: `2 d 3 h`, `5 min`, `12 s`."""
    seconds = max(0, int(seconds))
    units = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))
    parts: list[str] = []
    for name, size in units:
        if seconds >= size or (name == "s" and not parts):
            parts.append(f"{seconds // size} {name}")
            seconds %= size
        if len(parts) == 2:
            break
    return " ".join(parts)


def redact(value: Any) -> Any:
    """`value` with every field whose name says secret (authorization, token, password...)
    replaced by REDACTED, at any depth."""
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and SECRET_NAME.search(k) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def pretty(value: Any) -> str:
    """Indented JSON of a redacted value, for <pre> blocks."""
    return json.dumps(redact(value), indent=2, ensure_ascii=False, default=str)


def group_exceptions(
    runs: Iterable[dict[str, Any]], owners: Mapping[str, str | None]
) -> list[dict[str, Any]]:
    """Parked and dead-lettered runs grouped by (reason code, owning team), each group's runs
    oldest first, groups with the oldest run first."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for run in runs:
        code = (run.get("reason") or {}).get("code") or "UNKNOWN"
        owner = owners.get(run["flow"]) or "no owner"
        groups.setdefault((code, owner, run["state"]), []).append(run)
    out: list[dict[str, Any]] = []
    for (code, owner, state), members in groups.items():
        members.sort(key=lambda r: r["created_at"])
        action = "resume" if state == "parked" else "retry"
        out.append({"code": code, "owner": owner, "state": state, "runs": members,
                    "action": action})  # fmt: skip
    out.sort(key=lambda g: g["runs"][0]["created_at"])
    return out


def bars(counts: Mapping[tuple[str, str], int], width: int = 600) -> list[dict[str, Any]]:
    """Per flow, its runs by state as stacked bar segments `{state, n, x, w}` scaled so the
    busiest flow spans `width`."""
    flows: dict[str, dict[str, int]] = {}
    for (flow, state), n in counts.items():
        flows.setdefault(flow, {})[state] = n
    most = max((sum(s.values()) for s in flows.values()), default=0) or 1
    out = []
    for flow in sorted(flows):
        x, segments = 0.0, []
        for state in STATE_WORDS:
            n = flows[flow].get(state, 0)
            if n:
                w = max(2.0, n / most * width)
                segments.append({"state": state, "n": n, "x": round(x, 1), "w": round(w, 1)})
                x += w
        out.append({"flow": flow, "total": sum(flows[flow].values()), "segments": segments})
    return out


def business_rows(values: Iterable[Any]) -> list[dict[str, Any]]:
    """The business metrics (`MetricValue`s) as Overview rows: a count now for gauges and
    counters; for durations how many were measured and, with an objective, the share that met
    it in words (`95% under 10 min`) and as a bar width in percent."""
    rows = []
    for value in values:
        m = value.metric
        row: dict[str, Any] = {"name": m.name, "help": m.help, "owner": m.owner, "kind": m.kind,
                               "now": value.value(), "objective": None, "met": value.met}
        if m.kind == "duration":
            row["now"] = value.count
        if m.objective is not None:
            percentile, under = m.objective
            row["objective"] = f"{percentile:g}% under {span(under)}"
            row["ratio"] = None if value.ratio is None else round(value.ratio * 100)
        rows.append(row)
    return rows


def allowed_actions(state: str) -> list[str]:
    """The actions a run in `state` takes, in button order."""
    return [a for a, states in ACTIONS_BY_STATE.items() if state in states]


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("engine.server.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, age=age, pretty=pretty)
    env.globals.update(STATE_WORDS=STATE_WORDS)
    return env
