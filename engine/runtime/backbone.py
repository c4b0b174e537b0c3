"""The event backbone: NATS JetStream, through the `nats-py` client (connections, publishing;
engine/runtime/streams.py consumes).

- `publish` step: a structured-mode CloudEvent (JSON) onto a subject, with `Nats-Msg-Id` set to
  the event id. The id is deterministic (run, step, generation), so a publish retried after a
  crash or a lost acknowledgement is stored once by JetStream's de-duplication. A backbone that
  cannot be reached fails the attempt like a network error of a call: the step's RetryPolicy
  decides (the run waits and tries again; it never drops the event).
- `stream` trigger: a durable pull consumer per flow (`syncline-<flow>`) filtered by the
  trigger's subject. A message is acknowledged only after its event is durably accepted; a crash
  in between makes NATS deliver it again after `ackWait`, and the flow's idempotency key (by
  default the CloudEvent id) makes it one run. A message that is not a CloudEvent is terminated
  (never redelivered), logged and counted. A backbone that is down is retried with backoff and
  logged: nothing is silently dropped.

The stream a System names is created on first use, capturing the subjects the flows publish to
and stream from (a subject the stream already captures is left as it is).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from engine.compiler.compiled import CompiledStep, CompiledSystem, PublishAction
from engine.errors import CallError

log = logging.getLogger("syncline.backbone")

DRAIN_TIMEOUT = 5.0  # seconds a closing connection may take to flush what was published
EVENT_NAMESPACE = uuid.UUID("0b8f3a52-2f0e-4d8e-9a7e-6c1b7f3d2e41")


class Backbone:
    """The runtime's NATS connections, one per backbone URL, opened on first use."""

    def __init__(self) -> None:
        self._clients: dict[str, Client] = {}
        self._lock = asyncio.Lock()
        self._captured: set[tuple[str, str]] = set()  # (stream, subject) known to be captured

    async def jetstream(self, system: CompiledSystem, subject: str) -> JetStreamContext:
        """JetStream of `system`'s backbone, its stream capturing `subject`."""
        nats_config = system.nats
        assert nats_config is not None
        async with self._lock:
            client = self._clients.get(nats_config.url)
            if client is None or client.is_closed:
                # the client retries a first connection as long as a lost one: bound it here
                client = await asyncio.wait_for(nats.connect(
                    servers=nats_config.url.split(","),
                    connect_timeout=nats_config.connect_timeout,
                    max_reconnect_attempts=-1, allow_reconnect=True,
                    error_cb=_log_error, name="syncline", drain_timeout=DRAIN_TIMEOUT,
                ), nats_config.connect_timeout * len(nats_config.url.split(",")) + 1.0)
                self._clients[nats_config.url] = client
        js = client.jetstream()
        if (nats_config.stream, subject) not in self._captured:
            # one capture at a time: two first publishes to new subjects would each read the
            # stream's subjects and write back their own, and the later write drops the other
            async with self._lock:
                if (nats_config.stream, subject) not in self._captured:
                    await _capture(js, nats_config.stream, subject)
                    self._captured.add((nats_config.stream, subject))
        return js

    def forget(self, system: CompiledSystem, subject: str) -> None:
        """No stream answered a publish to `subject`: capture it again on the next attempt (the
        stream was deleted or edited since)."""
        if system.nats is not None:
            self._captured.discard((system.nats.stream, subject))

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            if not client.is_closed:
                await client.drain()


async def _log_error(exc: Exception) -> None:
    log.warning("NATS: %s", exc)


async def _capture(js: JetStreamContext, stream: str, subject: str) -> None:
    """Make `stream` exist and capture `subject` (unless one of its subjects already does)."""
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        await js.add_stream(name=stream, subjects=[subject])
        return
    subjects = list(info.config.subjects or [])
    if not any(matches(pattern, subject) for pattern in subjects):
        info.config.subjects = [*subjects, subject]
        await js.update_stream(info.config)


def matches(pattern: str, subject: str) -> bool:
    """Whether NATS subject `pattern` (`*` one token, a final `>` the rest) covers `subject`."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


# -- publish -------------------------------------------------------------------------------------
def event_id(run_id: str, step_id: str, generation: int) -> str:
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{run_id}/{step_id}/{generation}"))


def cloud_event(action: PublishAction, ident: str, source: str, data: Any, time: str,
                extensions: dict[str, Any]) -> bytes:
    """The structured-mode CloudEvent a publish step sends."""
    event = {"specversion": "1.0", "id": ident, "source": source, "type": action.type,
             "time": time, "datacontenttype": "application/json", "data": data, **extensions}
    return json.dumps(event, separators=(",", ":"), default=str).encode()


async def publish(backbone: Backbone, step: CompiledStep, payload: bytes, ident: str,
                  timeout: float) -> dict[str, Any]:
    """Send one publish; its acknowledgement as the step's output. Raises `CallError`."""
    action = step.action
    assert isinstance(action, PublishAction)
    name = action.system.name
    try:
        js = await backbone.jetstream(action.system, action.subject)
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        raise CallError(f"{name}: cannot reach the backbone to publish to {action.subject}: "
                        f"{exc or type(exc).__name__}", kind="network", retryable=True) from None
    try:
        ack = await js.publish(action.subject, payload, timeout=timeout,
                               headers={"Nats-Msg-Id": ident})
    except (TimeoutError, nats.errors.TimeoutError):
        raise CallError(f"{name}: no acknowledgement from JetStream within {timeout:g} s",
                        kind="timeout", retryable=True) from None
    except nats.errors.NoRespondersError:
        backbone.forget(action.system, action.subject)
        raise CallError(f"{name}: no stream captures {action.subject} (stream "
                        f"{action.system.nats.stream if action.system.nats else '?'}); it is "
                        "captured again on the next attempt", kind="network",
                        retryable=True) from None
    except (OSError, nats.errors.Error) as exc:
        raise CallError(f"{name}: cannot publish to {action.subject}: "
                        f"{exc or type(exc).__name__}", kind="network", retryable=True) from None
    return {"id": ident, "subject": action.subject, "stream": ack.stream, "seq": ack.seq,
            "duplicate": bool(ack.duplicate)}
