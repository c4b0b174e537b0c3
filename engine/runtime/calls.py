"""Outbound HTTP calls to Systems: one pooled client per System, rate limited, traced, idempotent.

`Calls(systems, secrets)` opens one keep-alive `httpx.AsyncClient` per System (keyed by name and
version), with the System's base URL, auth and headers and its `${secret.X}` placeholders resolved
once. `send(request, timeout=...)` waits for the System's rate limit, sends the request and returns
a `Response` for 2xx or raises `CallError`:

    timeout (httpx timeout or the per-attempt limit)   kind="timeout", retryable=True
    any other transport failure (refused, reset, ...)   kind="network", retryable=True
    HTTP status outside 2xx                             kind="status", status, body, headers,
                                                        retry_after; retryable for 429 and 5xx

A `Gates` given to `Calls` holds calls back (CallHeld) while a System is paused or its circuit
is open, and hears every outcome. `retryable` is a hint: `engine.runtime.retry.decide` applies
the RetryPolicy. Every request carries `X-Correlation-ID` and a W3C `traceparent` (with tracing
on, that of the attempt's own span: `engine.runtime.tracing`); writes carry the System's
idempotency header. Every attempt ends in a log event (`call.completed` / `call.failed`). Secret
values never appear in an exception message or repr: error bodies and headers have them replaced
by `[redacted]`, and `describe` (the request as lineage records it) leaves auth headers out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from engine.compiler.compiled import CompiledSystem
from engine.compiler.interpolate import resolve_secrets, secret_refs
from engine.compiler.records import Auth
from engine.errors import CallError, UsageError
from engine.model.system import WRITE_METHODS
from engine.runtime.auth import auth_headers, oauth2_flow
from engine.runtime.gates import Gates
from engine.runtime.logevents import call_ended
from engine.runtime.ratelimit import TokenBucket
from engine.runtime.tracing import Tracing
from engine.runtime.transport import CONNECTIONS, system_transport
from engine.runtime.wire import make_traceparent, parse_retry_after

CORRELATION_HEADER = "X-Correlation-ID"
TRACEPARENT_HEADER = "traceparent"
USER_AGENT = "syncline"
REDACTED = "[redacted]"
_MIN_REDACT_LEN = 6  # shorter secret values would mangle bodies more than they hide
AUTH_HEADERS = frozenset({"authorization", "proxy-authorization"})  # never recorded


@dataclass(frozen=True)
class OutboundRequest:
    """One call to a System's operation, with every expression already evaluated."""

    system: CompiledSystem
    operation: str
    method: str
    path: str  # filled, e.g. "/sales-orders/SO1/cancel"; URL = base_url + path
    query: Mapping[str, Any]
    headers: Mapping[str, str]  # the step's own headers (the System's are added by the client)
    body: Any  # JSON-serialisable, or None for no body
    idempotency_key: str | None  # sent in system.idempotency_header on writes
    correlation_id: str
    traceparent: str | None  # None: a new span of the correlation id's trace
    is_write: bool | None = None  # None: POST, PUT, PATCH and DELETE write (Operation.is_write)
    route: Mapping[str, Any] | None = None  # a routed call: {by, value, system} it took
    template: str | None = None  # the operation's path with its {placeholders} (span names)
    run_id: str | None = None  # the run calling (logs and spans)
    params: Mapping[str, Any] = field(default_factory=dict)  # the path params, evaluated

    @property
    def url(self) -> str:
        """The absolute URL without the query string."""
        return self.system.base_url.rstrip("/") + "/" + self.path.lstrip("/")

    @property
    def writes(self) -> bool:
        """Whether the call changes something downstream (and so carries the idempotency key)."""
        return self.is_write if self.is_write is not None else self.method in WRITE_METHODS


@dataclass(frozen=True)
class Response:
    """A 2xx answer."""

    status: int
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON for JSON content types, else text; None if empty


@dataclass(frozen=True)
class _Channel:
    """What `send` needs for one System, prepared once."""

    client: httpx.AsyncClient
    bucket: TokenBucket | None
    redact: tuple[str, ...]


