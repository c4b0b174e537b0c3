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
the RetryPolicy. Every request carries
`X-Correlation-ID` and a W3C `traceparent`; writes carry the System's idempotency header. Secret
values never appear in an exception message or repr: error bodies and headers have them replaced
by `[redacted]`, and `describe` (the request as lineage records it) leaves auth headers out.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx

from engine.compiler.calls import PLACEHOLDER
from engine.compiler.compiled import CompiledSystem
from engine.compiler.interpolate import resolve_secrets, secret_refs
from engine.compiler.records import Auth
from engine.errors import CallError, ExecutionError, UsageError
from engine.model.system import WRITE_METHODS
from engine.runtime.auth import auth_headers, oauth2_flow
from engine.runtime.gates import Gates
from engine.runtime.ratelimit import TokenBucket

CORRELATION_HEADER = "X-Correlation-ID"
TRACEPARENT_HEADER = "traceparent"
USER_AGENT = "syncline"
REDACTED = "[redacted]"
# Connections per System: by default one for each run the Runtime executes at once, all kept
# alive between calls; an idle one is dropped after 5 s, before common server keep-alive timeouts
# (uvicorn: 5 s). Each is its own one-connection httpcore pool (see `KeepAliveTransport`).
CONNECTIONS = 32
KEEPALIVE_EXPIRY = 5.0
_MIN_REDACT_LEN = 6  # shorter secret values would mangle bodies more than they hide
_HEX32 = re.compile(r"[0-9a-f]{32}")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
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


class KeepAliveTransport(httpx.AsyncBaseTransport):
    """`connections` keep-alive HTTP connections to one System; a request takes a free one, or
    waits on the least busy one (the wait counts against its timeout).

    Each connection is a one-connection httpcore pool, and this class is the pool. httpcore 1.0's
    own pool does O(connections x queued requests) bookkeeping, with a poll() of every idle
    socket, on each request, and closes idle connections whenever it holds more than its
    keep-alive limit in all (encode/httpcore#1035): with 32 connections in one pool that was most
    of a call's CPU (the 3-call benchmark runs ~1.8x faster this way)."""

    def __init__(self, connections: int = CONNECTIONS, proxy: str | None = None) -> None:
        one = httpx.Limits(
            max_connections=1, max_keepalive_connections=1, keepalive_expiry=KEEPALIVE_EXPIRY
        )
        tls = httpx.create_ssl_context()  # loading CA certificates is slow: once per System
        self._pools = [
            httpx.AsyncHTTPTransport(verify=tls, limits=one, proxy=proxy)
            for _ in range(max(1, connections))
        ]
        count = len(self._pools)
        self._busy = [0] * count  # requests on each connection, until their response is closed

    def __repr__(self) -> str:
        return f"KeepAliveTransport(connections={len(self._pools)}, busy={sum(self._busy)})"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        busy = self._busy
        n = busy.index(min(busy))
        busy[n] += 1
        try:
            response = await self._pools[n].handle_async_request(request)
        except BaseException:
            busy[n] -= 1
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Releasing(response.stream, busy, n)
        return response

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


