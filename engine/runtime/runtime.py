"""The durable runtime: ingest events into runs, execute them with asyncio workers, and let
operators resume, retry, cancel and replay them.

    store = SQLiteStore(".syncline/syncline.db"); await store.open()
    runtime = Runtime(store, compile_project("."), secrets={...})
    await runtime.start()
    acceptance = await runtime.ingest(plan.flows["closed-won-to-order"], payload, EventMeta(...))
    ...
    await runtime.stop()

Workers claim runs from the store (leased, so a crashed worker's runs are claimed again once the
lease expires); a run waiting for a retry holds no worker: its next attempt time is in the store
and the claim loop sleeps until it is due. Runs with the same ordering key execute one at a time
in arrival order, which the store's claim enforces. An outbox dispatcher turns emitted events
into runs of the flows subscribed to their type.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from engine.compiler import compile_bundle
from engine.compiler.compiled import CompiledFlow
from engine.compiler.plan import Plan
from engine.errors import StateConflict, StoreError, UsageError
from engine.runtime.calls import Calls
from engine.runtime.executor import (
    CANCELLED,
    DONE,
    Executor,
    Finished,
    Observer,
    ObserverProtocol,
    event_context,
    run_context,
)
from engine.runtime.steps import truthy
from engine.store.base import (
    RUNNABLE_STATES,
    TERMINAL_STATES,
    Acceptance,
    Checkpoint,
    EventRecord,
    NewRun,
    OutboxItem,
    Reason,
    RunRecord,
    RunState,
    Store,
)

log = logging.getLogger("syncline.runtime")

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()
STOPPED_STATES = TERMINAL_STATES | {"parked"}
CANCELLABLE = ("pending", "waiting", "parked", "dead-lettered")  # and running: a cancel request
EFFECT_KINDS = frozenset({"call", "emit"})


@dataclass(frozen=True)
class EventMeta:
    """What the ingest side knows about an inbound delivery."""

    id: str | None  # delivery id (webhook-id, ce-id, ...); None: generated
    type: str  # CloudEvents type; "webhook:<path>" / "api:<path>"
    source: str  # the sending System, or the ce source
    subject: str | None = None
    time: str | None = None  # RFC 3339; default now
    correlation_id: str | None = None  # X-Correlation-ID or traceparent's trace id
    traceparent: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)  # extra ce attributes / headers


@dataclass(frozen=True)
class ApiResult:
    """The answer of a synchronous process API call."""

    run_id: str
    state: str  # succeeded | parked | failed | dead-lettered | timeout
    output: Any = None  # the flow's `output` (succeeded)
    errors: list[dict[str, Any]] | tuple[()] = ()  # [{path, message, code}] of a failure
    reason: dict[str, Any] | None = None  # {code, step, message}


_ID_BITS = random.Random()  # seeded from os.urandom: ids must be unique, not secret


def _new_id() -> str:
    """32 hex digits: milliseconds since the epoch, then 80 random bits.

    Time-ordered ids are appended at the end of the stores' run-id index instead of at random
    places in it (uuid4 cost ~12 us an accept there), and drawing them does not release the GIL
    as os.urandom does on every call."""
    return f"{time.time_ns() // 1_000_000:012x}{_ID_BITS.getrandbits(80):020x}"


_NOW_TEXT: list[Any] = [None, ""]  # [the second, its RFC 3339 text]


def _now_text() -> str:
    """The current UTC second in RFC 3339, formatted once per second (ingest asks per event)."""
    second = int(time.time())
    if _NOW_TEXT[0] != second:
        _NOW_TEXT[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))]
    return str(_NOW_TEXT[1])


def _compile_warm(bundle: dict[str, Any]) -> Plan:
    """A stored bundle's plan with its generated functions compiled (for a worker thread)."""
    plan = compile_bundle(bundle)
    plan.warm()
    return plan


def _key_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _trace_id(traceparent: str | None) -> str | None:
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


