"""What every ingest endpoint (webhooks, /events, process APIs) does before the runtime sees the
request: admission under a bound on pending work, the body read once with a limit, bounded JSON,
and the correlation id / traceparent taken from the headers."""

from __future__ import annotations

import codecs
import random
import re
from collections.abc import Mapping
from typing import Any

from starlette.types import Receive

from engine.errors import ExpressionError, StoreError, SynclineError
from engine.server.cloudevents import EventFormatError, json_loads_bounded
from engine.server.http import Problem, is_json, read_body, too_large
from engine.server.state import ServerState
from engine.store.base import ReceivedJSON

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_CORRELATION = re.compile(r"^[\x21-\x7e]{1,200}$")
_ZERO_TRACE = "0" * 32
_random_bits = random.Random().getrandbits


class admitted:  # noqa: N801 - used as `with admitted(state):`, like a contextmanager
    """Count one ingest request as pending; refuse it (503 + Retry-After) past the bound or
    while shutting down, so overload costs a quick answer instead of unbounded memory.
    (A class, not a generator: it runs on every ingest request.)"""

    __slots__ = ("state",)

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def __enter__(self) -> None:
        state = self.state
        if state.draining or state.pending >= state.config.max_pending:
            raise _refusal(state)
        state.pending += 1

    def __exit__(self, *exc_info: object) -> None:
        self.state.pending -= 1


def _refusal(state: ServerState) -> Problem:
    retry = {"Retry-After": str(state.config.retry_after)}
    if state.draining:
        return Problem(503, "shutting_down", "the server is shutting down", headers=retry)
    state.metrics.rejected.inc()
    return Problem(503, "overloaded", "too many requests in progress; retry later", headers=retry)


def require_json(headers: Mapping[str, str]) -> None:
    """415 unless the request says it carries JSON."""
    content_type = headers.get("content-type")
    if not is_json(content_type):
        raise Problem(
            415,
            "unsupported_media_type",
            f"expected Content-Type application/json, got {content_type or 'none'}",
        )


def check_length(state: ServerState, headers: Mapping[str, str]) -> None:
    """413 (or 400) at once for an announced Content-Length the body limit refuses."""
    announced = headers.get("content-length")
    if announced is not None:
        if not announced.isdigit():
            raise Problem(400, "bad_request", "Content-Length is not a number")
        if int(announced) > state.config.max_body:
            raise too_large(state.config.max_body)


async def read_raw(state: ServerState, headers: Mapping[str, str], receive: Receive) -> bytes:
    """The body, within the size limit (a stalled one: see `protocol.py`)."""
    return await read_body(receive, state.config.max_body, headers.get("content-length"))


def parse_json(state: ServerState, body: bytes) -> Any:
    """The body as JSON (nesting bounded), or 400 saying where it is broken. An object comes
    back as a `ReceivedJSON` holding the body's text, which the store keeps as it came."""
    if not body:
        raise Problem(400, "malformed_json", "request body is empty")
    try:
        data = json_loads_bounded(body, state.config.max_depth)
    except EventFormatError as exc:
        if exc.line is not None:
            raise Problem(400, exc.code, exc.message, line=exc.line, col=exc.col) from None
        raise Problem(400, exc.code, exc.message) from None
    if type(data) is dict:
        # Parsed, so valid UTF-8. (The utf-8-sig codec costs five times more than utf-8.)
        text = body[3:].decode() if body.startswith(codecs.BOM_UTF8) else body.decode()
        return ReceivedJSON(data, text)
    return data


def new_correlation_id() -> str:
    """A fresh correlation id (32 hex digits). Not a secret, so no system entropy is spent."""
    return f"{_random_bits(128):032x}"


def correlation(headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(correlation id, traceparent): X-Correlation-ID, else the trace id of a valid
    traceparent; an invalid traceparent is dropped rather than passed on."""
    traceparent = headers.get("traceparent", "").strip().lower() or None
    trace_id = None
    if traceparent is not None:
        match = _TRACEPARENT.match(traceparent)
        if match is None or match[1] == _ZERO_TRACE:
            traceparent = None
        else:
            trace_id = match[1]
    given = headers.get("x-correlation-id", "").strip()
    return (given if _CORRELATION.match(given) else trace_id), traceparent


def runtime_problem(exc: SynclineError) -> Problem:
    """Translate what the runtime raises while accepting into an HTTP answer."""
    if isinstance(exc, StoreError):
        return Problem(
            503,
            "store_unavailable",
            "the event could not be stored; retry later",
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, ExpressionError):
        return Problem(400, "invalid_payload", str(exc))
    return Problem(400, "rejected", str(exc))