class _Releasing(httpx.AsyncByteStream):
    """A response body that marks its connection free again once it is closed."""

    def __init__(self, stream: httpx.AsyncByteStream, busy: list[int], n: int) -> None:
        self._stream, self._busy, self._n = stream, busy, n

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        if self._n >= 0:
            self._busy[self._n] -= 1
            self._n = -1
        await self._stream.aclose()


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
    ) -> None:
        systems = list(systems)
        self._on_call = on_call  # metrics: (system, operation, outcome, seconds) per attempt
        self.gates = gates
        require_secrets(_names(systems, _outbound_texts), secrets)
        self._channels = {
            _key(s): _open_channel(s, secrets, transport or _transport(s, connections), transport)
            for s in systems
        }
        self._shadows: dict[tuple[str, int], _Channel] = {}  # a candidate's own pool, lazily

        def open_shadow(system: CompiledSystem) -> _Channel:
            own = transport or _transport(system, connections)
            return _open_channel(system, secrets, own, transport)

        self._open_shadow = open_shadow

    def __repr__(self) -> str:
        return f"Calls(systems={sorted(f'{name}@{version}' for name, version in self._channels)})"

    async def __aenter__(self) -> Calls:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def send(
        self, request: OutboundRequest, *, timeout: float, shadow: bool = False
    ) -> Response:
        """Send one attempt; `timeout` bounds the whole exchange (rate-limit wait excluded).
        A `shadow` request goes through the System's own shadow connection pool (sharing its
        rate limit), so a slow candidate never holds the connections its primary calls need.
        With `gates`, a (primary) call to a paused System or one whose circuit is open raises
        CallHeld and sends nothing, and every outcome feeds the System's circuit breaker."""
        gates = None if shadow else self.gates
        if gates is None and self._on_call is None:
            return await self._send(request, timeout, shadow)
        probe = False if gates is None else await gates.admit(request.system)
        started, outcome = time.perf_counter(), "ok"
        try:
            response = await self._send(request, timeout, shadow)
        except CallError as exc:
            outcome = exc.kind if exc.status is None else _status_class(exc.status)
            if gates is not None:
                await gates.record(request.system, exc, probe)
            raise
        finally:
            if self._on_call is not None:
                self._on_call(request.system.name, request.operation, outcome,
                              time.perf_counter() - started)
        if gates is not None:
            await gates.record(request.system, None, probe)
        return response

    async def _send(self, request: OutboundRequest, timeout: float, shadow: bool) -> Response:
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


def fill_path(template: str, params: Mapping[str, Any]) -> str:
    """Fill `{name}` placeholders from `params`, each value URL-quoted (`/` is `%2F`, `?` `%3F`):
    a value changes neither host, path shape nor query; exactly `.` or `..` is refused."""

    def fill(match: re.Match[str]) -> str:
        value = params.get(match[1])
        if value is None:
            raise ExecutionError(f"path '{template}' needs a value for '{match[1]}'")
        text = json.dumps(value) if isinstance(value, bool) else str(value)
        if text in (".", ".."):
            raise ExecutionError(f"path '{template}': '{match[1]}' is {text!r}, which would "
                                 "climb the path (refused)")
        return quote(text, safe="")

    return PLACEHOLDER.sub(fill, template)


def idempotency_key(run_id: str, step_id: str, generation: int = 0) -> str:
    """A stable key for one step of one run: the same inputs always give the same 64 hex digits.

    Retries of an attempt reuse it; bump `generation` only when a step must really run anew.
    """
    return hashlib.sha256(json.dumps([run_id, step_id, generation]).encode()).hexdigest()


def make_traceparent(correlation_id: str, span_seed: str) -> str:
    """A W3C traceparent `00-<trace>-<span>-01`.

    The trace id is the correlation id itself when it is 32 hex digits (dashes of a UUID ignored)
    or a traceparent, else a hash of it; the span id is derived from the trace id and `span_seed`.
    """
    trace = _trace_id(correlation_id)
    span = hashlib.sha256(f"{trace}/{span_seed}".encode()).hexdigest()[:16]
    return f"00-{trace}-{span if span.strip('0') else '0' * 15 + '1'}-01"


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


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """A `Retry-After` value (delay-seconds or HTTP-date) -> seconds from `now`; None if invalid."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        return _seconds_until(text, time.time() if now is None else now)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


# --- building clients --------------------------------------------------------------------------


def _key(system: CompiledSystem) -> tuple[str, int]:
    return system.name, system.version


def _transport(system: CompiledSystem, connections: int) -> KeepAliveTransport:
    """The System's connections, through the proxy HTTP(S)_PROXY / ALL_PROXY name for its base
    URL unless NO_PROXY exempts its host (httpx reads these only for its own default transport)."""
    url = httpx.URL(system.base_url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy is not None and urllib.request.proxy_bypass(url.host):
        proxy = None
    return KeepAliveTransport(connections, proxy)


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
    bucket = TokenBucket(limit.per_second, limit.burst) if limit is not None else None
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


def _seconds_until(http_date: str, now: float) -> float | None:
    try:
        when = parsedate_to_datetime(http_date)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _trace_id(correlation_id: str) -> str:
    text = correlation_id.strip().lower()
    parent = _TRACEPARENT.fullmatch(text)
    candidate = parent[1] if parent else text.replace("-", "")
    if _HEX32.fullmatch(candidate) and candidate.strip("0"):
        return candidate
    return hashlib.sha256(correlation_id.encode()).hexdigest()[:32]
