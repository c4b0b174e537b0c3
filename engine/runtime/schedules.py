"""Schedule ticks: one run per cron tick of each schedule flow of the active plan, and one run of
each scheduled Reconciliation per tick.

A flow's tick run is keyed by the tick time (`data.tick`, ISO 8601 UTC), so replicas that fire
the same tick make one run between them (the store's unique (flow, key) decides), and a tick
accepted just before a crash is a duplicate when the restarted process fires it again (a
Reconciliation's tick is claimed by its result row instead). Each schedule's last fired tick is
kept in the store (`trigger_state`, name `schedule:<flow>` or `schedule:reconciliation:<name>`),
written after the tick is accepted: after downtime, the latest missed tick fires once (not once
per missed tick). A schedule seen for the first time, or whose cron or time zone changed, starts
at its next tick.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from engine.compiler.compiled import CompiledFlow
from engine.compiler.plan import Plan
from engine.compiler.triggers import CompiledSchedule, tick_text
from engine.errors import StoreError
from engine.store.base import Store

log = logging.getLogger("syncline.schedules")
MAX_SLEEP = 30.0  # look again at least this often: a reload may add or change a schedule
AGAIN = 5.0
BUSY = "busy"  # what a `fire` answers when another process runs the tick: not fired yet


async def keep_running(
    step: Callable[[], Awaitable[Any]], delay: Callable[[], float],
    sleep: Callable[[float], Awaitable[Any]], what: str,
) -> None:
    """`step()`, then sleep `delay()` seconds, until cancelled. A failure is logged and the loop
    goes on: a bug in one tick or poll must not stop every schedule of the process."""
    while True:
        try:
            await step()
        except StoreError:
            log.exception("%s failed on the store; retrying", what)
        except Exception:  # not swallowed: logged with its traceback, then tried again
            log.exception("%s failed unexpectedly; retrying", what)
        await sleep(delay())


@dataclass(frozen=True)
class Timed:
    """Something the plan runs on a schedule: `fire(tick)` starts the tick's work."""

    name: str                          # its state's name in the store
    schedule: CompiledSchedule
    fire: Callable[[str], Awaitable[Any]]


class Schedules:
    """Fires due ticks (`fire_due`) and, in `run`, sleeps until the next one.

    `timed()` lists what is scheduled in the active plan. `clock` gives the time (epoch
    seconds) and `sleep` waits: tests inject both, so no test waits for a real minute."""

    def __init__(
        self,
        store: Store,
        timed: Callable[[], list[Timed]],
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self._store, self._timed = store, timed
        self._clock, self._sleep = clock, sleep
        self._last: dict[str, tuple[float, str]] = {}  # name -> (last tick, schedule identity)
        self._again = False  # a tick was busy elsewhere: look again after AGAIN seconds

    async def run(self) -> None:
        """Fire due ticks until cancelled; a failure is logged and tried again (the tick is
        remembered only once fired, so it is not lost)."""
        await keep_running(self.fire_due, self.delay, self._sleep, "firing schedule ticks")

    def delay(self) -> float:
        """Seconds until the next tick of anything scheduled (at most MAX_SLEEP)."""
        now = self._clock()
        ticks = [t for item in self._timed() if (t := item.schedule.following(now)) is not None]
        longest = AGAIN if self._again else MAX_SLEEP
        return max(0.0, min([longest, *(t - now for t in ticks)]))

    async def fire_due(self) -> list[Any]:
        """Fire the latest tick of everything scheduled that has not fired it yet; answers what
        each `fire` answered (for a flow, the Acceptance of the tick's run)."""
        now = self._clock()
        fired = []
        self._again = False
        for item in self._timed():
            tick = await self._due(item, now)
            if tick is None:
                continue
            result = await item.fire(tick_text(tick))
            fired.append(result)
            if result == BUSY:  # another process is on it: look again soon
                self._again = True
            else:
                await self._remember(item, tick)
        return fired

    async def _due(self, item: Timed, now: float) -> float | None:
        latest = item.schedule.latest(now)
        if latest is None:
            return None
        identity = f"{item.schedule.cron} {item.schedule.timezone}"
        last = self._last.get(item.name)
        if last is None or last[1] != identity:
            stored = await self._store.get_trigger_state(item.name)
            if not isinstance(stored, dict) or stored.get("schedule") != identity:
                await self._remember(item, latest)  # start at the next tick
                return None
            last = (float(stored["tick"]), identity)
            self._last[item.name] = last
        return latest if latest > last[0] else None

    async def _remember(self, item: Timed, tick: float) -> None:
        identity = f"{item.schedule.cron} {item.schedule.timezone}"
        await self._store.put_trigger_state(item.name, {"tick": tick, "schedule": identity})
        self._last[item.name] = (tick, identity)


def flow_ticks(
    plan: Plan, ingest: Callable[[CompiledFlow, Any, str, str], Awaitable[Any]]
) -> list[Timed]:
    """The schedule flows of `plan`; `ingest(flow, data, event id, time)` accepts a tick's run."""

    def timed(flow: CompiledFlow, schedule: CompiledSchedule) -> Timed:
        async def fire(tick: str) -> Any:
            data = {"tick": tick, "cron": schedule.cron, "timezone": schedule.timezone}
            acceptance = await ingest(flow, data, f"schedule:{flow.name}:{tick}", tick)
            log.info("schedule %s: tick %s %s run %s", flow.name, tick, acceptance.status,
                     acceptance.run_id, extra={"event": "schedule.tick", "flow": flow.name,
                                               "run_id": acceptance.run_id, "tick": tick})
            return acceptance

        return Timed(f"schedule:{flow.name}", schedule, fire)

    return [
        timed(flow, flow.trigger.schedule)
        for flow in plan.flows.values() if flow.trigger.schedule is not None
    ]


def reconciliation_ticks(plan: Plan, run: Callable[[str, str], Awaitable[Any]]) -> list[Timed]:
    """The scheduled Reconciliations of `plan`; `run(name, tick)` runs one tick."""
    return [
        Timed(f"schedule:reconciliation:{name}", recon.schedule, functools.partial(run, name))
        for name, recon in plan.reconciliations.items() if recon.schedule is not None
    ]
