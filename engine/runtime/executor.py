"""Execute one claimed run of a flow: its step graph, checkpoints, stops and compensation.

Step semantics (the contract SPEC.md section 2 leaves to the runtime):

- A step is *ready* when every step it needs (explicit `needs` and implicit `steps.<id>`
  references) is done. Every ready step starts at once, so independent steps run concurrently.
- A step's result is checkpointed (`Store.checkpoint`) before any step that depends on it starts.
  Re-executing a run (after a crash, a backoff wait or an operator action) skips every step whose
  record says `succeeded` or `skipped`: completed steps are never repeated.
- `when` false: the step is *skipped*, its output is null, and its dependents still run and see
  `steps.<id>` as null (guard them with their own `when` if they must not).
- When a step stops the run (see `engine.runtime.steps`), no further step starts; steps already
  in flight finish and are checkpointed; then the run takes its state: `waiting` (next attempt
  time in the store, the worker is released), `parked`, `dead-lettered`, or for a failure the
  flow's `onFailure`: `park` (completed steps stay as they are) or `compensate`.
- Compensation runs the `compensate` call of every succeeded step, in reverse completion order,
  each with its own idempotency key (`<step>#compensate`); the run ends `compensated` (or
  `cancelled` when an operator cancelled it), keeping the failure's reason. A compensation call
  that fails is decided by the step's RetryPolicy exactly as a call is (`onError`, `retryOn`,
  backoff, `maxAttempts`, deadline); `succeed` counts it as undone. A retry is like a step's: the
  attempt is checkpointed and the run waits (`waiting`, next attempt
  time in the store, no worker held). One that still fails ends the run `failed` with reason
  COMPENSATION_FAILED naming the step: downstream state is then partial, and the run says so.
- A run held back by a paused System or an open circuit waits (`waiting`) with the reason
  SYSTEM_PAUSED or CIRCUIT_OPEN (engine/runtime/gates.py); it spends no attempt.
- A runnable run that carries any other reason is being compensated: the executor records the
  reason with the run still `running` before the first compensation call, and `cancel` queues a
  run with reason CANCELLED. A crash in the middle of compensation thus resumes compensation,
  never the flow.
- `cancel` of a running run records the request in the store (reason CANCELLED, still
  `running`). Every checkpoint answers it (`Store.checkpoint`), so the worker starts no further
  step: the steps in flight finish and are checkpointed, then it compensates and the run ends
  `cancelled`, with an audit entry. A final state the run reached meanwhile is not written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.compiler.compiled import CompiledFlow, CompiledStep
from engine.compiler.metric_labels import FlowLabels
from engine.compiler.plan import Plan
from engine.errors import CallError, CallHeld
from engine.runtime.backbone import Backbone
from engine.runtime.calls import Calls, OutboundRequest, describe
from engine.runtime.echo import Fingerprints, WriteFingerprint
from engine.runtime.handlers import HANDLERS
from engine.runtime.logevents import run_ended, run_started
from engine.runtime.relabel import relabel
from engine.runtime.retry import Decision, decide
from engine.runtime.steps import StepEnv, StepOutcome, Stop, build_request
from engine.runtime.tracing import Tracing
from engine.store.base import (
    CANCELLED,
    Attempt,
    Checkpoint,
    EventRecord,
    Reason,
    RunRecord,
    StepRecord,
    Store,
)
from engine.store.controls import HELD

DONE = frozenset({"succeeded", "skipped"})
COMPENSATE = "compensate:"  # outcome prefix of a compensation attempt that failed


class ObserverProtocol(Protocol):
    """What the executor reports to: `Observer`, or the server's metrics."""

    def run_state(self, flow: str, state: str) -> None: ...
    def step_attempt(self, flow: str, step: str, outcome: str, retry: bool) -> None: ...
    def shadow_result(self, flow: str, step: str, system: str, result: str) -> None: ...
    def call(self, system: str, operation: str, outcome: str, seconds: float) -> None: ...

    def circuit_opened(self, system: str, failure_rate: float, calls: int) -> None: ...
    def delivery(self, route: str, outcome: str) -> None: ...

    def echo(self, flow: str, system: str) -> None: ...


