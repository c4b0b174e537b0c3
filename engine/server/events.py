"""POST /events: CloudEvents 1.0 over HTTP, binary, structured and batch mode.

Each event starts one run per active flow whose `trigger.event` equals its `type`. The answer,
sent once everything is committed, is 202 with, per event, the runs it started:

    {"id": ..., "type": ..., "runs": [{run_id, correlation_id, status}]}     single event
    {"events": [ ...as above... ]}                                           batch mode

Senders authenticate with SYNCLINE_INGEST_TOKEN (or the admin token), so they get no operator
rights; without any token configured, /events answers only on loopback.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from typing import Any

from starlette.types import Receive, Scope, Send

from engine.errors import SynclineError
from engine.runtime import EventMeta
from engine.server import logevents
from engine.server.auth import authenticate
from engine.server.cloudevents import CloudEvent, EventFormatError, event_mode, parse_http
from engine.server.http import Problem, send_json
from engine.server.ingest import (
    admitted,
    check_length,
    correlation,
    read_raw,
    runtime_problem,
)
from engine.server.state import ServerState
from engine.store.base import EventRecord

_STATUS = {"unsupported_media_type": 415}


async def handle_events(
    state: ServerState, scope: Scope, headers: Mapping[str, str], receive: Receive, send: Send
) -> None:
    """Parse the CloudEvents of one request and ingest each; 202 once all are stored."""
    started = time.perf_counter()
    config = state.config
    authenticate(state.tokens.table, scope, headers, "ingest", "/events")
    try:  # what the headers can refuse costs no admission slot
        event_mode(headers)
    except EventFormatError as exc:
        raise Problem(_STATUS.get(exc.code, 400), exc.code, exc.message) from None
    check_length(state, headers)
    with admitted(state):
        body = await read_raw(state, headers, receive)
        try:
            events = parse_http(headers, body, max_depth=config.max_depth)
        except EventFormatError as exc:
            raise Problem(_STATUS.get(exc.code, 400), exc.code, exc.message) from None
        correlation_id, traceparent = correlation(headers)
        answers = []
        for event in events:
            meta = event_meta(event, correlation_id, traceparent)
            try:
                accepted = await state.runtime.ingest_event(record(event), meta)
            except SynclineError as exc:
                raise runtime_problem(exc) from None
            answers.append(describe(event, accepted))
            for acceptance in accepted:
                logevents.delivery("events", "/events", None, acceptance, event.type)
    batch = media(headers).endswith("batch+json")
    await send_json(send, 202, {"events": answers} if batch else answers[0])
    state.metrics.ingest("event", time.perf_counter() - started)
    for answer in answers:
        for run in answer["runs"] or [{"status": "no_subscriber"}]:
            state.metrics.delivery("/events", run["status"])


def media(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def record(event: CloudEvent) -> EventRecord:
    """The event as the store keeps it; binary data is kept base64-encoded."""
    attributes: dict[str, Any] = dict(event.extensions)
    for name in ("datacontenttype", "dataschema"):
        if getattr(event, name) is not None:
            attributes[name] = getattr(event, name)
    data = event.data
    if isinstance(data, bytes):
        data = base64.b64encode(data).decode("ascii")
        attributes["data_base64"] = True
    return EventRecord(
        id=event.id,
        type=event.type,
        source=event.source,
        data=data,
        subject=event.subject,
        time=event.time,
        attributes=attributes,
    )


def event_meta(event: CloudEvent, correlation_id: str | None, traceparent: str | None) -> EventMeta:
    """The event's own `traceparent` extension (distributed tracing) wins over the header's."""
    own = event.extensions.get("traceparent")
    if isinstance(own, str) and own:
        own_id, own_parent = correlation({"traceparent": own})
        correlation_id, traceparent = own_id or correlation_id, own_parent or traceparent
    return EventMeta(
        id=event.id,
        type=event.type,
        source=event.source,
        subject=event.subject,
        time=event.time,
        correlation_id=correlation_id,
        traceparent=traceparent,
        attributes=dict(event.extensions),
    )


def describe(event: CloudEvent, accepted: list[Any]) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "runs": [
            {"run_id": a.run_id, "correlation_id": a.correlation_id, "status": a.status}
            for a in accepted
        ],
    }
