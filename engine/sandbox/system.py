"""`SandboxSystem`, the base of every sandbox system: state under one lock, routes, idempotency,
rate limits, faults, the request log and the /sandbox control endpoints."""

from __future__ import annotations

import asyncio
import collections
import copy
import hashlib
import hmac
import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.sandbox.common import (
    JSON,
    SANDBOX_PREFIX,
    WRITE_METHODS,
    ApiError,
    Call,
    Handler,
    IdGenerator,
    Reply,
    bad_request,
    canonical_json,
    dumps,
    is_number,
    iso_now,
    logger,
)
from engine.sandbox.limits import Fault, TokenBucket
from engine.sandbox.serving import ServerThread
from engine.sandbox.webhooks import WebhookSender

# --------------------------------------------------------------------------------------------
# the base system


@dataclass
class SandboxConfig:
    """Configuration every sandbox system takes (subclasses add their own fields)."""

    rate_limit: tuple[float, int] | None = None
    """``(per_second, burst)`` of the token bucket, or None for no limit."""
    webhook_url: str | None = None
    """Where outbound webhooks go (None: they are recorded as ``no_target``)."""
    webhook_secret: str | None = None
    """Signing secret of outbound webhooks (None: the system's documented default)."""
    webhook_max_attempts: int = 4
    webhook_backoff: tuple[float, ...] = (0.05, 0.25, 1.0)
    webhook_timeout: float = 5.0
    auth_token: str | None = None
    """When set, every non-/sandbox request needs ``Authorization: Bearer <token>``."""
    strict_idempotency: bool = True
    request_log_size: int = 5000


