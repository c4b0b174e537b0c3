"""How calls authenticate: a System's `auth` as headers (bearer, basic, header), or for
`auth: {type: oauth2, tokenUrl, clientId, clientSecret, scope}` the OAuth 2.0 client
credentials grant (RFC 6749 section 4.4) as an httpx auth flow.

One token per System, shared by every run: fetched on first use, cached, fetched again shortly
before it expires (a tenth of its lifetime, at least 5 s and at most 60 s early), and once more
when the System answers 401 to a request made with it (the token was revoked or rotated); a second
401 is the System's answer. Concurrent requests wait for one token request. The client
authenticates with HTTP Basic (the method every server must support). A failing token endpoint is
a `CallError` like a failing call: 5xx, 429 and network failures are retryable, other statuses
not; neither the secret nor a token appears in its message.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from typing import Any

import httpx

from engine.compiler.compiled import CompiledSystem
from engine.compiler.interpolate import resolve_secrets
from engine.errors import CallError, UsageError
from engine.tls import tls_context


class ClientCredentials(httpx.Auth):
    """Bearer tokens from a token endpoint, cached until shortly before they expire."""

    def __init__(self, system: str, token_url: str, client_id: str, client_secret: str,
                 scope: str | None = None, *, timeout: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.system, self.token_url, self.scope = system, token_url, scope
        self._credentials = httpx.BasicAuth(client_id, client_secret)
        self._timeout, self._transport, self._clock = timeout, transport, clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()
        self.fetched = 0   # token requests made (for tests and diagnostics)

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, Any, None]:
        raise RuntimeError("oauth2 client credentials are only for the async client")

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            token = await self.token(stale=token)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    async def token(self, stale: str | None = None) -> str:
        """The cached token, or a new one when it is due for refresh or is `stale` (rejected)."""
        async with self._lock:
            due = self._token is None or self._clock() >= self._refresh_at
            if due or (stale is not None and stale == self._token):
                await self._fetch()
            assert self._token is not None
            return self._token

    async def _fetch(self) -> None:
        form = {"grant_type": "client_credentials", **({"scope": self.scope} if self.scope else {})}
        started = self._clock()
        try:
            async with httpx.AsyncClient(
                timeout=self._timeout, transport=self._transport, verify=tls_context()
            ) as c:
                response = await c.post(self.token_url, data=form, auth=self._credentials,
                                        headers={"Accept": "application/json"})
        except httpx.TimeoutException as exc:
            raise self._error("timed out", kind="timeout", retryable=True) from exc
        except httpx.RequestError as exc:
            raise self._error(f"failed: {type(exc).__name__}", kind="network",
                              retryable=True) from exc
        self.fetched += 1
        if response.status_code != 200:
            status = response.status_code
            raise self._error(f"-> {status}", status=status,
                              retryable=status == 429 or status >= 500)
        try:
            body = response.json()
            token, lifetime = str(body["access_token"]), float(body.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError) as exc:
            raise self._error("answered without access_token", status=response.status_code,
                              retryable=False) from exc
        self._token = token
        self._refresh_at = started + lifetime - min(60.0, max(5.0, lifetime / 10))

    def _error(self, what: str, *, kind: str = "status", status: int | None = None,
               retryable: bool) -> CallError:
        return CallError(f"{self.system} oauth2 token request to {self.token_url} {what}",
                         status=status, kind=kind, retryable=retryable)


def auth_headers(system: CompiledSystem, secrets: Mapping[str, str]) -> dict[str, str]:
    """The headers every call to the System carries (none for oauth2: see `oauth2_flow`);
    `UsageError` when its auth type lacks a field."""
    auth = system.auth
    needed = _AUTH_FIELDS[auth.type]
    absent = [name for name in needed if getattr(auth, name) is None]
    if absent:
        raise UsageError(
            f"system '{system.name}': auth type '{auth.type}' needs "
            f"{', '.join(repr(a) for a in absent)}"
        )
    values = [resolve_secrets(getattr(auth, name), secrets) for name in needed]
    return _AUTH_BUILDERS[auth.type](*values)


def oauth2_flow(system: CompiledSystem, secrets: Mapping[str, str],
                transport: httpx.AsyncBaseTransport | None = None) -> ClientCredentials | None:
    """The client-credentials flow of an oauth2 System (its token cached per channel); token
    requests go through `transport` when one replaces the network (stubs, tests)."""
    auth = system.auth
    if auth.type != "oauth2":
        return None
    url, client_id, secret = (resolve_secrets(value or "", secrets)
                              for value in (auth.token_url, auth.client_id, auth.client_secret))
    scope = resolve_secrets(auth.scope, secrets) if auth.scope else None
    return ClientCredentials(system.name, url, client_id, secret, scope, timeout=system.timeout,
                             transport=transport)


def _basic(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


_AUTH_FIELDS: dict[str, tuple[str, ...]] = {
    "bearer": ("token",),
    "basic": ("username", "password"),
    "header": ("header", "value"),
    "oauth2": ("token_url", "client_id", "client_secret"),
    "none": (),
}
_AUTH_BUILDERS: dict[str, Callable[..., dict[str, str]]] = {
    "bearer": lambda token: {"Authorization": f"Bearer {token}"},
    "basic": _basic,
    "header": lambda header, value: {header: value},
    "oauth2": lambda *credentials: {},  # a token per request: ClientCredentials
    "none": lambda: {},
}
