"""`syncline demo`: the reference quote-to-cash integration end to end, against sandbox systems.

    report = asyncio.run(run_demo(DemoOptions(events=40)))
    report["reconciliation"]["ok"]

Starts the sandbox systems (`engine/sandbox`), an event backbone (`engine.demo.backbone`: NATS
JetStream when it can) and the Syncline server with an embedded SQLite store in a temporary
folder, plays a scripted business day through real signed webhooks (`engine.demo.driver`), then
reconciles the systems (`engine.demo.reconcile`), counts what reached the backbone
(`engine.demo.published`) and reports (`engine.demo.report`). The project is the reference one
shipped with Syncline (`engine.commands.reference`).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx

from engine.demo.backbone import Choice
from engine.demo.driver import DayLog, Driver
from engine.demo.migration import fetch_migration
from engine.demo.published import check, mark, summary, tally
from engine.demo.reconcile import reconcile
from engine.demo.report import build_report, format_report
from engine.demo.scenario import Scenario, build_scenario
from engine.demo.stack import Stack, locate_project

__all__ = [
    "DemoOptions",
    "Progress",
    "exit_code",
    "format_report",
    "play_day",
    "reconcile",
    "run_demo",
]


@dataclass(frozen=True)
class DemoOptions:
    """How big a day to play, and where."""

    events: int = 40  # new-business deals; amendments, renewals etc. scale along
    seed: int = 7
    project: Path | None = None  # default: the reference project shipped with Syncline
    concurrency: int = 32  # runs executing at once
    serve: bool = False  # leave the exceptions unresolved and serve until interrupted
    backbone: Choice = "auto"  # NATS_URL, else a nats-server of its own, else in memory


class Progress:
    """A live status line on a terminal, plain lines otherwise (every `interval` seconds)."""

    def __init__(self, stream: TextIO | None = None, interval: float | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty()
        self.interval = interval if interval is not None else (0.2 if self.live else 5.0)
        self.phase = "starting"
        self._last = ""

    def set_phase(self, name: str) -> None:
        self.phase = name
        if not self.live:
            self.write(f"[demo] {name}")

    def write(self, text: str) -> None:
        if self.live:
            self.stream.write("\r\x1b[2K" + text[:150])
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self._last = text

    def say(self, text: str) -> None:
        """A line that stays (the live status line is redrawn below it)."""
        if self.live:
            self.stream.write("\r\x1b[2K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.live and self._last:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()

    async def watch(self, status: Callable[[], Any]) -> None:
        """Write `await status()` every interval until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            self.write(f"[demo] {self.phase}: {await status()}")


