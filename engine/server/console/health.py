"""System health as the Overview shows it: per System its pause switch, its circuit and the
outcomes and latency of the calls this server made to it; and the runs a pause or an open circuit
holds. Pure functions of the plan, the gates, the server's call metrics and the store's
tallies."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from engine.compiler.plan import Plan
from engine.runtime.gates import Gates
from engine.server.metrics import CALL_BUCKETS, HEALTH_WINDOW, Metrics
from engine.store.aggregates import Aggregates
from engine.store.controls import CIRCUIT_OPEN, FLOW_PAUSED, SYSTEM_PAUSED

# Call outcomes as the bars show them: (outcome, words), ok first; unknown outcomes are "other".
OUTCOMES = (
    ("ok", "answered"),
    ("4xx", "refused (4xx)"),
    ("429", "throttled (429)"),
    ("5xx", "server error (5xx)"),
    ("timeout", "timed out"),
    ("network", "unreachable"),
    ("other", "other failure"),
)
KNOWN = {name for name, _ in OUTCOMES}
# A System's state in words and the badge class it gets, worst first.
STATES = {
    "paused": ("Paused", "warn"),
    "open": ("Circuit open: no calls", "bad"),
    "half-open": ("Circuit half-open: probing", "warn"),
    "down": ("Down: its last calls failed", "bad"),
    "failing": ("Some recent calls failed", "warn"),
    "up": ("Up", "ok"),
    "idle": ("No calls yet", "idle"),
}


def system_health(plan: Plan, gates: Gates, metrics: Metrics) -> list[dict[str, Any]]:
    """One row per System of the plan (and any System with a switch or circuit still on):
    `{name, state, words, badge, switch, circuit, calls, outcomes, mean, p95, breaker}`."""
    names = {system.name: system for system in plan.systems.values()}
    rows = []
    for name in sorted(names.keys() | gates.systems.keys() | gates.circuits.keys()):
        outcomes = _outcomes(metrics.calls, name)
        calls = sum(outcomes.values())
        latency = _latency(metrics.call_latency, name)
        recent = list(metrics.recent.get(name, ()))
        switch, circuit = gates.systems.get(name), gates.circuits.get(name)
        if switch is not None:
            state = "paused"
        elif circuit is not None:
            state = circuit.state
        elif len(recent) == HEALTH_WINDOW and all(recent):
            state = "down"
        elif any(recent):
            state = "failing"
        else:
            state = "up" if calls else "idle"
        words, badge = STATES[state]
        system = names.get(name)
        rows.append({
            "name": name, "state": state, "words": words, "badge": badge,
            "switch": switch, "circuit": circuit, "calls": calls,
            "outcomes": _segments(outcomes, calls),
            "failed": calls - outcomes.get("ok", 0),
            "mean": latency[0], "p95": latency[1],
            "breaker": None if system is None else system.circuit_breaker,
            "known": system is not None,
        })  # fmt: skip
    return rows


def held_runs(aggregates: Aggregates) -> dict[str, dict[str, int]]:
    """Runs waiting for a switch or circuit now: reason code (FLOW_PAUSED, SYSTEM_PAUSED,
    CIRCUIT_OPEN) -> flow -> runs, from the store's tallies (every replica's runs)."""
    held: dict[str, dict[str, int]] = {code: {} for code in (FLOW_PAUSED, SYSTEM_PAUSED,
                                                             CIRCUIT_OPEN)}  # fmt: skip
    for kind, flow, state, code, _, n in aggregates.tallies:
        if kind == "runs" and state == "waiting" and code in held and n:
            held[code][flow] = held[code].get(flow, 0) + n
    return held


def _outcomes(calls: Mapping[tuple[str, str, str], int], system: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for (name, _, outcome), n in list(calls.items()):
        if name == system:
            key = outcome if outcome in KNOWN else "other"
            found[key] = found.get(key, 0) + n
    return found


def _segments(outcomes: Mapping[str, int], total: int, width: int = 100) -> list[dict[str, Any]]:
    """The outcomes as bar segments `{outcome, words, n, x, w}` in percent of the bar."""
    segments, x = [], 0.0
    for outcome, words in OUTCOMES:
        n = outcomes.get(outcome, 0)
        if n:
            w = n / total * width
            segments.append({"outcome": outcome, "words": words, "n": n,
                             "x": round(x, 2), "w": round(w, 2)})  # fmt: skip
            x += w
    return segments


def _latency(
    series: Mapping[tuple[str, str], tuple[list[int], list[float]]], system: str
) -> tuple[float | None, float | None]:
    """Mean and (bucket-bound) 95th percentile seconds of a System's calls, over every
    operation; (None, None) before its first call."""
    counts = [0] * (len(CALL_BUCKETS) + 1)
    total = 0.0
    for (name, _), (buckets, seconds) in list(series.items()):
        if name == system:
            counts = [a + b for a, b in zip(counts, buckets, strict=True)]
            total += seconds[0]
    n = sum(counts)
    if not n:
        return None, None
    return total / n, _percentile(counts, n, 0.95)


def _percentile(counts: Iterable[int], n: int, share: float) -> float:
    """The upper bound of the bucket holding the `share` quantile (infinity when it lies beyond
    every bound)."""
    seen = 0
    for bound, count in zip((*CALL_BUCKETS, math.inf), counts, strict=True):
        seen += count
        if seen >= share * n:
            return bound
    return math.inf
