"""Webhook ingest at each flow's `trigger.webhook.path`.

Order of checks, cheapest and least revealing first: admission (503), Content-Type (415), the body
read once as raw bytes with the size limit enforced while reading (413), the signature over those
exact bytes (401), JSON (400). Then the runtime stores the event and its run durably and only
then the answer goes out: 202 `{run_id, correlation_id, status}` with status accepted, duplicate
(naming the first run) or filtered.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from starlette.types import Receive, Send

from engine.errors import SynclineError
from engine.runtime import EventMeta
from engine.server import logevents
from engine.server.http import Problem, send_json
from engine.server.ingest import (
    admitted,
    check_length,
    correlation,
    new_correlation_id,
    parse_json,
    read_raw,
    require_json,
    runtime_problem,
)
from engine.server.signatures import SignatureError, Verified
from engine.server.state import ServerState, WebhookRoute


async def handle_webhook(
    state: ServerState,
    path: str,
    route: WebhookRoute,
    headers: dict[str, str],
    receive: Receive,
    send: Send,
) -> int:
    """Verify, parse and durably accept one delivery and answer 202 (returned); raises
    `Problem` for every refusal."""
    started = time.perf_counter()
    require_json(headers)        # what the headers can refuse costs no admission slot
    check_length(state, headers)
    try:
        route.verifier.require_header(headers)
    except SignatureError as exc:
        raise Problem(401, exc.reason, exc.message) from None
    with admitted(state):
        body = await read_raw(state, headers, receive)
        verified = verify(route, headers, body)
        data = parse_json(state, body)
        meta = webhook_meta(path, route, headers, verified, data)
        flow = state.routes().webhooks.get(path)  # the runtime's plan may have changed meanwhile
        if flow is None:
            raise Problem(404, "not_found", f"no webhook at {path}")
        try:
            acceptance = await state.runtime.ingest(flow.flow, data, meta)
        except SynclineError as exc:
            raise runtime_problem(exc) from None
    await send_json(
        send,
        202,
        {
            "run_id": acceptance.run_id,
            "correlation_id": acceptance.correlation_id,
            "status": acceptance.status,
        },
    )
    state.metrics.ingest("webhook", time.perf_counter() - started)
    state.metrics.delivery(path, acceptance.status)
    logevents.delivery("webhook", path, flow.flow.name, acceptance)
    tracing = state.runtime.tracing
    if tracing is not None:
        tracing.annotate({"syncline.flow": flow.flow.name, "syncline.run.id": acceptance.run_id,
                          "syncline.delivery.status": acceptance.status,
                          "syncline.correlation_id": acceptance.correlation_id})  # fmt: skip
    return 202


def verify(route: WebhookRoute, headers: dict[str, str], body: bytes) -> Verified:
    try:
        return route.verifier.verify_lowered(headers, body)  # ASGI header names are lower-case
    except SignatureError as exc:
        raise Problem(401, exc.reason, exc.message) from None


def webhook_meta(
    path: str, route: WebhookRoute, headers: Mapping[str, str], verified: Verified, data: Any
) -> EventMeta:
    """What the delivery tells about itself. The delivery id is the scheme's header; Stripe
    carries none, so its event id (`evt_...`, inside the signed body) stands in."""
    delivery = verified.delivery_id
    if delivery is None and isinstance(data, dict) and isinstance(data.get("id"), str):
        delivery = data["id"]
    correlation_id, traceparent = correlation(headers)
    return EventMeta(
        id=delivery,
        type=f"webhook:{path}",
        source=route.source,
        correlation_id=correlation_id or new_correlation_id(),
        traceparent=traceparent,
    )
