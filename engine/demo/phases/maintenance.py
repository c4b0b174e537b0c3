"""The ERP's planned maintenance window: paused in Syncline, it receives nothing while the
renewals that need it wait (SYSTEM_PAUSED), and they go through once it is resumed."""

from __future__ import annotations

import asyncio
import time

from engine.demo.day import SETTLE_TIMEOUT, Day, DemoError
from engine.demo.phases.changes import renew
from engine.store.controls import SYSTEM_PAUSED as HELD

ERPS = ("erp", "erp-cloud")  # the old ERP and the one the EU entity migrated to


async def renew_in_maintenance(day: Day) -> None:
    """The ERP is paused in Syncline, the renewals close and wait (SYSTEM_PAUSED) while it
    receives nothing, and go through once it is resumed."""
    before = await erp_requests(day)
    reason = {"reason": "planned ERP maintenance"}
    for erp in ERPS:
        await day.call("syncline", "POST", f"/api/v1/systems/{erp}/pause", reason)
    await renew(day)
    await day.stack.webhooks_idle(SETTLE_TIMEOUT)
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:  # until every run that can go on without the ERP did
        counts = await day.stack.runtime.store.count_runs()
        running = any(n for (_, state), n in counts.items() if state == "running")
        waiting = await day.runs("waiting")
        held = [r for r in waiting if (r["reason"] or {}).get("code") == HELD]
        # a run waiting to retry a call (a timeout on a busy machine) has yet to reach the ERP;
        # the checks read the store one after another: they hold together only if no run moved
        # meanwhile (a pending run claimed between two reads looks like none pending)
        if (not running and len(held) == len(waiting) and await day.pending_blocked()
                and await day.stack.runtime.store.count_runs() == counts):
            break
        if time.monotonic() > deadline:
            raise DemoError("runs did not come to rest while the ERP was paused")
        await asyncio.sleep(0.05)
    during = await erp_requests(day) - before
    for erp in ERPS:
        await day.call("syncline", "POST", f"/api/v1/systems/{erp}/resume", {"reason": "done"})
    if during:
        raise DemoError(f"the paused ERP received {during} requests")
    day.log.counts["runs held in the ERP maintenance window"] = len(held)
    day.log.counts["ERP calls during it"] = during


async def erp_requests(day: Day) -> int:
    """How many requests both ERP sandboxes (the old one and the cloud one) have received."""
    total = 0
    for erp in ERPS:
        state = await day.call(erp, "GET", "/sandbox/state")
        total += int(state.get("counters", {}).get("requests", 0))
    return total
