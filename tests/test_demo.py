"""`syncline demo` end to end: the reference project against the sandbox systems, reconciled.

The first test runs the real command (a subprocess, as CI does) and checks the report; the
second plays a day in-process, breaks one system's state the way a lost write would, and checks
that the reconciliation says so.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.demo import Progress, play_day, reconcile
from engine.demo.driver import DayLog
from engine.demo.scenario import build_scenario
from engine.demo.stack import Stack, locate_checkout

ROOT = Path(__file__).resolve().parents[1]
FLOWS = (
    "billing-events",
    "closed-won-to-order",
    "crm-opportunity-events",
    "invoice-paid",
    "payment-failed",
    "renewal",
    "subscription-amended",
)

pytestmark = pytest.mark.slow


def test_demo_command_reconciles_and_reports(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "demo", "--events", "10", "--format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)

    assert report["reconciliation"]["ok"], report["reconciliation"]["problems"]
    checked = report["reconciliation"]["checked"]
    assert checked["ERP sales order"] == 10 and checked["subscription"] == 10
    assert checked["entitlement"] == 10 and checked["ERP renewal order"] == 1
    by_flow = report["runs"]["by_flow"]
    assert set(by_flow) == set(FLOWS)
    assert all(set(states) <= {"succeeded", "filtered"} for states in by_flow.values()), by_flow
    assert by_flow["closed-won-to-order"]["succeeded"] == 10
    assert report["runs"]["throughput_runs_per_s"] > 0
    assert report["latency_ms"]["samples"] > 10
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p95"]
    exceptions = {e["erp_code"]: e for e in report["exceptions"]}
    assert set(exceptions) == {"UNKNOWN_TAX_NEXUS", "UNKNOWN_ITEM"}
    for exception in exceptions.values():
        assert exception["reason"]["step"] == "erp"
        assert exception["state"] == "succeeded" and exception["resolution_s"] > 0
    assert any("503" in f for f in report["day"]["faults"])
    assert any("429" in f for f in report["day"]["faults"])


def test_text_report_on_a_pipe_has_plain_progress_lines(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "demo", "--events", "4", "--seed", "3"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[demo] deals closing" in done.stderr and "\r" not in done.stderr
    assert "Reconciliation across CRM, ERP, billing and support: OK" in done.stdout
    assert "UNKNOWN_TAX_NEXUS" in done.stdout and "sync latency" in done.stdout


async def _day_then(tmp_path: Path, break_it: Any) -> tuple[DayLog, Any, Any]:
    stack = Stack(locate_checkout(), tmp_path)
    await stack.start()
    try:
        log, _, states = await play_day(stack, build_scenario(6, seed=11), Progress(io.StringIO()))
        before = reconcile(states)
        break_it(stack.sandbox)
        after = reconcile(stack.sandbox.snapshot())
    finally:
        await stack.stop()
    return log, before, after


def test_reconciliation_fails_when_an_erp_order_is_missing(tmp_path: Path) -> None:
    lost: dict[str, Any] = {}

    def delete_one_order(sandbox: Any) -> None:
        orders = sandbox.erp.data["sales_orders"]
        order_id = next(iter(orders))
        lost.update(orders.pop(order_id))

    _, before, after = asyncio.run(_day_then(tmp_path, delete_one_order))

    assert before.ok, before.problems
    assert not after.ok
    deal = lost["external_id"]
    assert any(
        p.startswith(f"deal {deal} (") and "expected exactly one ERP sales order, found 0" in p
        for p in after.problems
    ), after.problems


def test_locate_checkout_explains_what_it_needs(tmp_path: Path) -> None:
    from engine.errors import UsageError

    assert locate_checkout() == ROOT
    with pytest.raises(UsageError, match="is not a Syncline source checkout"):
        locate_checkout(tmp_path)
