"""Raw ASGI helpers for the hot paths: read a body once with a size limit, answer JSON, and the
one error type every handler raises (`Problem`), rendered as `{"error": {"code", "message"}}`."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

JSON_HEADERS = ((b"content-type", b"application/json"),)


class Problem(Exception):
    """An HTTP error answer: status, a stable code, a message for humans, optional extras."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)
_ASCII_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


def dumps(value: Any) -> bytes:
    """Compact JSON; values JSON cannot hold (bytes, datetimes) become strings. (orjson, ten
    times faster; the standard encoder for what orjson refuses, such as integers past 64 bits.)"""
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        pass
    try:
        return _ENCODER.encode(value).encode()
    except UnicodeEncodeError:  # a lone surrogate stored before ingest refused them: \ud800
        return _ASCII_ENCODER.encode(value).encode()


async def send_json(
    send: Send, status: int, value: Any, headers: Iterable[tuple[str, str]] = ()
) -> None:
    """Answer with `value` as JSON."""
    body = dumps(value)
    raw = [*JSON_HEADERS, (b"content-length", b"%d" % len(body))]
    for name, text in headers:
        raw.append((name.lower().encode("latin-1"), text.encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def send_problem(send: Send, problem: Problem) -> None:
    await send_json(send, problem.status, problem.body(), problem.headers.items())


def header_dict(scope: Scope) -> dict[str, str]:
    """Request headers by lower-case name (the last one wins for repeated names)."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


async def read_body(receive: Receive, limit: int, content_length: str | None) -> bytes:
    """The whole body, read once. Past `limit` bytes it stops reading and raises 413, whether the
    client announced the size (Content-Length) or streams it (chunked). (A body that stalls is
    the protocol's to end: `protocol.py` closes the connection, and this raises ClientGone.)"""
    if content_length is not None:
        if not content_length.isdigit():
            raise Problem(400, "bad_request", "Content-Length is not a number")
        if int(content_length) > limit:
            raise too_large(limit)
    return await _read_chunks(receive, limit)


async def _read_chunks(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def too_large(limit: int) -> Problem:
    return Problem(413, "body_too_large", f"request body exceeds {limit} bytes")


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json(content_type: str | None) -> bool:
    media = media_type(content_type)
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def is_loopback(scope: Scope) -> bool:
    """Whether the client's address is a loopback one (127.0.0.0/8, ::1)."""
    client = scope.get("client")
    if not client:
        return False
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False


MAX_LIMIT = 500  # the most items a listing answers at once


def limit_of(params: Any, default: int = 50) -> int:
    """A listing's `limit` query parameter: an integer from 1 to MAX_LIMIT, else 400."""
    try:
        limit = int(params.get("limit", str(default)))
    except ValueError:
        raise Problem(400, "bad_request", "limit must be an integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise Problem(400, "bad_request", f"limit must be between 1 and {MAX_LIMIT}")
    return limit