class SandboxSystem:
    """Base of the sandbox systems: state, lock, routes, the request pipeline, sandbox endpoints."""

    name = "sandbox"
    config_class: type[SandboxConfig] = SandboxConfig
    webhook_scheme: str | None = None
    default_webhook_secret: str = ""
    collections: tuple[str, ...] = ()

    def __init__(self, config: SandboxConfig | None = None, **overrides: Any) -> None:
        config = config or self.config_class()
        if overrides:
            names = {f.name for f in fields(config)}
            unknown = sorted(set(overrides) - names)
            if unknown:
                raise TypeError(f"unknown {self.name} sandbox config {unknown}")
            config = copy.copy(config)
            for key, value in overrides.items():
                setattr(config, key, value)
        self.config = config
        self.lock = threading.RLock()
        self.ids = IdGenerator(self.name)
        self.data: dict[str, dict[str, JSON]] = {}
        self.idempotency: dict[str, JSON] = {}
        self.faults: list[Fault] = []
        self.fault_hits: dict[str, int] = {}
        """Requests each fault (by id) has affected, kept after the fault is spent or cleared."""
        self.requests: collections.deque[JSON] = collections.deque(maxlen=config.request_log_size)
        self.counters: collections.Counter[str] = collections.Counter()
        self.bucket: TokenBucket | None = (
            TokenBucket(*config.rate_limit) if config.rate_limit else None
        )
        self.webhooks: WebhookSender | None = None
        if self.webhook_scheme:
            self.webhooks = WebhookSender(
                scheme=self.webhook_scheme,
                secret=config.webhook_secret or self.default_webhook_secret,
                url=config.webhook_url,
                max_attempts=config.webhook_max_attempts,
                backoff=config.webhook_backoff,
                timeout=config.webhook_timeout,
                user_agent=f"Syncline-Sandbox-{self.name.upper()}/1.0",
            )
        self._fault_seq = 0
        self._reset_data()
        self.app = self._build_app()

    # -- to be provided by subclasses

    def routes(self) -> list[tuple[str, str, Handler]]:
        """The system's API: ``(method, path, handler)``."""
        return []

    def sandbox_routes(self) -> list[tuple[str, str, Handler]]:
        """Extra ``/sandbox/...`` control endpoints of the system."""
        return []

    def reset_master_data(self) -> None:
        """Restore configured master data (called on construction and reset)."""

    def master_data(self) -> JSON | None:
        return None

    # -- state

    def _reset_data(self) -> None:
        self.data = {name: {} for name in self.collections}
        self.ids.reset()
        self.reset_master_data()

    def reset(self) -> None:
        """Forget everything: data, idempotency keys, faults, logs, webhook deliveries."""
        with self.lock:
            self._reset_data()
            self.idempotency.clear()
            self.faults.clear()
            self.fault_hits.clear()
            self.requests.clear()
            self.counters.clear()
            if self.bucket:
                self.bucket = TokenBucket(self.bucket.per_second, self.bucket.burst)
            if self.webhooks:
                self.webhooks.clear()

    def records(self, collection: str) -> list[JSON]:
        """A copy of one collection's records, in creation order."""
        with self.lock:
            return copy.deepcopy(list(self.data[collection].values()))

    def get(self, collection: str, ident: str) -> JSON | None:
        with self.lock:
            record = self.data[collection].get(ident)
            return copy.deepcopy(record) if record is not None else None

    def snapshot(self) -> JSON:
        """Everything, as ``GET /sandbox/state`` returns it."""
        with self.lock:
            state: JSON = {
                "system": self.name,
                "data": {name: list(items.values()) for name, items in self.data.items()},
                "idempotency": {
                    key: {k: v for k, v in entry.items() if k not in ("body", "headers")}
                    for key, entry in self.idempotency.items()
                },
                "faults": [f.describe() for f in self.faults],
                "fault_hits": dict(self.fault_hits),
                "rate_limit": self.bucket.describe() if self.bucket else None,
                "counters": dict(self.counters),
            }
            master = self.master_data()
            if master is not None:
                state["master_data"] = master
            state = json.loads(dumps(state))
        if self.webhooks:
            state["webhooks"] = self.webhooks.snapshot()
        return state

    def idempotency_writes(self, key: str) -> int:
        with self.lock:
            entry = self.idempotency.get(key)
            return entry["writes"] if entry else 0

    def emit(self, event_type: str, payload: Any, webhook_id: str) -> JSON | None:
        """Queue an outbound webhook (a no-op for systems without webhooks)."""
        if self.webhooks is None:
            return None
        return self.webhooks.send(event_type, payload, webhook_id)

    def wait_webhooks(self, timeout: float = 10.0) -> bool:
        return self.webhooks.wait_idle(timeout) if self.webhooks else True

    def configure_webhook(self, url: str | None = None, secret: str | None = None) -> None:
        if self.webhooks is None:
            raise ValueError(f"the {self.name} sandbox sends no webhooks")
        self.webhooks.configure(url=url, secret=secret)

    def set_rate_limit(self, per_second: float | None, burst: int | None = None) -> None:
        with self.lock:
            if per_second is None:
                self.bucket = None
            else:
                self.bucket = TokenBucket(per_second, burst or max(1, int(per_second)))

    def add_fault(self, **spec: Any) -> JSON:
        with self.lock:
            self._fault_seq += 1
            fault = Fault.from_body(f"flt_{self._fault_seq}", spec)
            self.faults.append(fault)
            return fault.describe()

    def close(self) -> None:
        """Release background resources (the webhook thread)."""
        if self.webhooks:
            self.webhooks.close()

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> ServerThread:
        """Start this system on a real socket in a background thread; returns the running server.

        Stopping the server also closes the system (its webhook thread).
        """
        server = ServerThread(self.app, host=host, port=port, on_stop=self.close, name=self.name)
        server.start()
        return server

    # -- the request pipeline

    def _take_fault(self, method: str, path: str) -> Fault | None:
        now = time.monotonic()
        with self.lock:
            self.faults = [
                f
                for f in self.faults
                if (f.count is None or f.hits < f.count) and (f.until is None or f.until > now)
            ]
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    self.fault_hits[fault.id] = fault.hits
                    return fault
        return None

    def _fault_reply(self, fault: Fault) -> Response:
        if fault.mode == "rate_limit_storm":
            retry_after = fault.retry_after if fault.retry_after is not None else 1
            error = ApiError(429, "RATE_LIMITED", "rate limit exceeded (injected storm)")
            return self._error_response(error, retry_after_headers(retry_after))
        status = fault.status or 503
        code = {503: "SERVICE_UNAVAILABLE", 502: "BAD_GATEWAY", 504: "GATEWAY_TIMEOUT"}.get(
            status, "INJECTED_FAULT"
        )
        headers = retry_after_headers(fault.retry_after) if fault.retry_after is not None else {}
        error = ApiError(status, code, f"injected fault {fault.id}")
        return self._error_response(error, headers)

    @staticmethod
    def _error_response(error: ApiError, headers: Mapping[str, str] | None = None) -> Response:
        return Response(
            dumps(error.body()),
            status_code=error.status,
            media_type="application/json",
            headers={**error.headers, **(headers or {})},
        )

    @staticmethod
    def _reply_response(reply: Reply, body: bytes | None, extra: Mapping[str, str]) -> Response:
        headers = {**reply.headers, **extra}
        if body is None:
            return Response(status_code=reply.status, headers=headers)
        return Response(body, reply.status, headers=headers, media_type="application/json")

    def _endpoint(self, handler: Handler, control: bool) -> Callable[[Request], Any]:
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
                response = await self._pipeline(request, handler, control, entry)
            except ApiError as error:
                response = self._error_response(error)
            except Exception as exc:  # a bug in a sandbox handler: answer like a real API would
                logger.exception(
                    "%s sandbox: %s %s failed", self.name, request.method, entry["path"]
                )
                response = self._error_response(
                    ApiError(500, "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}")
                )
            entry["status"] = response.status_code
            entry["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
            if not control:
                with self.lock:
                    self.counters["requests"] += 1
                    self.requests.append(entry)
            return response

        return endpoint

    async def _pipeline(
        self, request: Request, handler: Handler, control: bool, entry: JSON
    ) -> Response:
        method, path = request.method, request.url.path
        if not control and self.config.auth_token:
            expected = f"Bearer {self.config.auth_token}"
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), expected.encode()):
                raise ApiError(401, "UNAUTHORIZED", "missing or wrong bearer token")
        # read the body first: a delayed request goes on (and writes) after its client gave up
        raw = await request.body()
        fault = None
        if not control:
            with self.lock:
                wait = self.bucket.take() if self.bucket else 0.0
            if wait:
                entry["rate_limited"] = True
                with self.lock:
                    self.counters["rate_limited"] += 1
                error = ApiError(429, "RATE_LIMITED", "rate limit exceeded")
                return self._error_response(error, retry_after_headers(wait))
            fault = self._take_fault(method, path)
            if fault is not None:
                entry["fault"] = fault.id
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.phase == "before" and (fault.status or fault.mode != "error"):
                    return self._fault_reply(fault)
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
        response = self._execute(handler, call, key, entry, control)
        if fault is not None and fault.phase == "after" and fault.status:
            return self._fault_reply(fault)
        return response

    def _execute(
        self, handler: Handler, call: Call, key: str | None, entry: JSON, control: bool
    ) -> Response:
        fingerprint = hashlib.sha256(
            canonical_json([call.method, call.path, call.body])
        ).hexdigest()
        with self.lock:
            cached = self.idempotency.get(key) if key else None
            if cached is not None and cached["writes"]:
                cached["attempts"] += 1
                if self.config.strict_idempotency and cached["fingerprint"] != fingerprint:
                    raise ApiError(
                        422,
                        "IDEMPOTENCY_KEY_REUSED",
                        "this Idempotency-Key was used with a different request",
                        first_request={"method": cached["method"], "path": cached["path"]},
                    )
                cached["replays"] += 1
                entry["replayed"] = True
                reply = Reply(cached["status"], None, dict(cached["headers"]))
                return self._reply_response(reply, cached["body"], {"Idempotent-Replayed": "true"})
            try:
                reply = handler(call)
                body = None if reply.body is None else dumps(reply.body)
            except ApiError as error:
                reply = Reply(error.status, error.body(), error.headers)
                body = dumps(reply.body)
            if not control and call.method in WRITE_METHODS and reply.status < 400:
                self.counters["writes"] += 1
            if key:
                record = self.idempotency.setdefault(
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
            return self._reply_response(reply, body, {})

    # -- the app

    def _build_app(self) -> Starlette:
        routes: list[Route] = []
        for method, path, handler in self.routes():
            routes.append(Route(path, self._endpoint(handler, False), methods=[method]))
        control = self._control_routes() + self.sandbox_routes()
        for method, path, handler in control:
            routes.append(Route(path, self._endpoint(handler, True), methods=[method]))

        async def http_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, HTTPException)
            code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
            error = ApiError(
                exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}"
            )
            return self._error_response(error, exc.headers)

        app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
        app.state.sandbox = self
        return app

    def _control_routes(self) -> list[tuple[str, str, Handler]]:
        p = SANDBOX_PREFIX
        routes: list[tuple[str, str, Handler]] = [
            ("GET", f"{p}/state", lambda call: Reply(200, self.snapshot())),
            ("POST", f"{p}/reset", self._h_reset),
            ("GET", f"{p}/requests", self._h_requests),
            ("GET", f"{p}/idempotency", self._h_idempotency),
            ("GET", f"{p}/faults", lambda call: Reply(200, self._faults_body())),
            ("POST", f"{p}/faults", self._h_add_fault),
            ("DELETE", f"{p}/faults", self._h_clear_faults),
            ("PUT", f"{p}/rate-limit", self._h_rate_limit),
            ("POST", f"{p}/rate-limit", self._h_rate_limit),
        ]
        if self.webhooks is not None:
            routes += [
                ("GET", f"{p}/webhooks", lambda call: Reply(200, self.webhooks_body())),
                ("POST", f"{p}/webhooks/config", self._h_webhook_config),
                ("POST", f"{p}/webhooks/{{delivery_id}}/redeliver", self._h_redeliver),
            ]
        return routes

    def webhooks_body(self) -> JSON:
        assert self.webhooks is not None
        return self.webhooks.snapshot()

    def _faults_body(self) -> JSON:
        with self.lock:
            return {"faults": [f.describe() for f in self.faults]}

    def _h_reset(self, call: Call) -> Reply:
        self.reset()
        return Reply(200, {"reset": True, "system": self.name})

    def _h_requests(self, call: Call) -> Reply:
        limit = call.query.get("limit")
        with self.lock:
            items = list(self.requests)
        if limit and limit.isdigit():
            items = items[-int(limit) :]
        return Reply(200, {"requests": items})

    def _h_idempotency(self, call: Call) -> Reply:
        return Reply(200, {"keys": self.snapshot()["idempotency"]})

    def _h_add_fault(self, call: Call) -> Reply:
        body = call.body
        specs = body if isinstance(body, list) else [call.json_object()]
        with self.lock:
            created = [self.add_fault(**spec) for spec in specs]
        return Reply(201, created[0] if len(created) == 1 else {"faults": created})

    def _h_clear_faults(self, call: Call) -> Reply:
        with self.lock:
            self.faults.clear()
        return Reply(200, {"faults": []})

    def _h_rate_limit(self, call: Call) -> Reply:
        body = call.json_object()
        per_second, burst = body.get("per_second"), body.get("burst")
        if per_second is not None and (not is_number(per_second) or per_second <= 0):
            raise bad_request("INVALID_REQUEST", "per_second must be a positive number or null")
        if burst is not None and (not isinstance(burst, int) or burst < 1):
            raise bad_request("INVALID_REQUEST", "burst must be a positive integer")
        self.set_rate_limit(per_second, burst)
        with self.lock:
            return Reply(200, {"rate_limit": self.bucket.describe() if self.bucket else None})

    def _h_webhook_config(self, call: Call) -> Reply:
        body = call.json_object()
        url, secret = body.get("url"), body.get("secret")
        if url is not None and not isinstance(url, str):
            raise bad_request("INVALID_REQUEST", "url must be a string")
        if secret is not None and not isinstance(secret, str):
            raise bad_request("INVALID_REQUEST", "secret must be a string")
        try:
            self.configure_webhook(url=url, secret=secret)
        except ValueError:
            raise bad_request("INVALID_REQUEST", "secret must be whsec_<base64>") from None
        return Reply(200, {"url": self.webhooks.url if self.webhooks else None})

    def _h_redeliver(self, call: Call) -> Reply:
        assert self.webhooks is not None
        delivery = self.webhooks.redeliver(call.params["delivery_id"])
        return Reply(202, {"id": delivery["id"], "webhook_id": delivery["webhook_id"]})


def retry_after_headers(seconds: float) -> dict[str, str]:
    """``Retry-After`` in whole seconds (HTTP allows no fractions; at least 1 when > 0)."""
    whole = max(1, math.ceil(seconds)) if seconds > 0 else 0
    return {"Retry-After": str(whole), "Retry-After-Ms": str(max(0, math.ceil(seconds * 1000)))}