class Observer:
    """Metrics hooks; every method is an optional no-op (the server implements them)."""

    def run_state(self, flow: str, state: str) -> None:
        """A run reached `state`."""

    def step_attempt(self, flow: str, step: str, outcome: str, retry: bool) -> None:
        """A step attempt ended with `outcome`; `retry` when another attempt will follow."""

    def shadow_result(self, flow: str, step: str, system: str, result: str) -> None:
        """A shadow call to candidate `system` came to `result` (match, mismatch, error)."""

    def call(self, system: str, operation: str, outcome: str, seconds: float) -> None:
        """An outbound call attempt ended: `ok`, `timeout`, `network`, `429` or `4xx`/`5xx`."""

    def circuit_opened(self, system: str, failure_rate: float, calls: int) -> None:
        """This process opened `system`'s circuit: `failure_rate` of `calls` failed."""

    def delivery(self, route: str, outcome: str) -> None:
        """A delivery the runtime took itself (route `stream:<flow>`, a backbone message):
        accepted, duplicate, filtered or rejected (not a CloudEvent: terminated)."""

    def echo(self, flow: str, system: str) -> None:
        """A delivery to `flow` was the echo of a write to `system` (filtered, ECHO)."""


@dataclass(frozen=True)
class Finished:
    """What executing a run came to."""

    state: str
    emitted: bool = False
    next_attempt_at: float | None = None
    reason: Reason | None = None  # why it stopped (parked, failed, waiting behind a gate, ...)


def event_context(event: EventRecord) -> dict[str, Any]:
    """`event` as expressions see it: the CloudEvents attributes."""
    return {
        "id": event.id,
        "type": event.type,
        "source": event.source,
        "time": event.time,
        "subject": event.subject,
    }


def run_context(
    run: RunRecord, event: EventRecord, outputs: dict[str, Any], env: Mapping[str, Any]
) -> dict[str, Any]:
    """`{data, event, steps, run, env}` for a run (corrected data replaces the event's)."""
    return {
        "data": run.data_override if run.has_override else event.data,
        "event": event_context(event),
        "steps": outputs,
        "run": {
            "id": run.id,
            "key": run.key,
            "correlation_id": run.correlation_id,
            "attempt": run.generation + 1,
        },
        "env": env,
    }


@dataclass
class Executor:
    """Executes claimed runs against a store. Shared by all workers of a Runtime."""

    store: Store
    observer: ObserverProtocol = field(default_factory=Observer)
    clock: Callable[[], float] = time.time
    stopping: Callable[[], bool] = lambda: False
    rng: random.Random = field(default_factory=random.Random)  # backoff jitter
    backbone: Backbone | None = None  # NATS connections, for publish steps
    tracing: Tracing | None = None  # spans for the run and its steps (None: tracing off)
    fingerprints: Fingerprints | None = None  # echo suppression: writes fingerprinted first
    # a flow's metric labels as the active plan defines them (what the store counts now, which
    # plan a run started with aside); None: the run's own plan's
    run_labels: Callable[[str], FlowLabels | None] | None = None

    async def execute(self, run: RunRecord, plan: Plan, calls: Calls | None) -> Finished:
        """Run `run` (already claimed) until it succeeds or stops; return its new state."""
        run_started(run)
        if self.tracing is None:
            finished = await self._execute(run, plan, calls)
        else:
            with self.tracing.run(run) as span:
                finished = await self._execute(run, plan, calls)
                span.outcome(finished.state, finished.reason)
        run_ended(run, finished.state, finished.reason)
        return finished

    async def _execute(self, run: RunRecord, plan: Plan, calls: Calls | None) -> Finished:
        flow = plan.flow(run.flow, run.flow_version)
        event, records = run.event, run.steps  # loaded by the claim
        assert records is not None, "execute takes claimed runs"
        if event is None:
            return await self._end(
                run, flow, "failed", Reason("EVENT_MISSING", None, f"event {run.event_id} is gone")
            )
        execution = _Execution(self, run, flow, plan, event, records, calls)
        if run.reason is not None and run.reason.code not in HELD:
            return await execution.compensate(run.reason)
        return await execution.run()

    async def _end(
        self, run: RunRecord, flow: CompiledFlow, state: str, reason: Reason | None
    ) -> Finished:
        await self.store.checkpoint(Checkpoint(run.id, None, state, reason=reason))
        self.observer.run_state(flow.name, state)
        return Finished(state, reason=reason)


