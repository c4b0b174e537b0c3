"""The admin API under /api/v1 (a named bearer token, engine/server/auth.py; loopback only
without any), plus the unauthenticated probes /healthz, /readyz and /metrics.

    GET  /api/v1/runs?flow=&state=&key=&cursor=&limit=    newest first; `next_cursor` pages on
    GET  /api/v1/runs/{id}                                steps, attempts, lineage, links
    POST /api/v1/runs/{id}/resume|retry|cancel|replay     operator actions, optional body
                                                          {"reason": text, "data": corrected
                                                          payload (resume only)}
    GET  /api/v1/audit?run=&actor=&action=&since=&cursor= the audit trail, newest first
    GET  /api/v1/status                                   plan digest, flows, last reload
    GET  /api/v1/metrics                                  business metrics, measured now
    GET  /api/v1/openapi.json                             this whole HTTP API, current routes
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, get_args

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.errors import StateConflict, StoreError, UsageError
from engine.runtime.actions import ACTIONS, perform
from engine.runtime.runtime import MISSING
from engine.server import audit as audit_api
from engine.server.auth import Principal, authenticate, require, require_flow
from engine.server.http import Problem, dumps, header_dict, read_body
from engine.server.metrics import CONTENT_TYPE_LATEST
from engine.server.openapi import openapi_document
from engine.server.state import ServerState
from engine.server.telemetry import as_json, business_values, scrape
from engine.server.times import iso_fields
from engine.server.views import run_detail, run_summary
from engine.store.base import RunQuery, RunState

Endpoint = Callable[[Request], Awaitable[Response]]
MAX_LIMIT = 500
MAX_REASON = 2000
log = logging.getLogger("syncline.server")


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


def state_of(request: Request) -> ServerState:
    state: ServerState = request.app.state.syncline
    return state


def admin(endpoint: Endpoint) -> Endpoint:
    """Let in callers with the `read` right (viewers and up); `request.state.principal` is who
    they are. Handlers that change something check further rights themselves."""

    async def guarded(request: Request) -> Response:
        state = state_of(request)
        request.state.principal = authenticate(
            state.tokens.table, request.scope, header_dict(request.scope), "read", "the admin API"
        )
        return await endpoint(request)

    guarded.__name__ = endpoint.__name__
    guarded.__doc__ = endpoint.__doc__
    return guarded


@admin
async def list_runs(request: Request) -> Response:
    """Runs, newest first, filtered by flow, state and key; `cursor` continues a listing."""
    query = request.query_params
    limit = _int(query.get("limit", "50"), "limit")
    if not 1 <= limit <= MAX_LIMIT:
        raise Problem(400, "bad_request", f"limit must be between 1 and {MAX_LIMIT}")
    state = query.get("state") or None
    if state is not None and state not in RUN_STATES:
        raise Problem(400, "bad_request", f"state must be one of {', '.join(RUN_STATES)}")
    cursor = query.get("cursor") or None
    if cursor is not None and not (cursor.isdigit() and len(cursor) < 19):
        raise Problem(400, "bad_request", f"bad cursor {cursor!r} (a listing's next_cursor)")
    filters = RunQuery(
        flow=query.get("flow") or None,
        state=state,
        key=query.get("key") or None,
        cursor=cursor,
        limit=limit,
    )
    try:
        runs, cursor = await state_of(request).runtime.list_runs(filters)
    except UsageError as exc:  # a cursor no listing gave
        raise Problem(400, "bad_request", str(exc)) from None
    return JSON({"runs": [run_summary(run) for run in runs], "next_cursor": cursor})


@admin
async def get_run(request: Request) -> Response:
    """One run with its steps, attempts and lineage."""
    run_id = request.path_params["run_id"]
    detail = await state_of(request).runtime.run_detail(run_id)
    if detail is None:
        raise Problem(404, "not_found", f"no run '{run_id}'")
    return JSON(run_detail(detail))


@admin
async def run_action(request: Request) -> Response:
    """resume | retry | cancel | replay by the caller's token (its name is the audit's actor)."""
    state = state_of(request)
    principal: Principal = request.state.principal
    run_id, action = request.path_params["run_id"], request.path_params["action"]
    if action not in ACTIONS:
        raise Problem(404, "not_found", f"unknown action '{action}' (one of {', '.join(ACTIONS)})")
    require(principal, "act", f"'{action}'")
    data, reason = await _action_body(request, state, action)
    try:
        run = await state.runtime.store.get_run(run_id)
        if run is None:
            raise Problem(404, "not_found", f"no run '{run_id}'")
        require_flow(principal, run.flow)
        detail = await perform(state.runtime, run_id, action, principal.name, data, reason)
    except (UsageError, StoreError) as exc:
        raise _action_problem(run_id, exc) from None
    return JSON(run_detail(detail), status_code=202 if action == "replay" else 200)


async def _action_body(request: Request, state: ServerState, action: str) -> tuple[Any, Any]:
    """(corrected data or MISSING, reason or None) from an action's body: empty, or
    `{"reason": text}` plus `"data"` for a resume."""
    body = await read_body(
        request.receive, state.config.max_body, request.headers.get("content-length")
    )
    if not body.strip():
        return MISSING, None
    from engine.server.ingest import parse_json

    document = parse_json(state, body)
    fields = {"reason", "data"} if action == "resume" else {"reason"}
    if not isinstance(document, dict) or set(document) - fields:
        shape = '{"reason": "...", "data": ...}' if action == "resume" else '{"reason": "..."}'
        raise Problem(400, "bad_request", f"{action} takes an empty body or {shape}")
    reason = document.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON):
        raise Problem(400, "bad_request", f"reason must be text of at most {MAX_REASON} characters")
    return document.get("data", MISSING), reason


def _action_problem(run_id: str, exc: Exception) -> Problem:
    message = str(exc)
    if isinstance(exc, UsageError) and message.startswith("no run"):
        return Problem(404, "not_found", message)
    if isinstance(exc, StoreError) and not isinstance(exc, StateConflict):
        log.error("run %s: the store failed: %s", run_id, message)
        return Problem(
            503, "store_unavailable", "the store failed; retry later", headers={"Retry-After": "1"}
        )
    return Problem(409, "conflict", message)


@admin
async def status(request: Request) -> Response:
    """What this server runs: plan digest, environment, flows, routes, last reload, paused flows
    and Systems, open circuits."""
    state = state_of(request)
    with contextlib.suppress(StoreError):  # else as last read
        await state.runtime.gates.refresh()  # as the store has them (an ingest node runs no loop)
    return JSON(status_document(state))


def status_document(state: ServerState) -> dict[str, Any]:
    plan = state.plan
    routes = state.routes()
    return {
        "version": _version(),
        "project": plan.project,
        "environment": plan.environment,
        "digest": plan.digest,
        "flows": {
            name: {"version": f.version, "trigger": f.trigger.kind}
            for name, f in plan.flows.items()
        },
        "webhooks": sorted(routes.webhooks),
        "apis": sorted(routes.apis),
        "events": sorted(plan.subscriptions),
        "reload": state.reload.as_dict() if state.reload else None,
        "tokens": state.tokens.status.as_dict(),
        **_switches_json(state.runtime.gates.describe()),
        "queue_depth": state.runtime.queue_depth(),
        "pending_ingest": state.pending,
        "ready": state.ready and not state.draining,
        "uptime": round(time.time() - state.started_at, 3),
    }


@admin
async def openapi(request: Request) -> Response:
    """The OpenAPI 3.1 document of every endpoint, including the current plan's paths."""
    return JSON(openapi_document(state_of(request).plan, _version()))