class Runtime:
    """Executes plans durably against a Store (see the module docstring).

    `secrets` resolve `${secret.X}` in Systems' auth and headers; `transport` replaces the network
    for every call (tests, dry runs); `concurrency` caps runs executing at once in this process;
    `lease` is how long a claimed run is reserved for this worker (renewed while it executes).
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
    ) -> None:
        self.store = store
        self.worker_id = worker_id or f"worker-{_new_id()[-12:]}"
        self.concurrency = concurrency
        self.lease, self.poll = lease, poll
        self._plan = plan
        self._plans: dict[str, Plan] = {plan.digest: plan}
        self._calls: dict[str, Calls] = {}
        self._secrets = dict(secrets or {})
        self._transport = transport
        self._observer: Any = observer or Observer()
        self._executor = Executor(store, self._observer, time.time, lambda: self._stopping)
        self._active: dict[str, asyncio.Task[None]] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._due: list[float] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._wakeup = asyncio.Event()
        self._outbox_wakeup = asyncio.Event()
        self._stopping = False
        self._started = False
        self._depth = 0

    # lifecycle -----------------------------------------------------------------------------
    @property
    def plan(self) -> Plan:
        """The active plan: new runs use it."""
        return self._plan

    async def start(self) -> None:
        """Save the plan bundle, open the Systems' clients, start the workers and dispatcher."""
        await self.store.save_plan(self._plan.digest, dict(self._plan.bundle))
        self._calls_for(self._plan)
        counts = await self.store.count_runs()
        self._depth = sum(
            n for (_, state), n in counts.items() if state in ("pending", "running", "waiting")
        )
        self._stopping, self._started = False, True
        self._tasks = [
            asyncio.create_task(loop())
            for loop in (self._claim_loop, self._dispatch_loop, self._renew_loop)
        ]

    async def stop(self, grace: float = 10.0) -> None:
        """Claim nothing new; let executing runs checkpoint their in-flight steps (up to `grace`
        seconds) and hand the rest back; stop the loops and close the clients."""
        self._stopping = True
        self._wakeup.set()
        self._outbox_wakeup.set()
        if self._active:
            await asyncio.wait(list(self._active.values()), timeout=grace)
        for task in [*self._active.values(), *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._active.values(), *self._tasks, return_exceptions=True)
        self._tasks.clear()
        for calls in self._calls.values():
            await calls.aclose()
        self._calls.clear()
        self._started = False

    async def swap_plan(self, plan: Plan) -> None:
        """Hot reload: new runs use `plan`; runs already accepted finish with their own plan."""
        await self.store.save_plan(plan.digest, dict(plan.bundle))
        self._plans[plan.digest] = plan
        self._plan = plan

    def queue_depth(self) -> int:
        """Runs accepted and not yet finished (pending, running, waiting): an estimate."""
        return max(0, self._depth)

    # ingest --------------------------------------------------------------------------------
    async def ingest(self, flow: CompiledFlow, data: Any, meta: EventMeta) -> Acceptance:
        """Durably accept one delivery for `flow`: filtered, duplicate or a new pending run."""
        event = self._event(meta, data)
        [acceptance] = await self.store.accept(event, [self._new_run(flow, event, meta)])
        self._accepted([acceptance])
        return acceptance

    async def ingest_event(self, event: EventRecord, meta: EventMeta) -> list[Acceptance]:
        """A CloudEvent: one run per active flow whose `trigger.event` is its type."""
        flows = self._plan.subscriptions.get(event.type, ())
        acceptances = await self.store.accept(
            event, [self._new_run(flow, event, meta) for flow in flows]
        )
        self._accepted(acceptances)
        return acceptances

    async def call_api(
        self, flow: CompiledFlow, data: Any, meta: EventMeta, timeout: float
    ) -> ApiResult:
        """Accept durably, execute now, and answer once the run succeeded or stopped (or after
        `timeout` seconds, with state `timeout`; the run goes on)."""
        acceptance = await self.ingest(flow, data, meta)
        if acceptance.status == "filtered":
            return ApiResult(acceptance.run_id, "filtered")
        run = await self.wait(acceptance.run_id, timeout)
        if run.state not in STOPPED_STATES:
            return ApiResult(run.id, "timeout")
        return await self.api_result(run)

    def _event(self, meta: EventMeta, data: Any) -> EventRecord:
        when = meta.time or _now_text()
        return EventRecord(
            meta.id or _new_id(),
            meta.type,
            meta.source,
            data,
            meta.subject,
            when,
            dict(meta.attributes),
        )

    def _new_run(
        self, flow: CompiledFlow, event: EventRecord, meta: EventMeta, replay_of: str | None = None
    ) -> NewRun:
        """Filter, idempotency key, ordering key and correlation id of a new run."""
        context = {"data": event.data, "event": event_context(event)}
        state: RunState = "pending"
        if flow.filter is not None and not truthy(flow.filter.search(context)):
            state = "filtered"
        key = flow.idempotency_key.search(context) if flow.idempotency_key else None
        order = flow.ordering_key.search(context) if flow.ordering_key else None
        correlation = meta.correlation_id or _trace_id(meta.traceparent) or _new_id()
        run_id = _new_id()
        return NewRun(
            id=run_id,
            flow=flow.name,
            flow_version=flow.version,
            plan_digest=self._plan.digest,
            key=f"replay:{run_id}"
            if replay_of
            else _key_text(key if key is not None else event.id),
            ordering_key=None if order is None else _key_text(order),
            correlation_id=correlation,
            traceparent=meta.traceparent,
            state=state,
            replay_of=replay_of,
        )

    def _accepted(self, acceptances: list[Acceptance]) -> None:
        new = sum(1 for a in acceptances if a.status == "accepted")
        if new:
            self._depth += new
            self._wakeup.set()

    # workers -------------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            free = self.concurrency - len(self._active)
            claimed: list[RunRecord] = []
            if free > 0:
                try:
                    claimed = await self.store.claim(self.worker_id, free, time.time(), self.lease)
                except StoreError:
                    log.exception("claiming runs failed; retrying")
            for run in claimed:
                self._active[run.id] = asyncio.create_task(self._execute(run))
            if claimed and len(claimed) == free:
                await self._wakeup.wait()  # every slot is busy: wait for one to free up
            elif not claimed:
                await self._sleep()

    async def _sleep(self) -> None:
        """Until woken, or a local retry is due, or the poll interval passed."""
        now = time.time()
        while self._due and self._due[0] <= now:
            heapq.heappop(self._due)
        timeout = min(self.poll, self._due[0] - now) if self._due else self.poll
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), max(timeout, 0.001))

    async def _execute(self, run: RunRecord) -> None:
        finished: Finished | None = None
        try:
            plan = await self._plan_for(run.plan_digest)
            finished = await self._executor.execute(run, plan, self._calls_for(plan))
        except asyncio.CancelledError:
            raise
        except StoreError:
            log.exception(
                "run %s: the store failed; the run is retried when its lease ends", run.id
            )
        except Exception as exc:  # a bug, or a plan that cannot be rebuilt: say so on the run
            log.exception("run %s failed unexpectedly", run.id)
            finished = await self._fail(run, exc)
        finally:
            self._active.pop(run.id, None)
            self._wakeup.set()
        if finished is not None:
            self._after(run.id, finished)

    async def _fail(self, run: RunRecord, exc: Exception) -> Finished | None:
        reason = Reason("INTERNAL_ERROR", None, f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(StoreError):
            await self.store.checkpoint(Checkpoint(run.id, None, "failed", reason=reason))
            return Finished("failed")
        return None

    def _after(self, run_id: str, finished: Finished) -> None:
        if finished.emitted:
            self._outbox_wakeup.set()
        if finished.next_attempt_at is not None:
            heapq.heappush(self._due, finished.next_attempt_at)
        if finished.state in STOPPED_STATES:
            self._depth -= 1
            for waiter in self._waiters.pop(run_id, []):
                if not waiter.done():
                    waiter.set_result(None)

    async def _renew_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.lease / 3)
            if self._active:
                try:
                    await self.store.renew(
                        self.worker_id, list(self._active), time.time() + self.lease
                    )
                except StoreError:
                    log.exception("renewing leases failed")

    async def _dispatch_loop(self) -> None:
        while not self._stopping:
            self._outbox_wakeup.clear()
            try:
                items = await self.store.outbox(100)
                for item in items:
                    await self._dispatch(item)
            except StoreError:
                log.exception("dispatching emitted events failed; retrying")
                items = []
            if not items:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._outbox_wakeup.wait(), self.poll)

    async def _dispatch(self, item: OutboxItem) -> None:
        flows = self._plan.subscriptions.get(item.event.type, ())
        attributes = item.event.attributes
        meta = EventMeta(
            item.event.id,
            item.event.type,
            item.event.source,
            correlation_id=attributes.get("correlationid"),
            traceparent=attributes.get("traceparent"),
        )
        runs = [self._new_run(flow, item.event, meta) for flow in flows]
        self._accepted(await self.store.dispatch(item, runs))

    # plans and clients ---------------------------------------------------------------------
    async def _plan_for(self, digest: str) -> Plan:
        """The plan a run started with: from memory, else rebuilt from the stored bundle."""
        plan = self._plans.get(digest)
        if plan is None:
            bundle = await self.store.load_plan(digest)
            if bundle is None:
                raise StoreError(f"plan {digest} is not in the store")
            plan = await asyncio.to_thread(_compile_warm, bundle)
            self._plans[digest] = plan
        return plan

    def _calls_for(self, plan: Plan) -> Calls:
        calls = self._calls.get(plan.digest)
        if calls is None:
            calls = Calls(
                plan.systems.values(),
                self._secrets,
                transport=self._transport,
                connections=self.concurrency,
            )
            self._calls[plan.digest] = calls
        return calls

    # waiting -------------------------------------------------------------------------------
    async def wait(self, run_id: str, timeout: float) -> RunRecord:
        """The run once it is terminal or parked, or as it is after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(run_id, []).append(waiter)
            run = await self._get(run_id)
            left = deadline - time.monotonic()
            if run.state in STOPPED_STATES or left <= 0:
                self._drop_waiter(run_id, waiter)
                return run
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, min(left, self.poll))
            self._drop_waiter(run_id, waiter)

    def _drop_waiter(self, run_id: str, waiter: asyncio.Future[None]) -> None:
        waiters = self._waiters.get(run_id, [])
        if waiter in waiters:
            waiters.remove(waiter)
        if not waiters:
            self._waiters.pop(run_id, None)

    async def idle(self, timeout: float) -> bool:
        """True once no run is pending, running or waiting and the outbox is empty."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._active:  # busy here: no need to ask the store (and slow its writers)
                await asyncio.sleep(0.02)
                continue
            # outbox first: dispatch is atomic, so an empty outbox means its runs are counted
            empty = not await self.store.outbox(1)
            counts = await self.store.count_runs()
            busy = any(n for (_, state), n in counts.items() if state in RUNNABLE_STATES)
            if empty and not busy and not self._active:
                return True
            await asyncio.sleep(0.02)
        return False

    async def _get(self, run_id: str) -> RunRecord:
        run = await self.store.get_run(run_id)
        if run is None:
            raise UsageError(f"no run '{run_id}'")
        return run

    # operator actions ----------------------------------------------------------------------
    async def resume(self, run_id: str, data: Any = MISSING, actor: str = "operator") -> RunRecord:
        """Run a parked run again from where it stopped. With corrected `data`, every step that
        wrote nothing downstream runs again on it (calls that succeeded and emits are kept), and
        the calls that run again carry new idempotency keys (a new logical write)."""
        run = await self._expect(run_id, ("parked",), "resume")
        steps = await self.store.get_steps(run_id)
        if data is MISSING:
            reset = [s for s, r in steps.items() if r.state not in DONE]
        else:
            flow = (await self._plan_for(run.plan_digest)).flow(run.flow, run.flow_version)
            reset = [
                s
                for s, r in steps.items()
                if not (r.state == "succeeded" and flow.step(s).kind in EFFECT_KINDS)
            ]
        record = await self.store.set_run_state(
            run_id,
            "pending",
            expect=("parked",),
            reset_steps=reset,
            actor=actor,
            action="resume",
            data_override=None if data is MISSING else data,
            set_override=data is not MISSING,
            bump_generation=data is not MISSING,
        )
        return self._requeued(record)

    async def retry(self, run_id: str, actor: str = "operator") -> RunRecord:
        """Run a dead-lettered (or failed) run again; the failed step starts a fresh retry budget
        with the same idempotency key, so a write that did land is not applied twice."""
        await self._expect(run_id, ("dead-lettered", "failed"), "retry")
        steps = await self.store.get_steps(run_id)
        reset = [s for s, r in steps.items() if r.state not in DONE]
        record = await self.store.set_run_state(
            run_id,
            "pending",
            expect=("dead-lettered", "failed"),
            reset_steps=reset,
            actor=actor,
            action="retry",
        )
        return self._requeued(record)

    async def cancel(self, run_id: str, actor: str = "operator") -> RunRecord:
        """Stop a run for good, compensating its completed steps; it ends `cancelled`.

        A run that is not executing (pending, waiting for a retry, parked, dead-lettered) is
        queued with reason CANCELLED at once, and a worker compensates it. A running run gets a
        cancel request in the store (still `running`, reason CANCELLED): its worker finishes and
        checkpoints the steps in flight, starts no other, then compensates. Answers the run as
        stored right after the request."""
        reason = Reason(CANCELLED, None, f"cancelled by {actor}")
        for _ in range(3):  # the run may change state between reading and writing it
            run = await self._expect(run_id, (*CANCELLABLE, "running"), "cancel")
            state = "running" if run.state == "running" else "pending"
            expect = ("running",) if run.state == "running" else CANCELLABLE
            try:
                record = await self.store.set_run_state(
                    run_id, state, expect=expect, reason=reason, actor=actor, action="cancel"
                )
            except StateConflict:  # it moved between reading and writing: look again
                continue
            return record if state == "running" else self._requeued(record)
        raise UsageError(f"run '{run_id}' keeps changing state; try cancel again")

    async def replay(self, run_id: str, actor: str = "operator") -> RunRecord:
        """A new run of the old run's event under the current plan, linked by `replay_of`."""
        old = await self._get(run_id)
        event = await self.store.get_event(old.event_id)
        flow = self._plan.flows.get(old.flow)
        if event is None or flow is None:
            raise UsageError(
                f"run '{run_id}' cannot be replayed: "
                f"{'its event is gone' if event is None else 'its flow is inactive'}"
            )
        meta = EventMeta(
            event.id,
            event.type,
            event.source,
            correlation_id=old.correlation_id,
            traceparent=old.traceparent,
        )
        new = self._new_run(flow, event, meta, replay_of=old.id)
        new = NewRun(**{**new.__dict__, "state": "pending"})
        [acceptance] = await self.store.accept(event, [new])
        await self.store.audit(actor, "replay", old.id, {"new_run": acceptance.run_id})
        self._accepted([acceptance])
        return await self._get(acceptance.run_id)

    async def _expect(self, run_id: str, states: tuple[str, ...], action: str) -> RunRecord:
        run = await self._get(run_id)
        if run.state not in states:
            allowed = " or ".join(states)
            raise UsageError(f"run '{run_id}' is {run.state}; {action} needs a {allowed} run")
        return run

    def _requeued(self, record: RunRecord) -> RunRecord:
        self._depth += 1
        self._wakeup.set()
        return record

    # reading -------------------------------------------------------------------------------
    async def run_detail(self, run_id: str) -> dict[str, Any] | None:
        """A run as the admin API shows it (SPEC section 6), with its event."""
        run = await self.store.get_run(run_id)
        if run is None:
            return None
        steps, event = await asyncio.gather(
            self.store.get_steps(run_id), self.store.get_event(run.event_id)
        )
        detail = run_summary(run)
        order = await self._step_order(run)
        detail["steps"] = [
            step_detail(steps[s]) for s in sorted(steps, key=lambda s: (order.get(s, 1 << 30), s))
        ]
        if event is not None:
            detail["event"] = {"id": event.id, "type": event.type, "data": event.data}
        return detail

    async def _step_order(self, run: RunRecord) -> dict[str, int]:
        try:
            flow = (await self._plan_for(run.plan_digest)).flow(run.flow, run.flow_version)
        except (StoreError, KeyError):
            return {}
        return {step.id: i for i, step in enumerate(flow.steps)}

    async def list_runs(
        self,
        *,
        flow: str | None = None,
        state: str | None = None,
        key: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Runs newest first, and the cursor of the next page (None: no more)."""
        try:
            before = int(cursor) if cursor else None
        except ValueError:
            raise UsageError(f"bad cursor {cursor!r}") from None
        runs = await self.store.list_runs(
            flow=flow, state=state, key=key, before_seq=before, limit=limit
        )
        following = str(runs[-1].seq) if len(runs) == limit else None
        return [run_summary(run) for run in runs], following

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
        plan = await self._plan_for(run.plan_digest)
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


def run_summary(run: RunRecord) -> dict[str, Any]:
    """A run's fields as the admin API shows them (without steps)."""
    return {
        "id": run.id,
        "flow": run.flow,
        "flow_version": run.flow_version,
        "plan_digest": run.plan_digest,
        "state": run.state,
        "key": run.key,
        "ordering_key": run.ordering_key,
        "correlation_id": run.correlation_id,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "next_attempt_at": run.next_attempt_at,
        "reason": None if run.reason is None else dict(run.reason.__dict__),
        "links": {"replay_of": run.replay_of, "replayed_by": list(run.replayed_by)},
    }


def step_detail(record: Any) -> dict[str, Any]:
    """One step record as the admin API shows it."""
    return {
        "id": record.step_id,
        "state": record.state,
        "output": record.output,
        "input_digest": record.input_digest,
        "error": record.error,
        "attempts": [dict(a.__dict__) for a in record.attempts],
    }