class Calls:
    """The outbound side of the runtime: one pooled client and rate limiter per System.

    Create one per set of Systems (a plan) and share it among all runs, so the rate limit and the
    connection pool are shared too; close it with `aclose` (or `async with`). `transport` replaces
    the network for every System (e.g. `httpx.MockTransport`); else each System gets `connections`
    keep-alive connections (a `KeepAliveTransport`; the Runtime passes its concurrency). Raises
    `UsageError` naming every secret a System's auth or headers need that `secrets` lacks.
    """

    def __init__(
        self,
        systems: Iterable[CompiledSystem],
        secrets: Mapping[str, str],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        connections: int = CONNECTIONS,
        on_call: Callable[[str, str, str, float], None] | None = None,
        gates: Gates | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        systems = list(systems)
        self._on_call = on_call  # metrics: (system, operation, outcome, seconds) per attempt
        self.gates = gates
        self.tracing = tracing  # a span per attempt sent, its context as the `traceparent`
        # stubbed answers (flow tests): await a shadow within its own timeout (runtime.shadow)
        self.patient_shadows = bool(getattr(transport, "patient_shadows", False))
        require_secrets(_names(systems, _outbound_texts), secrets)
        self._channels = {
            _key(s): _open_channel(
                s, secrets, transport or system_transport(s, connections), transport
            )
            for s in systems
        }
        self._shadows: dict[tuple[str, int], _Channel] = {}  # a candidate's own pool, lazily

        def open_shadow(system: CompiledSystem) -> _Channel:
            own = transport or system_transport(system, connections)
            return _open_channel(system, secrets, own, transport)

        self._open_shadow = open_shadow

    def __repr__(self) -> str:
        return f"Calls(systems={sorted(f'{name}@{version}' for name, version in self._channels)})"

    async def __aenter__(self) -> Calls:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def send(self, request: OutboundRequest, *, timeout: float, shadow: bool = False,
                   before: Callable[[], Awaitable[None]] | None = None) -> Response:
        """Send one attempt; `timeout` bounds the whole exchange (rate-limit wait excluded).
        A `shadow` request goes through the System's own shadow connection pool (sharing its
        rate limit), so a slow candidate never holds the connections its primary calls need.
        With `gates`, a (primary) call to a paused System or one whose circuit is open raises
        CallHeld and sends nothing, and every outcome feeds the System's circuit breaker.
        `before` runs once the call is let through, just before it is sent (echo fingerprints)."""
        gates = None if shadow else self.gates
        probe = False if gates is None else await gates.admit(request.system)
        if before is not None:
            await before()
        if gates is None and self._on_call is None:
            return await self._send(request, timeout, shadow)
        started, outcome, status = time.perf_counter(), "ok", None
        try:
            response = await self._send(request, timeout, shadow)
            status = response.status
        except CallError as exc:
            status = exc.status
            outcome = exc.kind if status is None else _status_class(status)
            if gates is not None:
                await gates.record(request.system, exc, probe)
            raise
        finally:
            seconds = time.perf_counter() - started
            if self._on_call is not None:
                self._on_call(request.system.name, request.operation, outcome, seconds)
            call_ended(request, outcome, status, seconds)
        if gates is not None:
            await gates.record(request.system, None, probe)
        return response

    async def _send(self, request: OutboundRequest, timeout: float, shadow: bool) -> Response:
        if self.tracing is None:
            return await self._exchange(request, timeout, shadow)
        with self.tracing.call(request) as span:
            request = dataclasses.replace(request, traceparent=span.traceparent)
            try:
                response = await self._exchange(request, timeout, shadow)
            except CallError as exc:
                span.answered(exc.status, exc.kind if exc.status is None else str(exc.status))
                raise
            span.answered(response.status)
            return response

    async def _exchange(self, request: OutboundRequest, timeout: float, shadow: bool) -> Response:
        channel = self._shadow(request.system) if shadow else self._channel(request.system)
        if channel.bucket is not None:
            await channel.bucket.acquire()
        try:
            async with asyncio.timeout(timeout):
                response = await _request(channel.client, request, timeout)
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise CallError(
                f"{_label(request)} timed out after {timeout:g}s", kind="timeout", retryable=True
            ) from exc
        except httpx.RequestError as exc:
            raise CallError(
                f"{_label(request)} failed: {type(exc).__name__}: {exc}",
                kind="network",
                retryable=True,
            ) from exc
        if 200 <= response.status_code < 300:  # a target may echo credentials: redact them too
            headers = {k: _redacted(v, channel.redact) for k, v in response.headers.items()}
            return Response(response.status_code, headers, _body(response, channel.redact))
        raise _status_error(request, response, channel.redact)

    async def aclose(self) -> None:
        """Close every System's connection pool."""
        for channel in [*self._channels.values(), *self._shadows.values()]:
            await channel.client.aclose()

    def _shadow(self, system: CompiledSystem) -> _Channel:
        found = self._shadows.get(_key(system))
        if found is None:
            opened, primary = self._open_shadow(system), self._channel(system)
            if primary.client.auth is not None:  # one oauth2 token for both pools
                opened.client.auth = primary.client.auth
            found = self._shadows[_key(system)] = _Channel(
                opened.client, primary.bucket, opened.redact)
        return found

    def _channel(self, system: CompiledSystem) -> _Channel:
        try:
            return self._channels[_key(system)]
        except KeyError:
            ident = f"{system.name}@{system.version}"
            raise UsageError(f"system '{ident}' was not given to Calls") from None


def describe(request: OutboundRequest) -> dict[str, Any]:
    """The request as lineage records it: method, url, query, headers (no auth or secrets), body."""
    system = request.system
    public = {
        name: value
        for name, value in system.headers.items()
        if not secret_refs(value) and not _is_auth_header(system.auth, name)
    }
    return {
        "method": request.method,
        "url": request.url,
        "query": dict(request.query),
        "headers": {**public, **_request_headers(request)},
        "body": request.body,
        **({"route": dict(request.route)} if request.route is not None else {}),
    }


def secret_names(systems: Iterable[CompiledSystem]) -> set[str]:
    """The secrets the Systems refer to (auth, headers, webhooks)."""
    return _names(list(systems), _all_texts)


def require_secrets(needed: Iterable[str], secrets: Mapping[str, str]) -> None:
    """Refuse to start without secrets: UsageError naming every one of `needed` that `secrets`
    lacks, sorted (never a value)."""
    names = ", ".join(sorted(set(needed) - set(secrets)))
    if names:
        raise UsageError(
            f"missing secrets: {names} (set SYNCLINE_SECRET_<NAME> or pass --secrets FILE)"
        )


# --- building clients --------------------------------------------------------------------------


def _key(system: CompiledSystem) -> tuple[str, int]:
    return system.name, system.version


def _open_channel(
    system: CompiledSystem,
    secrets: Mapping[str, str],
    transport: httpx.AsyncBaseTransport,
    replaced: httpx.AsyncBaseTransport | None = None,  # the transport standing in for the network
) -> _Channel:
    auth = auth_headers(system, secrets)
    headers = {name: resolve_secrets(value, secrets) for name, value in system.headers.items()}
    client = httpx.AsyncClient(
        base_url=system.base_url,
        headers={"User-Agent": USER_AGENT, **headers, **auth},
        transport=transport,
        timeout=system.timeout,
        auth=oauth2_flow(system, secrets, replaced),
    )
    limit = system.rate_limit
    bucket = (TokenBucket(limit.per_second, limit.burst)
              if limit is not None and limit.per_second is not None else None)
    return _Channel(client, bucket, _redactions(system, secrets, auth))


def _redactions(
    system: CompiledSystem, secrets: Mapping[str, str], auth: Mapping[str, str]
) -> tuple[str, ...]:
    """Secret values (and auth header values built from them), longest first."""
    names = {n for text in _outbound_texts(system) for n in secret_refs(text)}
    values = {secrets[n] for n in names} | set(auth.values())
    values |= {v.split(" ", 1)[1] for v in auth.values() if " " in v}  # "Basic <b64>"
    return tuple(sorted((v for v in values if len(v) >= _MIN_REDACT_LEN), key=len, reverse=True))


def _outbound_texts(system: CompiledSystem) -> list[str]:
    auth = [v for v in vars(system.auth).values() if isinstance(v, str)]
    return auth + list(system.headers.values())


def _all_texts(system: CompiledSystem) -> list[str]:
    webhook = system.webhooks.secret if system.webhooks is not None else None
    return _outbound_texts(system) + ([webhook] if webhook else [])


def _names(
    systems: list[CompiledSystem], texts: Callable[[CompiledSystem], list[str]]
) -> set[str]:
    return {n for s in systems for text in texts(s) for n in secret_refs(text)}


def _is_auth_header(auth: Auth, name: str) -> bool:
    lowered = name.lower()
    return lowered in AUTH_HEADERS or (auth.header is not None and lowered == auth.header.lower())


# --- one exchange ------------------------------------------------------------------------------


def _request_headers(request: OutboundRequest) -> dict[str, str]:
    """The step's headers plus correlation, trace and (on writes) idempotency headers."""
    ours = {
        CORRELATION_HEADER: request.correlation_id,
        TRACEPARENT_HEADER: request.traceparent
        or make_traceparent(request.correlation_id, uuid.uuid4().hex),
    }
    idem = request.system.idempotency_header
    if idem and request.idempotency_key is not None and request.writes:
        ours[idem] = request.idempotency_key
    taken = {name.lower() for name in ours}
    own = {k: v for k, v in request.headers.items() if k.lower() not in taken}
    return {**own, **ours}


async def _request(
    client: httpx.AsyncClient, request: OutboundRequest, timeout: float
) -> httpx.Response:
    query = {k: v for k, v in request.query.items() if v is not None}
    return await client.request(
        request.method,
        request.path,
        params=query or None,
        headers=_request_headers(request),
        json=request.body,
        timeout=timeout,
    )


def _status_error(
    request: OutboundRequest, response: httpx.Response, redact: tuple[str, ...]
) -> CallError:
    status = response.status_code
    headers = {k: _redacted(v, redact) for k, v in response.headers.items()}
    return CallError(
        f"{_label(request)} -> {status} {response.reason_phrase}".rstrip(),
        status=status,
        kind="status",
        retryable=status == 429 or status >= 500,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        body=_body(response, redact),
        headers=headers,
    )


def _status_class(status: int) -> str:
    """A status as a calls_total outcome: 429 on its own (throttled), else its class."""
    return "429" if status == 429 else f"{status // 100}xx"


def _label(request: OutboundRequest) -> str:
    return f"{request.system.name} {request.operation}: {request.method} {request.path}"


def _body(response: httpx.Response, redact: tuple[str, ...]) -> Any:
    text = _redacted(response.text, redact)
    if not text:
        return None
    ctype = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype == "application/json" or ctype.endswith("+json"):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _redacted(text: str, redact: tuple[str, ...]) -> str:
    for value in redact:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


