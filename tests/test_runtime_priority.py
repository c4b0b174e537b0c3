"""Ingest under load. Deliveries come first: while a process's deliveries wait for their
accepts (their senders wait for the 202), its workers execute a few runs at once, and all
`concurrency` of them once the deliveries slow down. Through a real store and a real local HTTP
target."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from faults import FaultyStore
from runtime_kit import FakeClock, LiveTarget, Seen, flow, meta, running, until, write_project

from engine.runtime.ingest import BUSY_DELIVERIES
from engine.runtime.workers import GIVE_WAY

pytestmark = pytest.mark.anyio

HOOK = "{webhook: {path: /hooks/y, system: erp}}"
FLOWS = (
    flow("slow", '- id: call\n  call: {system: erp, operation: slow, body: "{n: data.n}"}')
    + "---\n"
    + flow("hook", "- id: note\n  set: {n: data.n}", trigger=HOOK)
)
CONCURRENCY = 16


def peak(requests: list[Seen]) -> int:
    """The most requests in flight at once (one still in flight: until now)."""
    edges = sorted([(r.at, 1) for r in requests] + [(r.done or math.inf, -1) for r in requests])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


async def _peaks(tmp_path: Path, cpu: Callable[[], float]) -> tuple[int, int]:
    """The most `slow` runs executing at once while held deliveries keep arriving (the
    process's CPU time read from `cpu`), and over the whole test, once they stopped."""
    gate = asyncio.Event()
    live = LiveTarget()
    with live as target, pytest.MonkeyPatch.context() as patch:
        patch.setattr("engine.runtime.ingest.process_time", cpu)
        target.delay["/slow"] = 0.2
        root = write_project(tmp_path, live.url, FLOWS)
        async with running(root, wrap=FaultyStore, concurrency=CONCURRENCY) as (runtime, plan):
            # the hook flow's deliveries wait for their accepts until the gate opens
            runtime.store.hold("accept", gate, lambda event, runs: runs[0].flow == "hook")
            held: list[asyncio.Task[Any]] = []

            async def deliver() -> None:  # a delivery every 20 ms, each waiting at the gate
                while not gate.is_set():
                    n = len(held)
                    hook = runtime.ingest(plan.flows["hook"], {"n": n}, meta(f"h{n}"))
                    held.append(asyncio.create_task(hook))
                    await asyncio.sleep(0.02)

            sender = asyncio.create_task(deliver())
            await until(lambda: len(held) > BUSY_DELIVERIES)
            runs = [
                (await runtime.ingest(plan.flows["slow"], {"n": n}, meta(n))).run_id
                for n in range(3 * CONCURRENCY)
            ]
            await until(lambda: len(target.to("/slow")) >= 3 * CONCURRENCY // GIVE_WAY, 10)
            while_busy = peak(target.to("/slow"))
            gate.set()
            await sender
            assert all(a.status == "accepted" for a in await asyncio.gather(*held))
            finished = [await runtime.wait(run_id, 20) for run_id in runs]
    assert {run.state for run in finished} == {"succeeded"}
    return while_busy, peak(target.to("/slow"))


async def test_runs_give_way_while_deliveries_wait_for_a_saturated_process(
    tmp_path: Path,
) -> None:
    saturated = time.monotonic  # a second of CPU time every second
    while_busy, overall = await _peaks(tmp_path, saturated)
    assert while_busy <= CONCURRENCY // GIVE_WAY
    assert overall >= CONCURRENCY // 2  # the backlog at full concurrency, after BUSY_HOLD


async def test_deliveries_waiting_for_a_slow_store_take_no_concurrency_from_runs(
    tmp_path: Path,
) -> None:
    # The same deliveries held, but the process idles: what they wait for is the store, and
    # fewer runs would only make the backlog grow.
    while_busy, _ = await _peaks(tmp_path, lambda: 0.0)
    assert while_busy > CONCURRENCY // GIVE_WAY


async def test_a_delivery_without_a_time_is_stamped_with_the_second_it_was_accepted(
    tmp_path: Path,
) -> None:
    # The stamp is formatted once a second (strftime was ~2 us of every accept): the second
    # must still be the clock's, and the next second's stamp a new one.
    clock = FakeClock(1_796_448_600.7)
    live = LiveTarget()
    with live:
        root = write_project(tmp_path, live.url, FLOWS)
        async with running(root, clock=clock) as (runtime, plan):
            first = await runtime.ingest(plan.flows["hook"], {"n": 1}, meta(1))
            clock.t += 0.2
            second = await runtime.ingest(plan.flows["hook"], {"n": 2}, meta(2))
            clock.t += 0.2
            third = await runtime.ingest(plan.flows["hook"], {"n": 3}, meta(3))
            times = [(await runtime.store.get_event(f"ev-{n}")).time for n in (1, 2, 3)]
    assert {first.status, second.status, third.status} == {"accepted"}
    assert times == ["2026-12-05T05:30:00Z", "2026-12-05T05:30:00Z", "2026-12-05T05:30:01Z"]
