"""Shared machinery of the sandbox systems.

Every sandbox system is a `SandboxSystem` subclass: in-memory state guarded by one lock, a
Starlette app built from `(method, path, handler)` routes, and the behaviour real SaaS APIs have
and integrations must cope with:

- **Idempotency-Key** on POST/PUT/PATCH/DELETE: a successful (2xx/3xx) result is stored per key and
  a repeat returns it unchanged (same status and body, header ``Idempotent-Replayed: true``) and
  writes nothing. Error results are *not* stored (as with Stripe), so a request that failed
  validation can be retried with the same key after the master data was fixed. A key reused with a
  different method, path or body gets ``422 IDEMPOTENCY_KEY_REUSED`` (``strict_idempotency``).
- **Rate limiting**: a token bucket shared by all callers -> ``429`` with ``Retry-After`` (whole
  seconds, at least 1) and ``Retry-After-Ms``.
- **Faults on demand** (``POST /sandbox/faults``): the next N matching requests fail with a status,
  are delayed (to provoke client timeouts), fail *after* the write happened (a lost response), or
  answer 429 (``rate_limit_storm``).
- A request log, ``GET /sandbox/state`` (everything, for inspection and reconciliation) and
  ``POST /sandbox/reset``.
- Signed outbound webhooks (`WebhookSender`): Standard Webhooks or Stripe signatures, delivered by
  a background thread with retries; every attempt is recorded.

`ServerThread` runs any ASGI app in-process on a real socket (uvicorn in a background thread);
`run_standalone` is the ``python -m engine.sandbox.<system>`` entry point.

Errors are JSON ``{"error": {"code": "...", "message": "...", ...details}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import copy
import datetime as dt
import hashlib
import hmac
import json
import logging
import math
import os
import queue
import random
import socket
import string
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeGuard

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

JSON = dict[str, Any]
logger = logging.getLogger("engine.sandbox")
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SANDBOX_PREFIX = "/sandbox"


# --------------------------------------------------------------------------------------------
# errors and replies


class ApiError(Exception):
    """Raised by a handler to answer with an error body ``{"error": {code, message, ...}}``."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers: dict[str, str] = {}

    def body(self) -> JSON:
        return {"error": {"code": self.code, "message": self.message, **self.details}}


def not_found(kind: str, ident: str, **details: Any) -> ApiError:
    return ApiError(404, "NOT_FOUND", f"no {kind} with id {ident!r}", **details)


def bad_request(code: str, message: str, **details: Any) -> ApiError:
    return ApiError(400, code, message, **details)


