"""Synchronous process APIs at each `trigger.api.path`.

The request is accepted durably like any event, executed at once, and answered when the run
reaches a terminal or parked state, within the flow's timeout (capped by the server's):

    200  the flow's `output`, as the body             (run succeeded)
    422  {error: {code, message, errors: [...]}}      (validation or mapping rejected the data,
                                                        or the run parked)
    504  {error: {code: timeout, ...}}                (still running; the run continues)
    502  {error: {code: run_failed, ...}}             (a downstream call failed for good)

Every answer carries `X-Syncline-Run-Id`. Like /events, APIs take the
ingest (or admin) bearer token, and answer only on loopback when no token is configured.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from starlette.types import Receive, Scope, Send

from engine.compiler.compiled import CompiledFlow
from engine.errors import SynclineError
from engine.runtime import EventMeta
from engine.server.auth import authenticate
from engine.server.http import Problem, send_json
from engine.server.ingest import (
    admitted,
    check_length,
    correlation,
    parse_json,
    read_raw,
    require_json,
    runtime_problem,
)
from engine.server.state import ServerState

DEFAULT_TIMEOUT = 10.0


async def handle_api(
    state: ServerState,
    path: str,
    scope: Scope,
    headers: Mapping[str, str],
    receive: Receive,
    send: Send,
) -> None:
    """Run the API flow at `path` for this request and answer with its outcome."""
    started = time.perf_counter()
    authenticate(state.tokens.table, scope, headers, "ingest", "this API")
    require_json(headers)  # what the headers can refuse costs no admission slot
    check_length(state, headers)
    with admitted(state):
        data = parse_json(state, await read_raw(state, headers, receive))
        flow = state.routes().apis.get(path)
        if flow is None:
            raise Problem(404, "not_found", f"no API at {path}")
        correlation_id, traceparent = correlation(headers)
        meta = EventMeta(
            id=headers.get("idempotency-key") or None,
            type=f"api:{path}",
            source="api",
            correlation_id=correlation_id,
            traceparent=traceparent,
        )
        try:
            result = await state.runtime.call_api(flow, data, meta, api_timeout(state, flow))
            if meta.id is not None:
                await _require_same_body(state, result.run_id, data)
        except SynclineError as exc:
            raise runtime_problem(exc) from None
    status, body = answer(result)
    extra = [("X-Syncline-Run-Id", result.run_id)]
    await send_json(send, status, body, extra)
    state.metrics.ingest("api", time.perf_counter() - started)


async def _require_same_body(state: ServerState, run_id: str, data: Any) -> None:
    """An Idempotency-Key names one request: reused with another body, it is refused (422, as
    Stripe answers), never answered with another caller's result."""
    run = await state.runtime.store.get_run(run_id)
    event = await state.runtime.store.get_event(run.event_id) if run is not None else None
    if event is not None and event.data != data:
        raise Problem(422, "idempotency_key_reused", "this Idempotency-Key was used with a "
                      "different request body; use a new key for a new request")


def api_timeout(state: ServerState, flow: CompiledFlow) -> float:
    timeout = flow.trigger.timeout or DEFAULT_TIMEOUT
    cap = state.config.api_timeout
    return min(timeout, cap) if cap else timeout


def answer(result: Any) -> tuple[int, Any]:
    """(status, body) for an ApiResult."""
    if result.state == "succeeded":
        return 200, result.output
    reason = result.reason or {}
    errors = [dict(e) for e in result.errors]
    if errors or result.state == "parked":
        code = "validation_failed" if errors else reason.get("code", "parked")
        message = reason.get("message") or "; ".join(
            f"{e.get('path') or '<root>'}: {e.get('message')}" for e in errors
        )
        return 422, _error(code, message or "the data was rejected", result, errors=errors)
    if result.state == "timeout":
        return 504, _error("timeout", "the run did not finish in time; it continues", result)
    return 502, _error(
        "run_failed", reason.get("message") or f"the run ended {result.state}", result
    )


def _error(code: str, message: str, result: Any, **extra: Any) -> dict[str, Any]:
    reason = result.reason
    return {
        "error": {
            "code": code,
            "message": message,
            "run_id": result.run_id,
            "state": result.state,
            "reason": reason,
            **extra,
        }
    }
