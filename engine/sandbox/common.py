"""Shared machinery of the sandbox systems: errors and replies, and small helpers (this module);
rate limits and faults (`limits`), signed webhooks (`webhooks`), the base system (`system`), its
request pipeline (`pipeline`) and control endpoints (`control`), running servers (`serving`).

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

import collections
import datetime as dt
import json
import logging
import math
import random
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

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
