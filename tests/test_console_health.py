"""System health as the console's Overview computes it, from real call metrics and switches."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from engine.runtime.gates import Gates
from engine.server.console.health import held_runs, system_health
from engine.server.metrics import Metrics
from engine.store.aggregates import Aggregates
from engine.store.controls import Circuit, Switch


def _plan(*names: str) -> object:
    systems = {(n, 1): SimpleNamespace(name=n, circuit_breaker=None) for n in names}
    return SimpleNamespace(systems=systems)


def test_outcomes_latency_and_state_per_system() -> None:
    metrics = Metrics()
    for _ in range(19):
        metrics.call("erp", "create", "ok", 0.004)
    metrics.call("erp", "create", "5xx", 2.0)
    for _ in range(5):
        metrics.call("crm", "query", "timeout", 30.0)
    gates = Gates(None, time.time)  # type: ignore[arg-type]  # no store: switches set by hand
    rows = {r["name"]: r for r in system_health(_plan("erp", "crm", "billing"), gates, metrics)}  # type: ignore[arg-type]
    erp = rows["erp"]
    assert (erp["state"], erp["calls"], erp["failed"]) == ("failing", 20, 1)
    assert [(o["outcome"], o["n"]) for o in erp["outcomes"]] == [("ok", 19), ("5xx", 1)]
    assert erp["outcomes"][0]["w"] == pytest.approx(95.0)
    assert erp["mean"] == pytest.approx((19 * 0.004 + 2.0) / 20)
    assert erp["p95"] == 0.005  # 19 of 20 calls answered within the first bucket
    assert rows["crm"]["state"] == "down" and rows["crm"]["p95"] == 30.0
    assert rows["billing"]["state"] == "idle" and rows["billing"]["mean"] is None
    gates.systems = {"erp": Switch("system", "erp", "upgrade", "olga", 0.0)}
    gates.circuits = {"crm": Circuit("crm", "open", time.time() + 30, time.time())}
    rows = {r["name"]: r for r in system_health(_plan("erp", "crm"), gates, metrics)}  # type: ignore[arg-type]
    assert (rows["erp"]["state"], rows["erp"]["badge"]) == ("paused", "warn")
    assert (rows["crm"]["state"], rows["crm"]["badge"]) == ("open", "bad")


def test_held_runs_come_from_the_tallies() -> None:
    tallies = [("runs", "order-sync", "waiting", "SYSTEM_PAUSED", "", 3),
               ("runs", "renewal", "waiting", "SYSTEM_PAUSED", "", 1),
               ("runs", "order-sync", "waiting", "FLOW_PAUSED", "", 2),
               ("runs", "order-sync", "waiting", "RETRY", "", 7),
               ("runs", "order-sync", "parked", "CIRCUIT_OPEN", "", 4)]
    held = held_runs(Aggregates(tallies=tallies))
    assert held == {"FLOW_PAUSED": {"order-sync": 2}, "CIRCUIT_OPEN": {},
                    "SYSTEM_PAUSED": {"order-sync": 3, "renewal": 1}}
