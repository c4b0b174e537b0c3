"""The values a call puts on the wire, each derived the same way every time: a path with its
parameters filled in, the idempotency key of a step, a W3C traceparent; and the `Retry-After` a
System answers, read back."""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

from engine.compiler.calls import PLACEHOLDER
from engine.errors import ExecutionError

_HEX32 = re.compile(r"[0-9a-f]{32}")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")


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
