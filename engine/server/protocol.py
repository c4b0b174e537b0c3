"""The HTTP/1.1 protocol the server speaks: uvicorn's httptools protocol with bounds on what a
client may make it hold before a request reaches the application.

- The request line and headers together are limited (`MAX_HEAD_BYTES`): past it the answer is
  431 and the connection closes, before the parser has buffered more than one read beyond it
  (uvicorn has no such limit with httptools; one 64 MiB header line was buffered whole).
- A request (head and body) must arrive within `request_timeout` seconds of its first byte
  (ServerConfig's head_timeout + body_timeout); a connection that stalls is closed (slowloris),
  and the application, waiting for the body, sees the client gone and frees its admission slot.
  No timer per request: each connection notes when its request began, and one sweep per event
  loop (every quarter of the timeout) closes those past it; the application's hot path has no
  deadline machinery.
- A connection closed while the client is still sending the body of a request answered early
  (413, 401, 415 to a client that said `Connection: close`) lingers: what arrives is discarded
  until the client pauses (`LINGER_IDLE`), stops, or sends `LINGER_BYTES` (at most
  `LINGER_SECONDS`), so the client reads the answer instead of a connection reset.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["MAX_HEAD_BYTES", "REQUEST_TIMEOUT", "BoundedHttpToolsProtocol", "uvicorn_options"]

MAX_HEAD_BYTES = 64 * 1024
REQUEST_TIMEOUT = 20.0  # the default of ServerConfig.head_timeout + body_timeout
LINGER_BYTES = 16 * 1024 * 1024
LINGER_IDLE = 0.5
LINGER_SECONDS = 10.0


class _LingeringTransport:
    """The real transport, except that `close()` while a request body is still arriving lingers
    (see the module docstring), and that what is written in one turn of the event loop goes out
    in one write at its end: uvicorn writes a response's head and body separately, and a write
    is a system call (with a 202 answered per request, that was two of them)."""

    def __init__(self, transport: asyncio.Transport, protocol: BoundedHttpToolsProtocol) -> None:
        self._transport, self._protocol, self._closing = transport, protocol, False
        self._pending: list[bytes] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            asyncio.get_running_loop().call_soon(self._flush)
        else:
            self._pending.append(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def is_closing(self) -> bool:
        return self._closing or self._transport.is_closing()

    def close(self) -> None:
        if self._closing:
            return
        self._flush()
        self._closing = True
        if self._protocol.body_pending():
            self._protocol.linger()
        else:
            self._transport.close()

    def close_now(self) -> None:
        self._flush()
        self._closing = True
        self._transport.close()


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that refuses oversized heads (431) and closes stalled ones."""

    request_timeout = REQUEST_TIMEOUT
    _head_bytes = 0
    _in_head = True        # until a request's headers are complete, and again after it ends
    _began: float | None = None  # the loop time of the current request's first bytes
    _lingering: tuple[_LingeringTransport, float] | None = None   # (transport, deadline)
    _linger_left = 0
    _linger_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_LingeringTransport(transport, self))  # type: ignore[arg-type]
        self._sweep = _Sweep.of(self.loop, self.request_timeout)
        self._sweep.connections.add(self)

    def body_pending(self) -> bool:
        """Whether the current request's body is still arriving."""
        return not self._in_head

    def linger(self) -> None:
        transport = self.transport
        assert isinstance(transport, _LingeringTransport)
        self._lingering = transport, asyncio.get_running_loop().time() + LINGER_SECONDS
        self._linger_left = LINGER_BYTES
        transport.resume_reading()
        self._linger_again()

    def _linger_again(self) -> None:
        assert self._lingering is not None
        transport, deadline = self._lingering
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        loop = asyncio.get_running_loop()
        wait = min(LINGER_IDLE, deadline - loop.time())
        self._linger_timer = loop.call_later(max(wait, 0), transport.close_now)

    def data_received(self, data: bytes) -> None:
        if self._lingering is not None:    # an answered request's body: discarded
            self._linger_left -= len(data)
            if self._linger_left < 0:
                self._lingering[0].close_now()
            else:
                self._linger_again()
            return
        if self._in_head:
            if self._began is None:   # the first bytes of a request
                self._began = self.loop.time()
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self._refuse_head()

    def on_headers_complete(self) -> None:
        self._in_head = False            # the request's timer runs on until its body is in
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._end_head()
        self._in_head, self._head_bytes = True, 0

    def connection_lost(self, exc: Exception | None) -> None:
        self._sweep.leave(self)
        self._end_head()
        self._in_head = True    # nothing arrives any more: closing must not linger
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        super().connection_lost(exc)

    def _end_head(self) -> None:
        self._in_head = False
        self._began = None

    def stalled(self, now: float) -> bool:
        """Close the connection if its request began more than `request_timeout` ago."""
        if self._began is None or now - self._began < self.request_timeout:
            return False
        self._began = None
        self._close_now()
        return True

    def _close_now(self) -> None:
        transport = self.transport
        assert isinstance(transport, _LingeringTransport)
        transport.close_now()

    def _refuse_head(self) -> None:
        self._end_head()
        message = b"request line and headers exceed %d bytes" % MAX_HEAD_BYTES
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(message), message))
        self._close_now()


class _Sweep:
    """The connections of one event loop (and request timeout), looked at every quarter of
    the timeout while any is open: one timer for them all instead of one per request."""

    _sweeps: dict[tuple[asyncio.AbstractEventLoop, float], _Sweep] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop, self.timeout = loop, timeout
        self.connections: set[BoundedHttpToolsProtocol] = set()
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop, timeout: float) -> _Sweep:
        sweep = cls._sweeps.get((loop, timeout))
        if sweep is None:
            sweep = cls._sweeps[(loop, timeout)] = cls(loop, timeout)
        if sweep._timer is None:
            sweep._timer = loop.call_later(timeout / 4, sweep._run)
        return sweep

    def leave(self, connection: BoundedHttpToolsProtocol) -> None:
        """`connection` is closed; with none left open, the sweep stops and is forgotten (the
        next connection starts another, and a closed loop is let go)."""
        self.connections.discard(connection)
        if not self.connections:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._sweeps.get((self.loop, self.timeout)) is self:
                del self._sweeps[(self.loop, self.timeout)]

    def _run(self) -> None:
        now = self.loop.time()
        for connection in [c for c in self.connections if c.stalled(now)]:
            self.connections.discard(connection)  # its connection_lost comes later
        self._timer = self.loop.call_later(self.timeout / 4, self._run)


def uvicorn_options(request_timeout: float = REQUEST_TIMEOUT) -> dict[str, Any]:
    """The uvicorn.Config options every Syncline server runs with."""
    protocol = type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,),
                    {"request_timeout": request_timeout})
    return {"http": protocol, "timeout_keep_alive": 5}
