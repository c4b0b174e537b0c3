"""The timed loops of a Runtime: cron ticks of schedule flows, cron ticks of Reconciliations (a
loop of their own, so a long reconciliation never delays a flow's tick), polls, the consumers
of stream triggers (engine/runtime/streams.py) and the evaluation of Alerts
(engine/runtime/alerting.py). Each turns what it finds into events for
`Ingest`, under the active plan."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from engine.compiler.compiled import CompiledFlow
from engine.compiler.plan import Plan
from engine.runtime.alerting import EVERY as ALERT_EVERY
from engine.runtime.alerting import Alerting
from engine.runtime.clock import Clock, utc_second
from engine.runtime.ingest import EventMeta, Ingest
from engine.runtime.plans import Plans
from engine.runtime.polling import Polls
from engine.runtime.reconciling import Reconciler
from engine.runtime.schedules import Schedules, Timed, flow_ticks, reconciliation_ticks
from engine.runtime.streams import Streams
from engine.store.base import Acceptance, EventRecord, Store


class Timers:
    """`start()` runs the loops as tasks, `stop()` cancels them. `reconciler` also runs a
    Reconciliation on demand (the admin API, `syncline reconcile`)."""

    def __init__(self, store: Store, plans: Plans, ingest: Ingest, clock: Clock,
                 streams: Streams | None = None, *, alert_every: float = ALERT_EVERY) -> None:
        self._plans, self._ingest, self._clock = plans, ingest, clock
        self.reconciler = Reconciler(
            store, lambda: plans.active, plans.calls_for, self._emit_event, clock=clock.now
        )
        self.schedules = Schedules(
            store, self._per_plan(lambda plan: flow_ticks(plan, self._ingest_timed)),
            clock=clock.now, sleep=clock.sleep,
        )  # fmt: skip
        self.reconciliation_schedules = Schedules(
            store, self._per_plan(lambda plan: reconciliation_ticks(plan, self.reconciler.run)),
            clock=clock.now, sleep=clock.sleep,
        )  # fmt: skip
        self.polls = Polls(
            store, lambda: plans.active, plans.calls_for, self._ingest_timed,
            clock=clock.now, sleep=clock.sleep,
        )  # fmt: skip
        self.streams = streams
        self.alerting = Alerting(
            store, lambda: plans.active, plans.calls_for,
            clock=clock.now, sleep=clock.sleep, every=alert_every,
        )  # fmt: skip
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loops = [self.schedules.run, self.reconciliation_schedules.run, self.polls.run,
                 self.alerting.run]
        if self.streams is not None:
            loops.append(self.streams.run)
        self._tasks = [asyncio.create_task(loop()) for loop in loops]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _ingest_timed(
        self, flow: CompiledFlow, data: Any, event_id: str, when: str
    ) -> Acceptance:
        """A timed trigger's event (a schedule tick, a polled item) for `flow`."""
        kind = flow.trigger.kind
        meta = EventMeta(event_id, f"{kind}:{flow.name}", f"syncline/{kind}", time=when)
        return await self._ingest.ingest(flow, data, meta)

    def _per_plan(self, build: Callable[[Plan], list[Timed]]) -> Callable[[], list[Timed]]:
        """`build(active plan)`, worked out again only when the plan changes."""
        cache: list[Any] = [None, []]

        def timed() -> list[Timed]:
            plan = self._plans.active
            if cache[0] != plan.digest:
                cache[:] = [plan.digest, build(plan)]
            return list(cache[1])

        return timed

    async def _emit_event(self, type_: str, event_id: str, data: Any) -> list[Acceptance]:
        """A CloudEvent from inside the runtime (a reconciliation's mismatch)."""
        source = "syncline/reconciliation"
        when = utc_second(self._clock.now())
        event = EventRecord(event_id, type_, source, data, None, when, {})
        return await self._ingest.ingest_event(event, EventMeta(event_id, type_, source))