async def run_demo(options: DemoOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Play the day and return the report (see `engine.demo.report.build_report`)."""
    progress = progress or Progress()
    root = locate_project(options.project)
    scenario = build_scenario(options.events, options.seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="syncline-demo-") as workdir:
        stack = Stack(root, Path(workdir), concurrency=options.concurrency,
                      backbone=options.backbone)
        try:
            progress.set_phase("starting the sandbox systems and Syncline")
            await stack.start()
            assert stack.backbone is not None
            progress.say(f"[demo] event backbone: {stack.backbone.note}")
            log, runs, states, reports = await play_day(
                stack, scenario, progress, not options.serve
            )
            if options.serve:
                await serve_until_interrupted(stack, progress.stream)
        finally:
            await stack.stop()
    reconciliation = reconcile(states, reports)
    assert stack.backbone is not None
    check(reconciliation, log.published)
    return build_report(
        events=len(scenario.deals),
        seed=options.seed,
        log=log,
        runs=runs,
        reconciliation=reconciliation,
        wall=time.perf_counter() - started,
        states=states,
        backbone=summary(stack.backbone, log.published),
    )


async def serve_until_interrupted(stack: Stack, stream: TextIO) -> None:
    """Keep the stack serving, its console's address and a token printed, until Ctrl-C or
    SIGTERM."""
    erp, json_type = stack.sandbox.urls["erp"], "-H 'content-type: application/json'"
    stream.write(
        f"\nThe day is played; its exceptions are left for you.\n"
        f"  console: {stack.url}/console\n"
        f"  token:   {stack.tokens['you']}   (admin, named 'you')\n"
        f"  event backbone: {stack.backbone.note if stack.backbone else 'none'}\n"
        "Fix the ERP's master data as its administrator would (a parked run's page says what the "
        "ERP misses), e.g.:\n"
        f"  curl -X POST {erp}/sandbox/tax-nexus {json_type} "
        """-d '{"subsidiary": "EU", "nexus": "AT"}'\n"""
        f"  curl -X POST {erp}/sandbox/items {json_type} "
        """-d '{"sku": "ADDON-AI", "name": "AI add-on", "unit_price": 0}'\n"""
        "Then resume the runs in Exceptions. Ctrl-C stops the demo.\n"
    )
    stream.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def play_day(
    stack: Stack, scenario: Scenario, progress: Progress, resolve: bool = True
) -> tuple[DayLog, list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """Play `scenario` on a started stack; the day's log (with what reached the event backbone),
    every run, the systems' states and the reports of the project's Reconciliations. Without
    `resolve`, nobody resolves the exceptions."""
    assert stack.backbone is not None
    plan = stack.runtime.plan
    marks = await mark(stack.backbone, plan)  # the backbone's streams before the day
    watcher = asyncio.create_task(progress.watch(lambda: _status(stack)))
    try:
        async with Driver(stack, scenario, progress.set_phase, resolve) as driver:
            log = await driver.play()
            progress.set_phase("reconciling")
            runs = await fetch_runs(driver.clients["syncline"])
            states = await fetch_states(driver.clients)
            metrics = await driver.clients["syncline"].get("/api/v1/metrics")
            states["syncline"] = metrics.raise_for_status().json()  # the business metrics
            reports = await run_reconciliations(
                driver.clients["syncline"], sorted(stack.runtime.plan.reconciliations)
            )
            log.migration = await fetch_migration(driver.clients["syncline"], runs, states)
            log.published = await tally(stack.backbone, plan, marks, driver.clients["syncline"],
                                        runs)
            log.count_fault_hits(states)
    finally:
        watcher.cancel()
        progress.done()
    return log, runs, states, reports


async def _status(stack: Stack) -> str:
    counts = await stack.runtime.store.count_runs()
    by_state: dict[str, int] = {}
    for (_, state), n in counts.items():
        by_state[state] = by_state.get(state, 0) + n
    summary = ", ".join(f"{state} {n}" for state, n in sorted(by_state.items()))
    return f"{sum(by_state.values())} runs ({summary}), queue {stack.runtime.queue_depth()}"


async def fetch_runs(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Every run, through the admin API (newest first, 500 a page)."""
    runs: list[dict[str, Any]] = []
    cursor = ""
    while True:
        response = await client.get("/api/v1/runs", params={"limit": 500, "cursor": cursor})
        response.raise_for_status()
        page = response.json()
        runs.extend(page["runs"])
        if not page["next_cursor"]:
            return runs
        cursor = page["next_cursor"]


async def fetch_states(clients: dict[str, httpx.AsyncClient]) -> dict[str, Any]:
    """Each sandbox's `GET /sandbox/state`."""
    names = ("crm", "erp", "billing", "support", "chat", "erp-cloud")
    responses = await asyncio.gather(*(clients[n].get("/sandbox/state") for n in names))
    for response in responses:
        response.raise_for_status()
    return {name: r.json() for name, r in zip(names, responses, strict=True)}


async def run_reconciliations(
    client: httpx.AsyncClient, names: list[str]
) -> list[dict[str, Any]]:
    """Run each Reconciliation now through the admin API; their reports."""
    reports = []
    for name in names:
        response = await client.post(f"/api/v1/reconciliations/{name}/run", timeout=300)
        response.raise_for_status()
        reports.append(response.json())
    return reports


def exit_code(report: dict[str, Any]) -> int:
    """0 only when the systems reconcile."""
    return 0 if report["reconciliation"]["ok"] else 1
