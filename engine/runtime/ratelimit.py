"""An outbound token bucket: `perSecond` tokens refill continuously up to `burst`.

One bucket is shared by every run that calls a System. `acquire` reserves a token at once and
sleeps until the reserved token exists, so callers are served in the order they asked (FIFO) and
nobody polls: the bucket's balance may go negative, and each waiter sleeps for exactly the debt
that was ahead of it. A cancelled waiter gives its token back (the next arrival may use it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    """`per_second` requests per second on average, with bursts of up to `burst` at once."""

    def __init__(
        self, per_second: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if per_second <= 0 or burst < 1:
            raise ValueError("a token bucket needs per_second > 0 and burst >= 1")
        self.per_second = float(per_second)
        self.burst = int(burst)
        self._clock = clock
        self._tokens = float(burst)  # may go negative: tokens promised to sleeping waiters
        self._updated = clock()

    def __repr__(self) -> str:
        return f"TokenBucket(per_second={self.per_second:g}, burst={self.burst})"

    def delay(self) -> float:
        """Seconds a caller arriving now would wait for its token (0.0 when one is free)."""
        self._refill()
        return max(0.0, (1.0 - self._tokens) / self.per_second)

    async def acquire(self) -> None:
        """Take one token, waiting (in arrival order, without polling) until it is available."""
        wait = self._reserve()
        if wait <= 0:
            return
        try:
            await asyncio.sleep(wait)
        except asyncio.CancelledError:
            self._tokens += 1.0
            raise

    def _reserve(self) -> float:
        wait = self.delay()
        self._tokens -= 1.0
        return wait

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.per_second)
        self._updated = now
