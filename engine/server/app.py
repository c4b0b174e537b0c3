"""The ASGI application of `syncline serve`.

Routing has two parts. Webhook and process-API paths belong to the plan, which a reload may
replace at any moment, so a dispatcher looks each POST's path up in the *current* plan's tables
(two dict lookups) before anything else; paths added or removed by a reload take effect at once.
Everything fixed (/events is handled by the dispatcher too; /api/v1/..., /healthz, /readyz,
/metrics) is an ordinary Starlette route. The dispatcher is the outermost ASGI app, so a webhook
delivery (the hot path) goes through no Starlette machinery at all. Every error is JSON
`{"error": {"code", "message"}}`.

The lifespan starts the store and the runtime (and the reloader), and on shutdown stops taking
ingest, lets in-flight steps checkpoint (`runtime.stop(grace)`), then closes the store. An
ingest-only node (`config.workers` false) starts no workers: it only saves the plan, so that the
`syncline worker` processes sharing its store can execute the runs it accepts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from engine.server import logevents
from engine.server.admin import JSON, ROUTES
from engine.server.alerts import ROUTES as ALERT_ROUTES
from engine.server.apis import handle_api
from engine.server.console import console_routes
from engine.server.controls import ROUTES as CONTROL_ROUTES
from engine.server.controls import GatesCollector
from engine.server.events import handle_events
from engine.server.http import ClientGone, Problem, header_dict, send_problem
from engine.server.reconciliations import ROUTES as RECONCILIATION_ROUTES
from engine.server.state import ServerState, WebhookRoute
from engine.server.webhooks import handle_webhook

log = logging.getLogger("syncline.server")
UNMATCHED = "<unmatched>"
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


class Dispatch:
    """The server's ASGI app: routes POSTs to the current plan's webhook and API paths and to
    /events; counts every request by route and status; passes everything else (the lifespan
    included) to `app`, the Starlette app of the fixed routes."""

    def __init__(self, app: Starlette, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        route = UNMATCHED

        async def counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        path = scope["path"]
        webhook = self.state.routes().webhooks.get(path)
        try:
            if webhook is not None:  # the hot path: it knows the status it sends
                route = path
                status = await self.webhook(scope, path, webhook, receive, send)
            else:
                route = await self.route(scope, receive, counted)
        finally:
            self.state.metrics.request(route, scope["method"], status)

    async def webhook(
        self, scope: Scope, path: str, webhook: WebhookRoute, receive: Receive, send: Send
    ) -> int:
        """Handle a delivery to a webhook path; return the status answered (500: none)."""
        headers = header_dict(scope)
        tracing = self.state.runtime.tracing
        if tracing is None:
            return await self._webhook(scope, path, webhook, headers, receive, send)
        with tracing.ingest(scope["method"], path, headers) as span:
            status = await self._webhook(scope, path, webhook, headers, receive, send)
            span.answered(status, str(status) if status >= 500 else None)
        return status

    async def _webhook(
        self,
        scope: Scope,
        path: str,
        webhook: WebhookRoute,
        headers: dict[str, str],
        receive: Receive,
        send: Send,
    ) -> int:
        try:
            _require_post(scope, path)
            return await handle_webhook(self.state, path, webhook, headers, receive, send)
        except Problem as problem:
            self.state.metrics.delivery(path, problem.code)
            logevents.rejected(
                "webhook", path, webhook.flow.name, problem.status, problem.code, problem.message
            )
            await send_problem(send, problem)
            return problem.status
        except ClientGone:
            return 500
        except Exception:  # a bug: answer like Starlette's error handler would, and log it
            log.exception("internal error on %s %s", scope["method"], path)
            with contextlib.suppress(Exception):  # unless the answer has gone out already
                await send_problem(send, _internal_problem())
            return 500

    async def route(self, scope: Scope, receive: Receive, send: Send) -> str:
        """Handle any other request; return its route label (a template, never a raw unknown
        path)."""
        path: str = scope["path"]
        if path not in self.state.routes().apis and path != "/events":
            await self.app(scope, receive, send)
            found = scope.get("route")
            return str(getattr(found, "path", UNMATCHED))
        headers = header_dict(scope)
        tracing = self.state.runtime.tracing
        if tracing is None:
            await self._ingest(scope, path, headers, receive, send)
        else:
            status = 500

            async def answered(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            with tracing.ingest(scope["method"], path, headers) as span:
                await self._ingest(scope, path, headers, receive, answered)
                span.answered(status, str(status) if status >= 500 else None)
        return path

    async def _ingest(
        self, scope: Scope, path: str, headers: dict[str, str], receive: Receive, send: Send
    ) -> None:
        """POST /events, or a process API."""
        try:
            _require_post(scope, path)
            if path == "/events":
                await handle_events(self.state, scope, headers, receive, send)
            else:
                await handle_api(self.state, path, scope, headers, receive, send)
        except Problem as problem:
            if path == "/events":
                self.state.metrics.delivery(path, problem.code)
                logevents.rejected("events", path, None, problem.status, problem.code,
                                   problem.message)  # fmt: skip
            await send_problem(send, problem)
        except ClientGone:
            pass


def _require_post(scope: Scope, path: str) -> None:
    if scope["method"] != "POST":
        raise Problem(405, "method_not_allowed", f"{path} takes POST", headers={"Allow": "POST"})


async def _problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return JSON(exc.body(), status_code=exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = (
        f"no route for {request.method} {request.url.path}"
        if exc.status_code in (404, 405)
        else str(exc.detail)
    )
    return JSON(
        {"error": {"code": code, "message": message}},
        status_code=exc.status_code,
        headers=exc.headers,
    )


def _internal_problem() -> Problem:
    return Problem(500, "internal", "internal error; see the server log")


async def _internal(request: Request, exc: Exception) -> Response:
    log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    problem = _internal_problem()
    return JSON(problem.body(), status_code=problem.status)


def create_app(state: ServerState, *, reloader: Any = None, manage_store: Any = None) -> Dispatch:
    """The ASGI app serving `state`. `reloader` (a `reload.Reloader`) runs while the app
    lives; `manage_store` (a Store) is opened before the runtime starts and closed after."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_store is not None:
            await manage_store.open()
        if state.config.workers:
            await state.runtime.start()
        else:  # ingest only: the workers elsewhere rebuild each run's plan from this bundle
            plan = state.runtime.plan
            await state.runtime.store.save_plan(plan.digest, dict(plan.bundle))
        state.ready = True
        logevents.startup(state, state.config.listen)
        # What startup built (the plan, the modules) lives as long as the process: keep it out
        # of the collector's full passes, which otherwise stall every request in flight for
        # tens of milliseconds under load (the ingest p99).
        gc.collect()
        gc.freeze()
        if reloader is not None:
            await reloader.start()
        try:
            yield
        finally:
            await _shutdown(state, reloader, manage_store)

    app = Starlette(
        routes=[*ROUTES, *RECONCILIATION_ROUTES, *ALERT_ROUTES, *CONTROL_ROUTES, *console_routes()],
        exception_handlers={Problem: _problem, HTTPException: _http_error, Exception: _internal},
        lifespan=lifespan,
    )
    app.state.syncline = state
    state.metrics.registry.register(GatesCollector(state.runtime.gates, lambda: state.plan))
    return Dispatch(app, state)


async def _shutdown(state: ServerState, reloader: Any, store: Any) -> None:
    state.draining = True
    if reloader is not None:
        await reloader.stop()
    await state.runtime.stop(state.config.shutdown_grace)
    if store is not None:
        await store.close()
    if state.runtime.tracing is not None:  # export the spans still buffered
        await asyncio.to_thread(state.runtime.tracing.shutdown)
    logevents.shutdown(state)
