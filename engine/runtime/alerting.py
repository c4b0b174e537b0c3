"""Alerts: every `every` seconds, find what each Alert of the active plan fires on
(engine/runtime/conditions.py), create one notification per subject and repeat interval in the
store, and deliver the due notifications through the notify call.

    alerting = Alerting(store, lambda: plan, calls_for, clock=clock.now)
    await alerting.evaluate()     # notifications created (each claimed once among replicas)
    await alerting.deliver()      # notifications sent (or retried, or failed for good)

Durable: a notification is created (with its rendered request) in the same transaction that
records its subject as notified (engine/store/alerts.py), so a crash after that sends it on
restart and never twice; delivery is leased, so a process that died mid-send is taken over after
LEASE seconds. The request is rendered once, when the notification is created: every retry sends
the same message. Retries follow the notify System's RetryPolicy (the project default without
one; a single attempt without either); a call held back because the System is paused or its
circuit is open waits without spending an attempt. A subject must fire for the condition's `for`
before it is notified (the time it started firing is kept in the store, so a restart does not
reset it); parked runs count once they have been parked that long.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from engine.compiler.alerts import CompiledAlert, CompiledNotify
from engine.compiler.compiled import Value
from engine.compiler.plan import Plan
from engine.errors import CallError, CallHeld, SynclineError
from engine.runtime.calls import Calls, OutboundRequest
from engine.runtime.conditions import Sources, find_firing
from engine.runtime.retry import decide
from engine.runtime.schedules import keep_running
from engine.runtime.wire import fill_path
from engine.store.alerts import AlertLog, Notification
from engine.store.base import Store

log = logging.getLogger("syncline.alerts")
EVERY = 10.0     # seconds between evaluations
LEASE = 60.0     # seconds a delivery is reserved for the process that took it
BATCH = 50       # notifications delivered per pass
IDLE = 1.0       # seconds between looks at a plan without Alerts
_RNG = random.Random()  # backoff jitter: it must vary, not be secret


class Alerting:
    """Evaluates the active plan's Alerts and delivers their notifications (see the module
    docstring). `calls(plan)` gives the plan's outbound clients (with the runtime's gates)."""

    def __init__(
        self,
        store: Store,
        plan: Callable[[], Plan],
        calls: Callable[[Plan], Calls],
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        every: float = EVERY,
        lease: float = LEASE,
    ) -> None:
        self.log = AlertLog(store)
        self._store, self._plan, self._calls = store, plan, calls
        self._clock, self._sleep = clock, sleep
        self.every, self.lease = every, lease

    async def run(self) -> None:
        """Evaluate and deliver every `every` seconds until cancelled (failures are logged and
        tried again next time)."""
        await keep_running(self.tick, lambda: self.every, self._pause, "evaluating alerts")

    async def _pause(self, seconds: float) -> None:
        if self._plan().alerts:
            await self._sleep(seconds)
        else:  # nothing to evaluate: look for a reload adding Alerts in real time, without
            await asyncio.sleep(IDLE)  # moving an injected clock (tests jump it on each sleep)

    async def tick(self) -> None:
        """One evaluation and delivery pass (nothing at all for a plan without Alerts)."""
        plan = self._plan()
        if plan.alerts:
            await self.evaluate(plan)
            await self.deliver(plan)

    # evaluating ----------------------------------------------------------------------------
    async def evaluate(self, plan: Plan | None = None) -> list[Notification]:
        """Notifications this pass created (others may have been created by other replicas)."""
        plan = plan or self._plan()
        sources = Sources(self._store, plan, self._clock())
        created = []
        for alert in plan.alerts.values():
            try:
                created += await self._evaluate(alert, sources)
            except SynclineError:  # one alert's trouble (the store, an expression) spares others
                log.exception("evaluating alert %s failed; trying again next time", alert.name)
        return created

    async def _evaluate(self, alert: CompiledAlert, sources: Sources) -> list[Notification]:
        firing = await find_firing(alert, sources)
        known = await self.log.subjects(alert.name)
        now = sources.now
        # sorted: replicas lock the rows in one order (no deadlock on PostgreSQL)
        started = sorted(s for s in firing if s not in known or known[s].firing_since is None)
        stopped = sorted(s for s, k in known.items()
                         if k.firing_since is not None and s not in firing)
        await self.log.mark(alert.name, started, stopped, now, alert.repeat)
        hold = 0.0 if alert.kind == "parked" else alert.hold  # parked: the runs' own age
        created = []
        for subject, context in firing.items():
            state = known.get(subject)
            since = state.firing_since if state and state.firing_since is not None else now
            if now - since < hold:
                continue
            if state and state.last_sent is not None and now - state.last_sent < alert.repeat:
                continue
            notification = self._notification(alert, subject, context, now)
            if notification is not None and await self.log.claim(notification, alert.repeat):
                log.warning("alert %s fired for %s: %s", alert.name, subject,
                            notification.summary, extra={"event": "alert.fired"})
                created.append(notification)
        return created

    def _notification(self, alert: CompiledAlert, subject: str, context: dict[str, Any],
                      now: float) -> Notification | None:
        try:
            request = render(alert.notify, context)
        except SynclineError as exc:
            log.error("alert %s: rendering its notification for %s failed: %s", alert.name,
                      subject, exc, extra={"event": "alert.render-failed"})
            return None
        ident = hashlib.sha256(json.dumps([alert.name, subject, now]).encode()).hexdigest()[:32]
        return Notification(ident, alert.name, subject, now, "pending", request,
                            summary(alert, context), 0, now)

    # delivering ----------------------------------------------------------------------------
    async def deliver(self, plan: Plan | None = None) -> int:
        """Send the due notifications this process can lease; how many were sent."""
        plan = plan or self._plan()
        now = self._clock()
        sent = 0
        for notification in await self.log.due(now, BATCH):
            if await self.log.lease(notification.id, now + self.lease, now):
                sent += await self._deliver(plan, notification)
        return sent

    async def _deliver(self, plan: Plan, n: Notification) -> int:
        alert = plan.alerts.get(n.alert)
        now = self._clock()
        if alert is None:
            await self.log.finish(n.id, "failed", now=now, attempted=False,
                                  error=f"alert '{n.alert}' is no longer defined")
            return 0
        notify = alert.notify
        try:
            await self._calls(plan).send(_request(notify, n), timeout=_timeout(notify))
        except CallHeld as held:  # look again soon: a resume wakes no notification
            await self.log.finish(n.id, "pending", now=now, attempted=False,
                                  next_at=min(held.until, now + self.every), error=held.message)
            return 0
        except CallError as error:
            await self._failed(notify, n, error)
            return 0
        await self.log.finish(n.id, "sent", now=self._clock(), attempted=True)
        await self._store.audit("syncline", "alert", None, {
            "alert": n.alert, "subject": n.subject, "notification": n.id, "state": "sent",
            "attempts": n.attempts + 1})
        log.info("alert %s notified for %s (%s)", n.alert, n.subject, notify.system.name,
                 extra={"event": "alert.sent"})
        return 1

    async def _failed(self, notify: CompiledNotify, n: Notification, error: CallError) -> None:
        now = self._clock()
        policy = notify.retry.policy if notify.retry is not None else None
        decision = None if policy is None else decide(
            policy, error, attempt=n.attempts + 1, first_attempt_at=n.created_at, now=now,
            rng=_RNG)
        if decision is not None and decision.action == "retry":
            await self.log.finish(n.id, "pending", now=now, attempted=True,
                                  next_at=now + decision.delay, error=str(error))
            return
        await self.log.finish(n.id, "failed", now=now, attempted=True, error=str(error))
        await self._store.audit("syncline", "alert", None, {
            "alert": n.alert, "subject": n.subject, "notification": n.id, "state": "failed",
            "attempts": n.attempts + 1, "error": str(error)})
        log.error("alert %s: notifying for %s failed for good: %s", n.alert, n.subject, error,
                  extra={"event": "alert.failed"})


def render(notify: CompiledNotify, context: Mapping[str, Any]) -> dict[str, Any]:
    """The notify call's values evaluated over `context` (JSON: it is stored)."""

    def values(pairs: tuple[tuple[str, Value], ...]) -> dict[str, Any]:
        return {key: value.evaluate(context) for key, value in pairs}

    request = {
        "params": values(notify.params), "query": values(notify.query),
        "headers": {k: str(v) for k, v in values(notify.headers).items() if v is not None},
        "body": notify.body.evaluate(context) if notify.body is not None else None,
    }
    return dict(json.loads(json.dumps(request, default=str)))


def summary(alert: CompiledAlert, context: Mapping[str, Any]) -> str:
    """A line for people: what fired, about what."""
    if alert.kind == "parked":
        count, subject = context["count"], context["subject"]
        about = "" if subject == alert.name else f" ({subject})"
        return f"{count} run{'s' if count != 1 else ''} parked{about}"
    if alert.kind == "metric":
        return f"{alert.metric} is {context['metric']['value']}"
    if alert.kind == "objective":
        ratio = context["metric"]["ratio"]
        return f"{alert.metric}: {ratio:.0%} meet the objective" if ratio is not None else ""
    return f"the circuit of {context['subject']} is {context['system']['state']}"


def _request(notify: CompiledNotify, n: Notification) -> OutboundRequest:
    request = n.request
    return OutboundRequest(
        notify.system, notify.operation, notify.method,
        fill_path(notify.path, request.get("params") or {}), request.get("query") or {},
        request.get("headers") or {}, request.get("body"), f"alert-{n.id}",
        f"alert-{n.id}", None, notify.is_write,
    )


def _timeout(notify: CompiledNotify) -> float:
    policy = notify.retry.policy if notify.retry is not None else None
    return policy.timeout if policy is not None and policy.timeout else notify.system.timeout
