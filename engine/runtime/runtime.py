"""The durable runtime: ingest events into runs, execute them with asyncio workers, and let
operators resume, retry, cancel and replay them.

    store = SQLiteStore(".syncline/syncline.db"); await store.open()
    runtime = Runtime(store, compile_project("."), secrets={...})
    await runtime.start()
    acceptance = await runtime.ingest(plan.flows["closed-won-to-order"], payload, EventMeta(...))
    ...
    await runtime.stop()

`Runtime` is a facade over the parts that do the work: `Plans` (plan cache, per-plan clients),
`Ingest` (deliveries -> runs), `Workers` (claim, execute, renew, dispatch), `Waiters`, `Timers`
(schedules, polls, Reconciliations: `runtime.timers`), `Operations` (operator actions and pause
switches: `runtime.operations`) and `Gates` (`runtime.gates`). Runs with the same ordering key
execute one at a time in arrival order, which the store's claim enforces. Time and randomness
come from the `clock` and `rng` given, so tests can drive them.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping
from typing import Any

import httpx

from engine.compiler.compiled import CompiledFlow
from engine.compiler.plan import Plan
from engine.runtime.alerting import EVERY as ALERT_EVERY
from engine.runtime.backbone import Backbone
from engine.runtime.clock import Clock, SystemClock, new_id
from engine.runtime.details import RunDetail, read_detail
from engine.runtime.echo import EchoGuard, Fingerprints
from engine.runtime.executor import Executor, Observer, ObserverProtocol
from engine.runtime.gates import Gates
from engine.runtime.ingest import ApiResult, EventMeta, Ingest
from engine.runtime.operations import MISSING, Operations
from engine.runtime.plans import Plans
from engine.runtime.quota import Quotas
from engine.runtime.streams import Streams
from engine.runtime.timers import Timers
from engine.runtime.tracing import Tracing
from engine.runtime.waiting import STOPPED_STATES, Waiters
from engine.runtime.workers import Workers
from engine.store.base import Acceptance, EventRecord, RunQuery, RunRecord, Store
from engine.store.controls import Controls
from engine.store.echoes import Echoes
from engine.store.quotas import QuotaLedger

__all__ = ["MISSING", "ApiResult", "EventMeta", "RunDetail", "Runtime"]


class Runtime:
    """Executes plans durably against a Store (see the module docstring).

    `secrets` resolve `${secret.X}` in Systems' auth and headers; `transport` replaces the network
    for every call (tests, dry runs); `concurrency` caps runs executing at once in this process;
    `lease` is how long a claimed run is reserved for this worker (renewed while it executes);
    `poll` bounds how long a worker sleeps before looking at the store again. `clock` (default
    the system clock) and `rng` (default a fresh `random.Random`) are its only sources of time
    and randomness: ids, backoff jitter, leases and every wait. `tracing` (from
    `tracing_from_environ`) gives every run, step and call a span; None: no tracing.
    `alert_every` is how often the Alerts are evaluated and their notifications delivered
    (seconds).
    """

    def __init__(
        self,
        store: Store,
        plan: Plan,
        *,
        secrets: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        concurrency: int = 32,
        worker_id: str | None = None,
        observer: ObserverProtocol | None = None,
        lease: float = 30.0,
        poll: float = 0.5,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        backbone: Backbone | None = None,
        tracing: Tracing | None = None,
        alert_every: float = ALERT_EVERY,
    ) -> None:
        self.store = store
        self.clock: Clock = clock or SystemClock()
        rng = rng or random.Random()
        ids = functools.partial(new_id, self.clock, rng)
        self.worker_id = worker_id or f"worker-{ids()[-12:]}"
        observer = observer or Observer()
        quotas = Quotas(QuotaLedger(store), self.clock.now, shared=store.shared,
                        sleep=self.clock.sleep)
        self.gates = Gates(Controls(store), self.clock.now, observer=observer, quotas=quotas)
        self.tracing = tracing
        self._plans = Plans(
            store, plan, secrets or {}, transport, concurrency, observer.call, self.gates, tracing
        )
        self._waiters = Waiters(store, self.clock, poll)
        self.backbone = backbone or Backbone()
        echoes = Echoes(store)
        executor = Executor(store, observer, self.clock.now, lambda: self._workers.stopping, rng,
                            backbone=self.backbone, tracing=tracing,
                            fingerprints=Fingerprints(echoes, self.clock.now),
                            run_labels=lambda flow: self._plans.active.run_labels.get(flow))
        self._workers = Workers(
            store, self._plans, executor, self._waiters, self.clock,
            lambda item: self._ingest.dispatch(item),
            worker_id=self.worker_id, concurrency=concurrency, lease=lease, poll=poll,
            gates=self.gates, busy=lambda: self._ingest.busy(),
        )  # fmt: skip
        self._ingest = Ingest(store, self._plans, self.clock, ids, self._workers.accepted,
                              EchoGuard(echoes, self.clock.now), observer.echo)
        self.operations = Operations(
            store, self._plans, self._ingest, self._workers.requeued, self.gates
        )
        streams = Streams(self.backbone, lambda: self.plan, self._ingest.ingest,
                          report=lambda flow, outcome: observer.delivery(f"stream:{flow}", outcome),
                          sleep=self.clock.sleep)
        self.timers = Timers(store, self._plans, self._ingest, self.clock, streams,
                             alert_every=alert_every)
        self.reconciler = self.timers.reconciler
        self.schedules = self.timers.schedules
        self.polls = self.timers.polls
        self.alerting = self.timers.alerting

    # lifecycle -----------------------------------------------------------------------------
    @property
    def plan(self) -> Plan:
        """The active plan: new runs use it."""
        return self._plans.active

    async def start(self, *, timers: bool = True) -> None:
        """Save the plan bundle, open the Systems' clients, start the workers and dispatcher,
        and (unless `timers` is False: one flow run on a payload) the schedule, poll and stream
        loops."""
        await self._plans.open()
        await self._workers.start()
        if timers:
            self.timers.start()

    async def stop(self, grace: float = 10.0) -> None:
        """Claim nothing new; let executing runs checkpoint their in-flight steps (up to `grace`
        seconds) and hand the rest back; stop the loops and close the clients."""
        await self.timers.stop()
        await self._workers.stop(grace)
        await self._plans.aclose()
        await self.backbone.aclose()

    async def swap_plan(self, plan: Plan) -> None:
        """Hot reload: new runs use `plan`; runs already accepted finish with their own plan."""
        await self._plans.swap(plan)

    def queue_depth(self) -> int:
        """Runs accepted and not yet finished (pending, running, waiting): an estimate."""
        return max(0, self._workers.depth)

    # ingest --------------------------------------------------------------------------------
    async def ingest(self, flow: CompiledFlow, data: Any, meta: EventMeta) -> Acceptance:
        """Durably accept one delivery for `flow`: filtered, duplicate or a new pending run."""
        return await self._ingest.ingest(flow, data, meta)

    async def ingest_event(self, event: EventRecord, meta: EventMeta) -> list[Acceptance]:
        """A CloudEvent: one run per active flow whose `trigger.event` is its type."""
        return await self._ingest.ingest_event(event, meta)

    async def call_api(
        self, flow: CompiledFlow, data: Any, meta: EventMeta, timeout: float
    ) -> ApiResult:
        """Accept durably, execute now, and answer once the run succeeded or stopped (or after
        `timeout` seconds, with state `timeout`; the run goes on)."""
        acceptance = await self._ingest.ingest(flow, data, meta)
        if acceptance.status == "filtered":
            return ApiResult(acceptance.run_id, "filtered")
        run = await self._waiters.wait(acceptance.run_id, timeout)
        if run.state not in STOPPED_STATES:
            return ApiResult(run.id, "timeout")
        return await self._ingest.api_result(run)

    async def api_result(self, run: RunRecord) -> ApiResult:
        """What a stopped run answers: the flow's `output`, or its reason and field errors."""
        return await self._ingest.api_result(run)

    # waiting -------------------------------------------------------------------------------
    async def wait(self, run_id: str, timeout: float) -> RunRecord:
        """The run once it is terminal or parked, or as it is after `timeout` seconds."""
        return await self._waiters.wait(run_id, timeout)

    async def idle(self, timeout: float) -> bool:
        """True once no run is pending, running or waiting and the outbox is empty."""
        return await self._workers.idle(timeout)

    # reading -------------------------------------------------------------------------------
    async def list_runs(
        self,
        query: RunQuery | None = None,
        *,
        flow: str | None = None,
        state: str | None = None,
        key: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
        correlation_id: str | None = None,
    ) -> tuple[list[RunRecord], str | None]:
        """Runs newest first (`query`, or the filters given one by one), and the cursor of the
        next page (None: no more)."""
        query = query or RunQuery(flow, state, key, cursor, limit, correlation_id)
        runs = await self.store.list_runs(query)
        return runs, query.next_cursor(runs)

    async def run_detail(self, run_id: str) -> RunDetail | None:
        """A run with its steps, event, audit entries and history (None: no such run)."""
        return await read_detail(self.store, self._plans, run_id)