@dataclass
class Reply:
    """What a handler returns: status, a JSON body (None for no content) and extra headers."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Call:
    """What a handler sees of a request."""

    method: str
    path: str
    params: dict[str, str]
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: Any

    def json_object(self) -> JSON:
        """The body, which must be a JSON object (an empty body counts as ``{}``)."""
        if self.body is None:
            return {}
        if not isinstance(self.body, dict):
            raise bad_request("INVALID_REQUEST", "request body must be a JSON object")
        return self.body


Handler = Callable[[Call], Reply]


# --------------------------------------------------------------------------------------------
# small helpers used by the systems


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso_now() -> str:
    return utcnow().isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_date(value: Any, field_name: str, code: str = "INVALID_REQUEST") -> dt.date:
    if not isinstance(value, str):
        raise bad_request(code, f"{field_name} must be a date YYYY-MM-DD", field=field_name)
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise bad_request(
            code, f"{field_name} must be a date YYYY-MM-DD", field=field_name
        ) from None


def add_months(day: dt.date, months: int) -> dt.date:
    """`day` moved by whole months, clamped to the end of the month (Jan 31 + 1 = Feb 28/29)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    next_month = dt.date(year + month // 12, month % 12 + 1, 1)
    last = (next_month - dt.timedelta(days=1)).day
    return dt.date(year, month, min(day.day, last))


def is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def money(value: float) -> float | int:
    """Round to cents; whole amounts stay ints so JSON shows ``1200`` rather than ``1200.0``."""
    rounded = round(float(value) + 0.0, 2)
    return int(rounded) if rounded == int(rounded) else rounded


def require_str(body: Mapping[str, Any], name: str, code: str = "INVALID_REQUEST") -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise bad_request(code, f"{name} is required (a non-empty string)", field=name)
    return value


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


class IdGenerator:
    """Deterministic identifiers (reset with the system, so runs are reproducible)."""

    ALPHABET = string.ascii_letters + string.digits

    def __init__(self, seed: str) -> None:
        self._seed = seed
        self.reset()

    def reset(self) -> None:
        self._random = random.Random(self._seed)
        self._counters: collections.Counter[str] = collections.Counter()

    def next(self, name: str, start: int = 1) -> int:
        """1, 2, 3, ... per name (offset by `start - 1`)."""
        self._counters[name] += 1
        return start - 1 + self._counters[name]

    def token(self, prefix: str, length: int = 14) -> str:
        """``prefix`` + random-looking letters and digits, e.g. ``cus_NffrFeUfNV2Hib``."""
        return prefix + "".join(self._random.choice(self.ALPHABET) for _ in range(length))


# --------------------------------------------------------------------------------------------
# rate limiting and faults


class TokenBucket:
    """`per_second` tokens a second, at most `burst` banked. Not thread-safe: callers lock."""

    def __init__(self, per_second: float, burst: int) -> None:
        if per_second <= 0 or burst < 1:
            raise ValueError("rate limit needs per_second > 0 and burst >= 1")
        self.per_second = float(per_second)
        self.burst = int(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> float:
        """Take a token: 0.0 if granted, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.per_second)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.per_second

    def describe(self) -> JSON:
        return {"per_second": self.per_second, "burst": self.burst}


FAULT_MODES = ("error", "rate_limit_storm")


@dataclass
class Fault:
    """One rule of injected failure; it applies to the next `count` matching requests."""

    id: str
    mode: str = "error"
    status: int | None = 503
    count: int | None = 1
    """How many matching requests it affects; None = until `until` passes or it is deleted."""
    path_prefix: str = "/"
    method: str | None = None
    delay: float = 0.0
    """Seconds to wait before answering (to provoke client timeouts)."""
    phase: str = "before"
    """``before``: fail without executing; ``after``: execute (the write happens), then fail."""
    retry_after: float | None = None
    until: float | None = None
    """time.monotonic() deadline (from ``duration``)."""
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method != method:
            return False
        return path.startswith(self.path_prefix)

    def describe(self) -> JSON:
        remaining = None if self.count is None else self.count - self.hits
        out = {
            "id": self.id,
            "mode": self.mode,
            "status": self.status,
            "remaining": remaining,
            "hits": self.hits,
            "path_prefix": self.path_prefix,
            "method": self.method,
            "delay": self.delay,
            "phase": self.phase,
            "retry_after": self.retry_after,
        }
        if self.until is not None:
            out["expires_in"] = round(max(0.0, self.until - time.monotonic()), 3)
        return out

    @classmethod
    def from_body(cls, ident: str, body: JSON) -> Fault:
        known = {"mode", "status", "count", "path_prefix", "method", "delay", "phase"}
        known |= {"retry_after", "duration"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise bad_request("INVALID_FAULT", f"unknown fault fields {unknown}")
        mode = body.get("mode", "error")
        if mode not in FAULT_MODES:
            raise bad_request("INVALID_FAULT", f"mode must be one of {list(FAULT_MODES)}")
        default_status = 429 if mode == "rate_limit_storm" else (None if body.get("delay") else 503)
        status = body.get("status", default_status)
        if status is not None and (not isinstance(status, int) or not 100 <= status <= 599):
            raise bad_request("INVALID_FAULT", "status must be an HTTP status code or null")
        duration = body.get("duration")
        count = body.get("count", None if duration is not None else 1)
        if count is not None and (not isinstance(count, int) or count < 1):
            raise bad_request("INVALID_FAULT", "count must be a positive integer or null")
        for name in ("delay", "retry_after", "duration"):
            value = body.get(name)
            if value is not None and (not is_number(value) or value < 0):
                raise bad_request("INVALID_FAULT", f"{name} must be a non-negative number")
        if count is None and duration is None:
            raise bad_request("INVALID_FAULT", "give count or duration")
        phase = body.get("phase", "before")
        if phase not in ("before", "after"):
            raise bad_request("INVALID_FAULT", "phase must be 'before' or 'after'")
        method = body.get("method")
        return cls(
            id=ident,
            mode=mode,
            status=status,
            count=count,
            path_prefix=str(body.get("path_prefix") or "/"),
            method=method.upper() if isinstance(method, str) else None,
            delay=float(body.get("delay") or 0.0),
            phase=phase,
            retry_after=body.get("retry_after", 1 if mode == "rate_limit_storm" else None),
            until=None if duration is None else time.monotonic() + float(duration),
        )


# --------------------------------------------------------------------------------------------
# webhook signing and delivery

STANDARD_WEBHOOKS = "standard-webhooks"
STRIPE = "stripe"


def sign_standard_webhook(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,<base64 HMAC-SHA256>``.

    The key is the base64-decoded secret without its ``whsec_`` prefix; the signed content is
    ``{msg_id}.{timestamp}.{body}``.
    """
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign_stripe_webhook(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Stripe-Signature`` header value: ``t=<ts>,v1=<hex HMAC-SHA256 of "{t}.{body}">``.

    Stripe keys the HMAC with the whole secret string (``whsec_...``) as bytes.
    """
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class WebhookSender:
    """Signs and POSTs webhooks from one background thread, in order, with retries.

    Each `send` records a delivery ``{id, webhook_id, type, url, status, attempts, payload}``
    (status ``pending`` | ``delivered`` | ``failed`` | ``no_target`` | ``cancelled``). An attempt
    fails on a network error or a non-2xx answer; after `max_attempts` the delivery is ``failed``.
    A retry is re-signed with a fresh timestamp but keeps the webhook id.
    """

    def __init__(
        self,
        *,
        scheme: str,
        secret: str,
        url: str | None = None,
        max_attempts: int = 4,
        backoff: Iterable[float] = (0.05, 0.25, 1.0),
        timeout: float = 5.0,
        user_agent: str = "Syncline-Sandbox/1.0",
    ) -> None:
        if scheme not in (STANDARD_WEBHOOKS, STRIPE):
            raise ValueError(f"unknown webhook scheme {scheme!r}")
        if scheme == STANDARD_WEBHOOKS:
            base64.b64decode(secret.removeprefix("whsec_"), validate=True)  # fail fast
        self.scheme = scheme
        self.secret = secret
        self.url = url
        self.max_attempts = max(1, int(max_attempts))
        self.backoff = tuple(backoff) or (0.0,)
        self.timeout = timeout
        self.user_agent = user_agent
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queue: queue.Queue[JSON | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending = 0
        self._seq = 0
        self.deliveries: list[JSON] = []

    # -- configuration and inspection

    def configure(self, url: str | None = None, secret: str | None = None) -> None:
        with self._lock:
            if url is not None:
                self.url = url or None
            if secret is not None:
                if self.scheme == STANDARD_WEBHOOKS:
                    base64.b64decode(secret.removeprefix("whsec_"), validate=True)
                self.secret = secret

    def snapshot(self) -> JSON:
        with self._lock:
            return {
                "url": self.url,
                "scheme": self.scheme,
                "deliveries": copy.deepcopy(self.deliveries),
            }

    def clear(self) -> None:
        with self._lock:
            for delivery in self.deliveries:
                if delivery["status"] == "pending":
                    delivery["status"] = "cancelled"
            self.deliveries = []

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until every queued delivery has finished (delivered or failed)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    # -- sending

    def send(self, event_type: str, payload: Any, webhook_id: str) -> JSON:
        """Queue `payload` for delivery; returns the delivery record (a live dict)."""
        body = dumps(payload)
        with self._lock:
            self._seq += 1
            delivery: JSON = {
                "id": f"dlv_{self._seq}",
                "webhook_id": webhook_id,
                "type": event_type,
                "url": self.url,
                "status": "pending" if self.url else "no_target",
                "attempts": [],
                "payload": json.loads(body),
                "created_at": iso_now(),
            }
            self.deliveries.append(delivery)
            if not self.url:
                return delivery
            self._pending += 1
            self._ensure_thread()
        self._queue.put({"delivery": delivery, "body": body})
        return delivery

    def redeliver(self, delivery_id: str) -> JSON:
        """Send a recorded delivery again: same webhook id and body (a duplicate delivery)."""
        with self._lock:
            old = next((d for d in self.deliveries if d["id"] == delivery_id), None)
        if old is None:
            raise not_found("delivery", delivery_id)
        return self.send(old["type"], old["payload"], old["webhook_id"])

    def _ensure_thread(self) -> None:
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(
                target=self._run, name=f"webhooks-{self.user_agent}", daemon=True
            )
            self._thread.start()

    def _headers(self, webhook_id: str, body: bytes) -> dict[str, str]:
        ts = int(time.time())
        headers = {"content-type": "application/json", "user-agent": self.user_agent}
        if self.scheme == STANDARD_WEBHOOKS:
            headers["webhook-id"] = webhook_id
            headers["webhook-timestamp"] = str(ts)
            headers["webhook-signature"] = sign_standard_webhook(self.secret, webhook_id, ts, body)
        else:
            headers["stripe-signature"] = sign_stripe_webhook(self.secret, ts, body)
        return headers

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            while True:
                job = self._queue.get()
                if job is None:
                    break
                try:
                    self._deliver(client, job["delivery"], job["body"])
                finally:
                    with self._idle:
                        self._pending -= 1
                        self._idle.notify_all()

    def _deliver(self, client: httpx.Client, delivery: JSON, body: bytes) -> None:
        for attempt in range(1, self.max_attempts + 1):
            if self._stop.is_set() or delivery["status"] == "cancelled":
                delivery["status"] = "cancelled"
                return
            with self._lock:
                url, headers = delivery["url"], self._headers(delivery["webhook_id"], body)
            record: JSON = {"attempt": attempt, "at": iso_now(), "status_code": None}
            started = time.monotonic()
            try:
                response = client.post(url, content=body, headers=headers)
                record["status_code"] = response.status_code
                ok = 200 <= response.status_code < 300
                if not ok:
                    record["error"] = response.text[:200]
            except httpx.HTTPError as exc:
                ok = False
                record["error"] = f"{type(exc).__name__}: {exc}"[:200]
            record["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
            with self._lock:
                delivery["attempts"].append(record)
                if ok:
                    delivery["status"] = "delivered"
                    return
            if attempt < self.max_attempts:
                delay = self.backoff[min(attempt - 1, len(self.backoff) - 1)]
                if self._stop.wait(delay):
                    break
        with self._lock:
            delivery["status"] = "cancelled" if self._stop.is_set() else "failed"

    def close(self, timeout: float = 5.0) -> None:
        """Stop the delivery thread (pending deliveries are cancelled)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            # drain what was never started, then wake the worker
            with contextlib.suppress(queue.Empty):
                while True:
                    job = self._queue.get_nowait()
                    if job is not None:
                        job["delivery"]["status"] = "cancelled"
                        with self._idle:
                            self._pending -= 1
                            self._idle.notify_all()
            self._queue.put(None)
            thread.join(timeout)
            self._thread = None


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


# --------------------------------------------------------------------------------------------
# running servers


class ServerThread:
    """An ASGI app served by uvicorn on a real socket, in a background thread.

    ``with ServerThread(app) as server: httpx.get(server.url + "/...")``. Port 0 picks a free port;
    the socket is bound before the thread starts, so `url` is known at once.
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        on_stop: Callable[[], None] | None = None,
        name: str = "sandbox",
    ) -> None:
        self.app = app
        self.host = host
        self.requested_port = port
        self.on_stop = on_stop
        self.name = name
        self.port: int | None = None
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> str:
        if self._thread is not None:
            return self.url
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.requested_port))
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            lifespan="off",
            ws="none",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=1,
            timeout_keep_alive=5,
        )
        self._server = server = uvicorn.Server(config)

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                self._error = exc

        self._thread = threading.Thread(target=run, name=f"sandbox-{self.name}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} server failed to start: {self._error!r}")
            time.sleep(0.005)
        return self.url

    def request_stop(self) -> None:
        """Ask the server to shut down without waiting (`stop` waits)."""
        if self._server is not None:
            self._server.should_exit = True

    def stop(self, timeout: float = 10.0) -> None:
        server, thread = self._server, self._thread
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(timeout)
            if thread.is_alive():
                server.force_exit = True
                thread.join(timeout)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None
        if self.on_stop is not None:
            on_stop, self.on_stop = self.on_stop, None
            on_stop()

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_standalone(
    factory: Callable[..., SandboxSystem], default_port: int, argv: list[str] | None = None
) -> None:
    """``python -m engine.sandbox.<system> [--host H] [--port P] [--webhook-url URL] ...``."""
    system_name = getattr(factory, "name", "sandbox")
    parser = argparse.ArgumentParser(
        prog=f"python -m engine.sandbox.{system_name}",
        description=f"Run the {system_name} sandbox system.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--webhook-url", default=os.environ.get("SANDBOX_WEBHOOK_URL"))
    parser.add_argument("--webhook-secret", default=os.environ.get("SANDBOX_WEBHOOK_SECRET"))
    parser.add_argument("--auth-token", default=os.environ.get("SANDBOX_AUTH_TOKEN"))
    parser.add_argument(
        "--rate-limit",
        metavar="PER_SECOND[:BURST]",
        help="token bucket, e.g. 20:40; 'off' disables",
    )
    args = parser.parse_args(argv)
    overrides: JSON = {}
    if args.webhook_url:
        overrides["webhook_url"] = args.webhook_url
    if args.webhook_secret:
        overrides["webhook_secret"] = args.webhook_secret
    if args.auth_token:
        overrides["auth_token"] = args.auth_token
    if args.rate_limit:
        overrides["rate_limit"] = parse_rate_limit(args.rate_limit)
    system = factory(**overrides)
    try:
        uvicorn.run(system.app, host=args.host, port=args.port, ws="none", lifespan="off")
    finally:
        system.close()


def parse_rate_limit(text: str) -> tuple[float, int] | None:
    if text.lower() in ("off", "none", "0"):
        return None
    per_second, _, burst = text.partition(":")
    rate = float(per_second)
    return (rate, int(burst) if burst else max(1, int(rate)))
