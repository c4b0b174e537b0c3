"""The HTTP side of a sandbox system: its Starlette app, and the pipeline every request goes
through (bearer auth, the rate limit, injected faults, Idempotency-Key replays, the request log).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from engine.sandbox.common import (
    JSON,
    WRITE_METHODS,
    ApiError,
    Call,
    Handler,
    Reply,
    bad_request,
    canonical_json,
    dumps,
    iso_now,
    logger,
)
from engine.sandbox.control import ControlApi
from engine.sandbox.limits import Fault

if TYPE_CHECKING:
    from engine.sandbox.system import SandboxSystem


class RequestPipeline:
    """Builds `system`'s app (`build`) and handles its requests, on `system`'s state and lock."""

    def __init__(self, system: SandboxSystem) -> None:
        self.system = system

    def take_fault(self, method: str, path: str) -> Fault | None:
        now = time.monotonic()
        with self.system.lock:
            self.system.faults = [
                f
                for f in self.system.faults
                if (f.count is None or f.hits < f.count) and (f.until is None or f.until > now)
            ]
            for fault in self.system.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    self.system.fault_hits[fault.id] = fault.hits
                    return fault
        return None

    def fault_reply(self, fault: Fault) -> Response:
        if fault.mode == "rate_limit_storm":
            retry_after = fault.retry_after if fault.retry_after is not None else 1
            error = ApiError(429, "RATE_LIMITED", "rate limit exceeded (injected storm)")
            return self.error_response(error, retry_after_headers(retry_after))
        status = fault.status or 503
        code = {503: "SERVICE_UNAVAILABLE", 502: "BAD_GATEWAY", 504: "GATEWAY_TIMEOUT"}.get(
            status, "INJECTED_FAULT"
        )
        headers = retry_after_headers(fault.retry_after) if fault.retry_after is not None else {}
        error = ApiError(status, code, f"injected fault {fault.id}")
        return self.error_response(error, headers)

    def error_response(
        self, error: ApiError, headers: Mapping[str, str] | None = None
    ) -> Response:
        return Response(
            dumps(self.system.error_body(error)),
            status_code=error.status,
            media_type="application/json",
            headers={**error.headers, **(headers or {})},
        )

    @staticmethod
    def reply_response(reply: Reply, body: bytes | None, extra: Mapping[str, str]) -> Response:
        headers = {**reply.headers, **extra}
        if body is None:
            return Response(status_code=reply.status, headers=headers)
        return Response(body, reply.status, headers=headers, media_type="application/json")

    def endpoint(self, handler: Handler, control: bool) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            started = time.monotonic()
            entry: JSON = {
                "at": iso_now(),
                "method": request.method,
                "path": request.url.path,
                "query": str(request.url.query),
                "idempotency_key": request.headers.get("idempotency-key"),
                "correlation_id": request.headers.get("x-correlation-id"),
                "traceparent": request.headers.get("traceparent"),
            }
            try:
                response = await self.handle(request, handler, control, entry)
            except ApiError as error:
                response = self.error_response(error)
            except ClientDisconnect:  # the caller gave up before sending its body: nothing to do
                response = Response(status_code=499)  # (nginx's "client closed request")
            except Exception as exc:  # a bug in a sandbox handler: answer like a real API would
                logger.exception(
                    "%s sandbox: %s %s failed", self.system.name, request.method, entry["path"]
                )
                response = self.error_response(
                    ApiError(500, "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}")
                )
            entry["status"] = response.status_code
            entry["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
            if not control:
                with self.system.lock:
                    self.system.counters["requests"] += 1
                    self.system.requests.append(entry)
            return response

        return endpoint

    async def handle(
        self, request: Request, handler: Handler, control: bool, entry: JSON
    ) -> Response:
        method, path = request.method, request.url.path
        if not control:
            self.system.authorize(request.headers)
        # read the body first: a delayed request goes on (and writes) after its client gave up
        raw = await request.body()
        fault = None
        if not control:
            with self.system.lock:
                wait = self.system.bucket.take() if self.system.bucket else 0.0
            if wait:
                entry["rate_limited"] = True
                with self.system.lock:
                    self.system.counters["rate_limited"] += 1
                error = ApiError(429, "RATE_LIMITED", "rate limit exceeded")
                return self.error_response(error, retry_after_headers(wait))
            latency = self.system.latency_for(path)
            if latency:
                await asyncio.sleep(latency)
            fault = self.take_fault(method, path)
            if fault is not None:
                entry["fault"] = fault.id
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.phase == "before" and (fault.status or fault.mode != "error"):
                    return self.fault_reply(fault)
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            raise bad_request("INVALID_JSON", "request body is not valid JSON") from None
        call = Call(
            method=method,
            path=path,
            params=dict(request.path_params),
            query=request.query_params,
            headers=request.headers,
            body=body,
        )
        key = request.headers.get("idempotency-key") if method in WRITE_METHODS else None
        if control:
            key = None
        response = self.execute(handler, call, key, entry, control)
        if fault is not None and fault.phase == "after" and fault.status:
            return self.fault_reply(fault)
        return response

    def execute(
        self, handler: Handler, call: Call, key: str | None, entry: JSON, control: bool
    ) -> Response:
        fingerprint = hashlib.sha256(
            canonical_json([call.method, call.path, call.body])
        ).hexdigest()
        with self.system.lock:
            cached = self.system.idempotency.get(key) if key else None
            if cached is not None and cached["writes"]:
                cached["attempts"] += 1
                if self.system.config.strict_idempotency and cached["fingerprint"] != fingerprint:
                    raise ApiError(
                        422,
                        "IDEMPOTENCY_KEY_REUSED",
                        "this Idempotency-Key was used with a different request",
                        first_request={"method": cached["method"], "path": cached["path"]},
                    )
                cached["replays"] += 1
                entry["replayed"] = True
                reply = Reply(cached["status"], None, dict(cached["headers"]))
                return self.reply_response(reply, cached["body"], {"Idempotent-Replayed": "true"})
            try:
                reply = handler(call)
                body = None if reply.body is None else dumps(reply.body)
            except ApiError as error:
                reply = Reply(error.status, self.system.error_body(error), error.headers)
                body = dumps(reply.body)
            if not control and call.method in WRITE_METHODS and reply.status < 400:
                self.system.counters["writes"] += 1
            if key:
                record = self.system.idempotency.setdefault(
                    key,
                    {
                        "method": call.method,
                        "path": call.path,
                        "fingerprint": fingerprint,
                        "first_at": iso_now(),
                        "attempts": 0,
                        "writes": 0,
                        "replays": 0,
                        "status": None,
                        "body": None,
                        "headers": {},
                    },
                )
                record["attempts"] += 1
                if reply.status < 400:
                    record.update(
                        writes=record["writes"] + 1,
                        status=reply.status,
                        body=body,
                        headers=dict(reply.headers),
                        fingerprint=fingerprint,
                        method=call.method,
                        path=call.path,
                    )
                else:
                    record["last_error_status"] = reply.status
            return self.reply_response(reply, body, {})

    def build(self) -> Starlette:
        routes: list[Route] = []
        for method, path, handler in self.system.routes():
            routes.append(Route(path, self.endpoint(handler, False), methods=[method]))
        control = ControlApi(self.system).routes() + self.system.sandbox_routes()
        for method, path, handler in control:
            routes.append(Route(path, self.endpoint(handler, True), methods=[method]))

        async def http_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, HTTPException)
            code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
            error = ApiError(
                exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}"
            )
            return self.error_response(error, exc.headers)

        app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
        app.state.sandbox = self.system
        return app


def retry_after_headers(seconds: float) -> dict[str, str]:
    """``Retry-After`` in whole seconds (HTTP allows no fractions; at least 1 when > 0)."""
    whole = max(1, math.ceil(seconds)) if seconds > 0 else 0
    return {"Retry-After": str(whole), "Retry-After-Ms": str(max(0, math.ceil(seconds * 1000)))}
