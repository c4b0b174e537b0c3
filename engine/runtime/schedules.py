"""The `schedule` trigger: one run per cron tick of each schedule flow of the active plan.

A tick's run is keyed by the tick time (`data.tick`, ISO 8601 UTC), so replicas that fire the
same tick make one run between them (the store's unique (flow, key) decides), and a tick accepted
just before a crash is a duplicate when the restarted process fires it again. Each flow's last
fired tick is kept in the store (`trigger_state`, name `schedule:<flow>`), written after the
tick's run is accepted: after downtime, the latest missed tick fires once (not one run per missed
tick). A schedule seen for the first time, or whose cron or time zone changed, starts at its next
tick.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from engine.compiler.compiled import CompiledFlow
from engine.compiler.plan import Plan
from engine.compiler.triggers import tick_text
from engine.errors import StoreError
from engine.store.base import Acceptance, Store

log = logging.getLogger("syncline.schedules")

# (flow, data, event id, event time) -> the acceptance of the tick's run
IngestTick = Callable[[CompiledFlow, Any, str, str], Awaitable[Acceptance]]
MAX_SLEEP = 30.0  # look again at least this often: a reload may add or change a schedule


class Schedules:
    """Fires due ticks (`fire_due`) and, in `run`, sleeps until the next one.

    `clock` gives the time (epoch seconds) and `sleep` waits: tests inject both, so no test waits
    for a real minute."""

    def __init__(
        self,
        store: Store,
        plan: Callable[[], Plan],
        ingest: IngestTick,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self._store, self._plan, self._ingest = store, plan, ingest
        self._clock, self._sleep = clock, sleep
        self._last: dict[str, tuple[float, str]] = {}  # flow -> (last tick, cron identity)

    async def run(self) -> None:
        """Fire due ticks until cancelled; a store failure is logged and tried again."""
        while True:
            try:
                await self.fire_due()
            except StoreError:
                log.exception("firing schedule ticks failed; retrying")
            await self._sleep(self.delay())

    def delay(self) -> float:
        """Seconds until the next tick of any schedule flow (at most MAX_SLEEP)."""
        now = self._clock()
        ticks = [
            t for flow in self._flows() if (t := flow.trigger.schedule.following(now)) is not None
        ]
        return max(0.0, min([MAX_SLEEP, *(t - now for t in ticks)]))

    async def fire_due(self) -> list[Acceptance]:
        """Accept the latest tick of every schedule flow that has not fired it yet."""
        now = self._clock()
        fired = []
        for flow in self._flows():
            acceptance = await self._fire(flow, now)
            if acceptance is not None:
                fired.append(acceptance)
        return fired

    def _flows(self) -> list[Any]:
        return [f for f in self._plan().flows.values() if f.trigger.schedule is not None]

    async def _fire(self, flow: CompiledFlow, now: float) -> Acceptance | None:
        schedule = flow.trigger.schedule
        assert schedule is not None
        latest = schedule.latest(now)
        if latest is None:
            return None
        identity = f"{schedule.cron} {schedule.timezone}"
        name = f"schedule:{flow.name}"
        last = self._last.get(flow.name)
        if last is None or last[1] != identity:
            stored = await self._store.get_trigger_state(name)
            if not isinstance(stored, dict) or stored.get("schedule") != identity:
                await self._remember(name, flow.name, latest, identity)  # start at the next tick
                return None
            last = (float(stored["tick"]), identity)
            self._last[flow.name] = last
        if latest <= last[0]:
            return None
        tick = tick_text(latest)
        data = {"tick": tick, "cron": schedule.cron, "timezone": schedule.timezone}
        acceptance = await self._ingest(flow, data, f"schedule:{flow.name}:{tick}", tick)
        log.info("schedule %s: tick %s %s run %s", flow.name, tick, acceptance.status,
                 acceptance.run_id)
        await self._remember(name, flow.name, latest, identity)
        return acceptance

    async def _remember(self, name: str, flow: str, tick: float, identity: str) -> None:
        await self._store.put_trigger_state(name, {"tick": tick, "schedule": identity})
        self._last[flow] = (tick, identity)