class _Execution:
    """One pass over one run's step graph."""

    def __init__(
        self,
        executor: Executor,
        run: RunRecord,
        flow: CompiledFlow,
        plan: Plan,
        event: EventRecord,
        records: dict[str, StepRecord],
        calls: Calls | None,
    ) -> None:
        self.executor, self.store, self.clock = executor, executor.store, executor.clock
        self.run_record, self.flow, self.calls = run, flow, calls
        active = executor.run_labels  # the labels the store counts now (None: the run's plan's)
        self.labelling = plan.run_labels.get(flow.name) if active is None else active(flow.name)
        self.records = records
        self.outputs = {sid: r.output for sid, r in records.items() if r.state in DONE}
        self.context = run_context(run, event, self.outputs, plan.env)
        self.todo = [s for s in flow.steps if s.id not in self.outputs]
        self.stops: list[tuple[str, Stop]] = []
        self.emitted = False
        self.cancel: Reason | None = None  # an operator's cancel request, seen at a checkpoint

    # the step graph ------------------------------------------------------------------------
    async def run(self) -> Finished:
        running: dict[asyncio.Task[StepOutcome], CompiledStep] = {}
        while True:
            ready = self._ready() if not self._stopped() else []
            if len(ready) == 1 and not running:  # the common linear case: no task needed
                outcomes = [(ready[0], await self._step(ready[0]))]
            else:
                for step in ready:
                    running[asyncio.create_task(self._step(step))] = step
                if not running:
                    break
                finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                outcomes = [(running.pop(task), task.result()) for task in finished]
            final = self._decide(outcomes, still_running=bool(running))
            await self._checkpoint(outcomes, final)
            if final is not None:
                return await self._finish(final)
        return await self._finish(self._final())

    def _stopped(self) -> bool:
        return bool(self.stops) or self.cancel is not None or self.executor.stopping()

    def _ready(self) -> list[CompiledStep]:
        ready = [s for s in self.todo if s.needs.issubset(self.outputs)]
        for step in ready:
            self.todo.remove(step)
        return ready

    def _fingerprint(
        self, step_id: str
    ) -> Callable[[OutboundRequest], WriteFingerprint | None] | None:
        """Echo suppression: what makes a write's fingerprint (stored before it is sent)."""
        fingerprints, run_id = self.executor.fingerprints, self.run_record.id
        if fingerprints is None:
            return None
        return lambda request: fingerprints.write(request, run_id, step_id)

    async def _step(self, step: CompiledStep) -> StepOutcome:
        flow, observer = self.flow.name, self.executor.observer
        env = StepEnv(
            self.run_record,
            flow,
            self.context,
            self.calls,
            self.clock,
            self.executor.rng,
            previous=self.records.get(step.id),
            on_attempt=lambda o, r: observer.step_attempt(flow, step.id, o, r),
            on_shadow=lambda system, r: observer.shadow_result(flow, step.id, system, r),
            backbone=self.executor.backbone,
            fingerprint=self._fingerprint(step.id),
        )
        tracing = self.executor.tracing
        if tracing is None:
            return await HANDLERS[step.kind](step, env)
        with tracing.step(self.run_record, step) as span:
            env.traceparent = tracing.current_traceparent()
            outcome = await HANDLERS[step.kind](step, env)
            stop = outcome.stop
            span.outcome(outcome.record.state,
                         None if stop is None else Reason(stop.code, step.id, stop.message))
            return outcome

    def _decide(
        self, outcomes: list[tuple[CompiledStep, StepOutcome]], still_running: bool
    ) -> Checkpoint | None:
        """Note stops and outputs; when the run's state is now known, the final checkpoint."""
        for step, outcome in outcomes:
            if outcome.stop is not None:
                self.stops.append((step.id, outcome.stop))
            self.emitted = self.emitted or bool(outcome.emitted)
        if still_running:
            return None
        if self._stopped() or not self.todo:
            return self._final()
        return None

    async def _checkpoint(
        self, outcomes: list[tuple[CompiledStep, StepOutcome]], final: Checkpoint | None
    ) -> None:
        """Each step's record (+ its emitted events); the last one carries the run's new state."""
        labels = None if self.labelling is None else relabel(
            self.labelling, self.flow.name, self.context["data"], self.outputs,
            [o.record for _, o in outcomes])
        checkpoints = [
            Checkpoint(self.run_record.id, o.record, emitted=o.emitted, labels=labels)
            for _, o in outcomes
        ]
        if final is not None:
            last = checkpoints[-1]
            checkpoints[-1] = Checkpoint(last.run_id, last.step, final.run_state,
                                         final.next_attempt_at, final.reason, last.emitted,
                                         labels=labels)
        if len(checkpoints) == 1:  # the common case: no gather (it wraps each write in a task)
            cancels = [await self.store.checkpoint(checkpoints[0])]
        else:  # the run's new state only after its steps' records (on PostgreSQL each its own
            # transaction): a resume must never see the run parked without all of them
            head = checkpoints if final is None else checkpoints[:-1]
            cancels = list(await asyncio.gather(*(self.store.checkpoint(cp) for cp in head)))
            if final is not None:
                cancels.append(await self.store.checkpoint(checkpoints[-1]))
        self.cancel = next((c for c in cancels if c is not None), self.cancel)
        for _, outcome in outcomes:
            if outcome.record.state in DONE:
                self.outputs[outcome.record.step_id] = outcome.record.output
            self.records[outcome.record.step_id] = outcome.record

    def _final(self) -> Checkpoint:
        """The run's state once nothing runs any more."""
        run_id = self.run_record.id
        if self.cancel is not None:  # acknowledge the operator's cancel: compensation follows
            return Checkpoint(run_id, None, "running", reason=self.cancel)
        severe = [(sid, s) for sid, s in self.stops if s.action != "wait"]
        if severe:
            sid, stop = next(((i, s) for i, s in severe if s.action != "dead-letter"), severe[0])
            reason = Reason(stop.code, sid, stop.message)
            if stop.action == "fail" and self.flow.on_failure == "compensate":
                return Checkpoint(run_id, None, "running", reason=reason)  # compensation marker
            state = "dead-lettered" if stop.action == "dead-letter" else "parked"
            return Checkpoint(run_id, None, state, reason=reason)
        if self.stops:
            due = min(s.retry_at or self.clock() for _, s in self.stops)
            held = next((Reason(s.code, i, s.message) for i, s in self.stops if s.code in HELD),
                        None)  # fmt: skip
            return Checkpoint(run_id, None, "waiting", next_attempt_at=due, reason=held)
        if self.todo:  # the runtime is stopping: hand the run back for another worker
            return Checkpoint(run_id, None, "pending")
        return Checkpoint(run_id, None, "succeeded")

    async def _finish(self, final: Checkpoint) -> Finished:
        """After the final checkpoint committed: compensate, or report the new state."""
        if self.cancel is not None:  # the store kept the run `running` with the cancel request
            return await self.compensate(self.cancel)
        state = final.run_state or "succeeded"
        if state == "running":
            assert final.reason is not None
            return await self.compensate(final.reason)
        if state not in ("pending", "waiting"):
            self.executor.observer.run_state(self.flow.name, state)
        return Finished(state, self.emitted, final.next_attempt_at, final.reason)

    # compensation --------------------------------------------------------------------------
    async def compensate(self, reason: Reason) -> Finished:
        """Undo completed steps in reverse completion order; see the module docstring."""
        self.outputs.update(
            (sid, r.output) for sid, r in self.records.items() if r.state == "compensated"
        )
        done = [
            r
            for r in self.records.values()
            if r.state == "succeeded" and self.flow.step(r.step_id).compensate is not None
        ]
        done.sort(key=lambda r: (r.updated_at, self.flow.step(r.step_id).index), reverse=True)
        for record in done:
            stopped = await self._compensate_step(self.flow.step(record.step_id), record, reason)
            if stopped is not None:
                return stopped
        state = "cancelled" if reason.code == CANCELLED else "compensated"
        return await self._end_compensation(state, reason)

    async def _end_compensation(
        self, state: str, reason: Reason, step: StepRecord | None = None
    ) -> Finished:
        run_id = self.run_record.id
        writes = [self.store.checkpoint(Checkpoint(run_id, step, state, reason=reason))]
        if state == "cancelled":  # queued first: committed no later than the state
            undone = [r for r in self.records.values() if r.state == "compensated"]
            compensated = [r.step_id for r in sorted(undone, key=lambda r: r.updated_at)]
            detail = {"reason": reason.message, "compensated": compensated}
            writes.insert(0, self.store.audit("runtime", "cancelled", run_id, detail))
        await asyncio.gather(*writes)
        self.executor.observer.run_state(self.flow.name, state)
        return Finished(state, self.emitted, reason=reason)

    async def _compensate_step(
        self, step: CompiledStep, record: StepRecord, reason: Reason
    ) -> Finished | None:
        """One attempt at undoing `step`: None once undone, else how the run stops (waiting
        for the next attempt, or failed). A failed call is decided by the step's RetryPolicy, as
        any call is: `succeed` counts as undone, `retry` waits in the store, anything else (or no
        policy) ends the run COMPENSATION_FAILED."""
        assert step.compensate is not None and self.calls is not None
        request = build_request(
            step.compensate, self.context, self.run_record, f"{step.id}#compensate"
        )
        described = describe(request)
        policy = step.retry.policy if step.retry is not None else None
        timeout = policy.timeout if policy and policy.timeout else request.system.timeout
        started = self.clock()
        fingerprint = self._fingerprint(f"{step.id}#compensate")
        mark = None if fingerprint is None else fingerprint(request)
        try:
            response = await self.calls.send(request, timeout=timeout,
                                             before=None if mark is None else mark.before)
            status: int | None = response.status
            body = response.body
            if mark is not None:
                await mark.answered(status, body)
        except CallHeld as held:  # its System is paused or its circuit open: no attempt spent
            return await self._wait_to_compensate(record, reason, held.until)
        except CallError as error:
            if mark is not None:
                await mark.answered(None, None)
            decision = self._compensation_decision(step, record, error, started)
            status, body = error.status, error.body
            if decision.action != "succeed":
                failed = Attempt(
                    len(record.attempts) + 1,
                    started,
                    self.clock(),
                    f"{COMPENSATE}{error.kind}",
                    status,
                    error.message,
                    described,
                    {"status": status, "body": body},
                    self.run_record.history_generation,
                )
                # updated_at stays the step's completion time: it orders the compensation
                tried = dataclasses.replace(record, attempts=[*record.attempts, failed])
                if decision.action == "retry":
                    at = self.clock() + decision.delay
                    return await self._wait_to_compensate(tried, reason, at)
                message = f"compensating step '{step.id}' failed: {error.message}"
                failure = Reason(
                    "COMPENSATION_FAILED", step.id, f"{message}; downstream state is partial"
                )
                return await self._end_compensation("failed", failure, tried)
        attempt = Attempt(
            len(record.attempts) + 1,
            started,
            self.clock(),
            "compensated",
            status,
            None,
            described,
            {"status": status, "body": body},
            self.run_record.history_generation,
        )
        compensated = dataclasses.replace(
            record,
            state="compensated",
            attempts=[*record.attempts, attempt],
            updated_at=self.clock(),
        )
        await self.store.checkpoint(Checkpoint(self.run_record.id, compensated))
        self.records[step.id] = compensated
        return None

    def _compensation_decision(
        self, step: CompiledStep, record: StepRecord, error: CallError, started: float
    ) -> Decision:
        if step.retry is None:
            return Decision("fail", reason="no retry policy")
        earlier = [a.started_at for a in record.attempts if a.outcome.startswith(COMPENSATE)]
        return decide(
            step.retry.policy,
            error,
            attempt=len(earlier) + 1,
            first_attempt_at=earlier[0] if earlier else started,
            now=self.clock(),
            rng=self.executor.rng,
        )

    async def _wait_to_compensate(self, tried: StepRecord, reason: Reason, at: float) -> Finished:
        """Checkpoint the failed attempt; the run waits, still carrying the compensation's reason
        (a claim resumes compensation). A cancel request that arrived meanwhile becomes that
        reason, so the run ends `cancelled`."""
        run_id = self.run_record.id
        cancel = await self.store.checkpoint(Checkpoint(run_id, tried, "waiting", at, reason))
        if cancel is not None and reason.code != CANCELLED:
            await self.store.checkpoint(Checkpoint(run_id, None, "waiting", at, cancel))
        return Finished("waiting", self.emitted, at, reason)
