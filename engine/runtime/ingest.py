"""Turning deliveries into runs: an inbound event (webhook, API call, CloudEvent) or an emitted
one (the outbox) becomes the event record and one new run per flow it triggers, filtered and
keyed as each flow says, accepted by the store in one transaction."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from time import monotonic, process_time
from types import MappingProxyType
from typing import Any, NamedTuple

from engine.compiler.compiled import CompiledFlow
from engine.runtime.clock import Clock, utc_second
from engine.runtime.echo import ECHO, EchoGuard
from engine.runtime.executor import DONE, event_context, run_context
from engine.runtime.plans import Plans
from engine.runtime.steps import truthy
from engine.store.base import (
    Acceptance,
    EventRecord,
    NewRun,
    OutboxItem,
    Reason,
    RunRecord,
    RunState,
    Store,
)

# Deliveries come first. Ingest is busy when BUSY_DELIVERIES deliveries wait for their accepts
# at once while this process uses BUSY_CPU of a core (what they wait for is its event loop, not a
# slow store), and for BUSY_HOLD seconds after. Meanwhile its workers execute fewer runs at once
# (workers.GIVE_WAY), so that the loop's time goes to accepting: each sender waits for its 202,
# and one that times out sends again. The backlog runs at full concurrency after.
BUSY_DELIVERIES = 8
BUSY_CPU = 0.8
BUSY_HOLD = 0.25
_CPU_SAMPLE = 0.1  # seconds between looks at the process's CPU time


class EventMeta(NamedTuple):
    """What the ingest side knows about an inbound delivery. (A named tuple: every delivery
    makes one, and a frozen dataclass costs three times as much to build.)"""

    id: str | None  # delivery id (webhook-id, ce-id, ...); None: generated
    type: str  # CloudEvents type; "webhook:<path>" / "api:<path>"
    source: str  # the sending System, or the ce source
    subject: str | None = None
    time: str | None = None  # RFC 3339; default now
    correlation_id: str | None = None  # X-Correlation-ID or traceparent's trace id
    traceparent: str | None = None
    attributes: Mapping[str, Any] = MappingProxyType({})  # extra ce attributes / headers


@dataclass(frozen=True)
class ApiResult:
    """The answer of a synchronous process API call."""

    run_id: str
    state: str  # succeeded | parked | failed | dead-lettered | timeout
    output: Any = None  # the flow's `output` (succeeded)
    errors: list[dict[str, Any]] | tuple[()] = ()  # [{path, message, code}] of a failure
    reason: dict[str, Any] | None = None  # {code, step, message}


class Ingest:
    """Accepts deliveries into the store. `new_id` draws run and event ids; `accepted` hears of
    every batch of acceptances (the workers count and wake on them)."""

    def __init__(
        self,
        store: Store,
        plans: Plans,
        clock: Clock,
        new_id: Callable[[], str],
        accepted: Callable[[Sequence[Acceptance]], None],
        echoes: EchoGuard | None = None,
        on_echo: Callable[[str, str], None] = lambda flow, system: None,
    ) -> None:
        self.store, self.plans, self.clock = store, plans, clock
        self.new_id, self.accepted = new_id, accepted
        self.echoes, self.on_echo = echoes, on_echo
        self.waiting = 0  # deliveries whose accept is committing: their senders wait for it
        self.busy_until = 0.0  # see `busy`
        self._cpu = (monotonic(), process_time(), False)  # (looked at, CPU time, saturated)

    async def ingest(self, flow: CompiledFlow, data: Any, meta: EventMeta) -> Acceptance:
        """Durably accept one delivery for `flow`: filtered (by the filter, or as the echo of
        Syncline's own write), duplicate or a new pending run."""
        event = self.event(meta, data)
        run = self.new_run(flow, event, meta)
        echo = flow.trigger.echo
        echoed = None
        if echo is not None and self.echoes is not None:
            context = {"data": event.data, "event": event_context(event)}
            echoed = await self.echoes.check(echo, context)
            if echoed is not None:
                reason = Reason(ECHO, None, echoed.message)
                run = run._replace(state="filtered", reason=reason)
        [acceptance] = await self._accept(event, [run])
        if echoed is not None and acceptance.status == "filtered":
            self.on_echo(flow.name, echoed.system)
        self.accepted([acceptance])
        return acceptance

    async def ingest_event(self, event: EventRecord, meta: EventMeta) -> list[Acceptance]:
        """A CloudEvent: one run per active flow whose `trigger.event` is its type."""
        flows = self.plans.active.subscriptions.get(event.type, ())
        acceptances = await self._accept(event, [self.new_run(flow, event, meta) for flow in flows])
        self.accepted(acceptances)
        return acceptances

    def busy(self) -> bool:
        """Whether deliveries arrive faster than this process's event loop accepts them: within
        the last BUSY_HOLD seconds, BUSY_DELIVERIES of them waited together while it used
        BUSY_CPU of a core. (A moment's reading would say no each time a batch commits and its
        senders are answered.)"""
        return self.clock.now() < self.busy_until

    def _saturated(self) -> bool:
        """Whether this process used BUSY_CPU of a core since its CPU time was last read."""
        now = monotonic()
        then, cpu, saturated = self._cpu
        if now - then >= _CPU_SAMPLE:
            used = process_time()
            saturated = (used - cpu) / (now - then) >= BUSY_CPU
            self._cpu = (now, used, saturated)
        return saturated

    async def _accept(self, event: EventRecord, runs: list[NewRun]) -> list[Acceptance]:
        self.waiting += 1
        if self.waiting >= BUSY_DELIVERIES and self._saturated():
            self.busy_until = self.clock.now() + BUSY_HOLD
        try:
            return await self.store.accept(event, runs)
        finally:
            self.waiting -= 1

    async def dispatch(self, item: OutboxItem) -> None:
        """An emitted event: runs of the active flows subscribed to its type."""
        flows = self.plans.active.subscriptions.get(item.event.type, ())
        attributes = item.event.attributes
        meta = EventMeta(
            item.event.id,
            item.event.type,
            item.event.source,
            correlation_id=attributes.get("correlationid"),
            traceparent=attributes.get("traceparent"),
        )
        runs = [self.new_run(flow, item.event, meta) for flow in flows]
        self.accepted(await self.store.dispatch(item, runs))

    def event(self, meta: EventMeta, data: Any) -> EventRecord:
        """The event record of a delivery (id and time filled in when the sender gave none)."""
        when = meta.time or utc_second(self.clock.now())
        return EventRecord(
            meta.id or self.new_id(),
            meta.type,
            meta.source,
            data,
            meta.subject,
            when,
            dict(meta.attributes),
        )

    def new_run(
        self, flow: CompiledFlow, event: EventRecord, meta: EventMeta, replay_of: str | None = None
    ) -> NewRun:
        """Filter, idempotency key, ordering key and correlation id of a new run (a replay is
        never filtered and has a key of its own)."""
        context = {"data": event.data, "event": event_context(event)}
        state: RunState = "pending"
        filtered = flow.filter is not None and not truthy(flow.filter.search(context))
        if filtered and replay_of is None:
            state = "filtered"
        key = flow.idempotency_key.search(context) if flow.idempotency_key else None
        order = flow.ordering_key.search(context) if flow.ordering_key else None
        correlation = meta.correlation_id or _trace_id(meta.traceparent) or self.new_id()
        run_id = self.new_id()
        labelling = self.plans.active.run_labels.get(flow.name)
        return NewRun(
            id=run_id,
            flow=flow.name,
            flow_version=flow.version,
            plan_digest=self.plans.active.digest,
            key=f"replay:{run_id}"
            if replay_of
            else _key_text(key if key is not None else event.id),
            ordering_key=None if order is None else _key_text(order),
            correlation_id=correlation,
            traceparent=meta.traceparent,
            state=state,
            replay_of=replay_of,
            parked_holds_key=flow.while_parked == "block",
            labels=None if labelling is None else labelling.resolve(flow.name, event.data, {}),
        )

    async def api_result(self, run: RunRecord) -> ApiResult:
        """What a stopped run answers: the flow's `output`, or its reason and field errors."""
        reason = None if run.reason is None else run.reason.__dict__.copy()
        steps = await self.store.get_steps(run.id)
        if run.state != "succeeded":
            errors = [
                e
                for r in steps.values()
                if r.state == "failed" and isinstance(r.output, dict)
                for e in r.output.get("errors", [])
            ]
            return ApiResult(run.id, run.state, None, errors, reason)
        plan = await self.plans.plan_for(run.plan_digest)
        flow = plan.flow(run.flow, run.flow_version)
        if flow.output is None:
            return ApiResult(run.id, run.state, None, [], reason)
        event = await self.store.get_event(run.event_id)
        assert event is not None
        outputs = {s: r.output for s, r in steps.items() if r.state in DONE}
        return ApiResult(
            run.id,
            run.state,
            flow.output.search(run_context(run, event, outputs, plan.env)),
            [],
            reason,
        )


def _key_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _trace_id(traceparent: str | None) -> str | None:
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None
