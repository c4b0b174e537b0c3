"""Rate limiting (a token bucket) and faults on demand, as the sandbox systems apply them."""

from __future__ import annotations

import time
from dataclasses import dataclass

from engine.sandbox.common import JSON, bad_request, is_number

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