async def healthz(request: Request) -> Response:
    return JSON({"status": "ok"})


async def readyz(request: Request) -> Response:
    state = state_of(request)
    if state.ready and not state.draining:
        return JSON({"status": "ready", "digest": state.plan.digest})
    return JSON({"status": "draining" if state.draining else "starting"}, status_code=503)


async def metrics(request: Request) -> Response:
    state = state_of(request)
    plan, quotas = state.runtime.plan, state.runtime.gates.quotas
    systems = [plan.system(name) for name in sorted({name for name, _ in plan.systems})]
    left = await quotas.remaining(systems) if quotas is not None else {}
    await state.metrics.read_store(state.runtime.store, left)
    return Response(state.metrics.render() + await scrape(state), media_type=CONTENT_TYPE_LATEST)


@admin
async def business_metrics(request: Request) -> Response:
    """The business metrics (Metric kinds) with their owners and objectives, measured now."""
    return JSON(as_json(await business_values(state_of(request))))


RUN_STATES: tuple[str, ...] = get_args(RunState)


def _switches_json(described: dict[str, Any]) -> dict[str, Any]:
    """The paused flows and Systems and the circuits, with ISO 8601 times."""
    paused = {
        kind: {name: iso_fields(s, "at") for name, s in found.items()}
        for kind, found in described["paused"].items()
    }
    circuits = {
        name: iso_fields(c, "until", "opened_at") for name, c in described["circuits"].items()
    }
    return {**described, "paused": paused, "circuits": circuits}


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise Problem(400, "bad_request", f"{name} must be an integer") from None


def _version() -> str:
    try:
        return version("syncline")
    except PackageNotFoundError:
        return "0+unknown"


ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/api/v1/runs", list_runs, methods=["GET"]),
    Route("/api/v1/runs/{run_id}", get_run, methods=["GET"]),
    Route("/api/v1/runs/{run_id}/{action}", run_action, methods=["POST"]),
    Route("/api/v1/status", status, methods=["GET"]),
    Route("/api/v1/audit", admin(audit_api.list_audit), methods=["GET"]),
    Route("/api/v1/metrics", business_metrics, methods=["GET"]),
    Route("/api/v1/openapi.json", openapi, methods=["GET"]),
]
