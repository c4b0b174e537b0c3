"""`stream` triggers: a durable JetStream pull consumer per flow (`syncline-<flow>`), filtered by
the trigger's subject, following hot reloads (see engine/runtime/backbone.py for the guarantees).

A message is acknowledged only after its event is durably accepted; a crash in between makes NATS
deliver it again after `ackWait`, and the flow's idempotency key (by default the CloudEvent id)
makes it one run. A message that is not a structured-mode CloudEvent is terminated (never
redelivered), logged and counted; one the store could not take is redelivered. A backbone that
is down is retried with backoff and logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress
from typing import Any

import nats
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from engine.compiler.compiled import CompiledFlow
from engine.compiler.plan import Plan
from engine.runtime.backbone import Backbone
from engine.runtime.ingest import EventMeta
from engine.store.base import Acceptance

log = logging.getLogger("syncline.streams")

FETCH_BATCH = 64
FETCH_WAIT = 1.0          # seconds a fetch waits for messages
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)   # between attempts to reach a backbone that is down
REQUIRED = ("specversion", "id", "source", "type")

Ingest = Callable[[CompiledFlow, Any, EventMeta], Awaitable[Acceptance]]
Report = Callable[[str, str], None]   # (flow, outcome): accepted, duplicate, filtered, rejected


class Streams:
    """One consumer task per `stream` flow of the active plan, kept in step with hot reloads."""

    def __init__(self, backbone: Backbone, plan: Callable[[], Plan], ingest: Ingest,
                 report: Report | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.backbone = backbone
        self._plan = plan
        self._ingest = ingest
        self._report = report or (lambda flow, outcome: None)
        self._sleep = sleep
        self._tasks: dict[str, tuple[CompiledFlow, asyncio.Task[None]]] = {}

    async def run(self) -> None:
        try:
            while True:
                self._follow(f for f in self._plan().flows.values() if f.trigger.kind == "stream")
                await self._sleep(1.0)
        finally:
            for _, task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*(t for _, t in self._tasks.values()), return_exceptions=True)
            self._tasks.clear()

    def _follow(self, flows: Iterable[CompiledFlow]) -> None:
        wanted = {flow.name: flow for flow in flows}
        for name, (flow, task) in list(self._tasks.items()):
            if wanted.get(name) != flow or task.done():
                task.cancel()
                del self._tasks[name]
        for name, flow in wanted.items():
            if name not in self._tasks:
                self._tasks[name] = (flow, asyncio.create_task(self._consume(flow)))

    async def _consume(self, flow: CompiledFlow) -> None:
        stream = flow.trigger.stream
        assert stream is not None and stream.system.nats is not None
        failures = 0
        while True:
            try:
                js = await self.backbone.jetstream(stream.system, stream.subject)
                subscription = await js.pull_subscribe(
                    stream.subject, durable=durable_name(flow.name),
                    stream=stream.system.nats.stream,
                    config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT,
                                          deliver_policy=DeliverPolicy.ALL,
                                          ack_wait=stream.ack_wait, max_ack_pending=1000),
                )
                failures = 0
                try:
                    while True:
                        try:
                            messages = await subscription.fetch(FETCH_BATCH, timeout=FETCH_WAIT)
                        except nats.errors.TimeoutError:
                            continue
                        for message in messages:
                            await self.handle(flow, message)
                finally:  # a subscription left open holds the connection's drain (30 s) at close
                    with suppress(Exception):
                        await asyncio.shield(subscription.unsubscribe())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a backbone that is down: retry, loudly
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                log.warning("stream trigger of flow %s: %s: %s; retrying in %g s", flow.name,
                            type(exc).__name__, exc, delay)
                await self._sleep(delay)

    async def handle(self, flow: CompiledFlow, message: Msg) -> None:
        """Accept one message as an event of `flow`, then acknowledge it."""
        event, problem = parse_event(message.data)
        if event is None:
            log.warning("stream trigger of flow %s: message %s on %s terminated: %s", flow.name,
                        _sequence(message), message.subject, problem)
            await message.term()
            self._report(flow.name, "rejected")
            return
        meta = EventMeta(
            id=str(event["id"]), type=str(event["type"]), source=str(event["source"]),
            subject=_text(event.get("subject")), time=_text(event.get("time")),
            correlation_id=_text(event.get("correlationid")),
            traceparent=_text(event.get("traceparent")),
            attributes={k: v for k, v in event.items()
                        if k not in (*REQUIRED, "data", "subject", "time")},
        )
        try:
            acceptance = await self._ingest(flow, event.get("data"), meta)
        except Exception as exc:  # noqa: BLE001 - not stored: NATS delivers it again
            log.warning("stream trigger of flow %s: message %s not accepted (%s); redelivered "
                        "later", flow.name, _sequence(message), exc)
            await message.nak(delay=5.0)
            return
        await self.acknowledge(message)
        self._report(flow.name, acceptance.status)

    async def acknowledge(self, message: Msg) -> None:
        """Acknowledge a message whose event is stored (tests replace it to lose an ack)."""
        await message.ack()


def durable_name(flow: str) -> str:
    return "syncline-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in flow)


def parse_event(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """A structured-mode CloudEvent (JSON), or None and why it is not one."""
    try:
        event = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        return None, f"not JSON ({exc})"
    if not isinstance(event, dict):
        return None, "not a JSON object"
    missing = [name for name in REQUIRED if not isinstance(event.get(name), str) or not event[name]]
    if missing:
        return None, f"not a CloudEvent: no {', '.join(missing)}"
    return event, ""


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _sequence(message: Msg) -> str:
    try:
        return str(message.metadata.sequence.stream)
    except Exception:  # noqa: BLE001 - a core NATS message has no metadata
        return "?"
