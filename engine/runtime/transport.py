"""The connections to one System: `KeepAliveTransport`, a pool of one-connection httpcore pools,
and `system_transport`, which picks the proxy the environment names for the System."""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator

import httpx

from engine.compiler.compiled import CompiledSystem
from engine.tls import tls_context

# Connections per System: by default one for each run the Runtime executes at once, all kept
# alive between calls; an idle one is dropped after 5 s, before common server keep-alive timeouts
# (uvicorn: 5 s). Each is its own one-connection httpcore pool (see `KeepAliveTransport`).
CONNECTIONS = 32
KEEPALIVE_EXPIRY = 5.0


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
        tls = tls_context()
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


def system_transport(system: CompiledSystem, connections: int) -> KeepAliveTransport:
    """The System's connections, through the proxy HTTP(S)_PROXY / ALL_PROXY name for its base
    URL unless NO_PROXY exempts its host (httpx reads these only for its own default transport)."""
    url = httpx.URL(system.base_url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy is not None and urllib.request.proxy_bypass(url.host):
        proxy = None
    return KeepAliveTransport(connections, proxy)
