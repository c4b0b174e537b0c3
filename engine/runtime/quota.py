"""Shared call budgets of a System: `rateLimit: {perSecond, burst, perHour, perDay}`.

The token bucket (engine/runtime/ratelimit.py) smooths one process's calls to `perSecond`. The
budgets here are the store's (engine/store/quotas.py), so they hold across replicas and restarts:

- `perHour` and `perDay` always: a clock hour or UTC day has that many calls. One exhausted makes
  the call wait in the store (`CallHeld`, reason QUOTA) until the window ends: the run is
  `waiting`, no attempt is spent, nothing fails.
- `perSecond` too when replicas share the store (PostgreSQL): one token bucket in the store,
  refilled at that rate, that every replica draws from; an empty one makes the caller sleep
  until the tokens it asked for are there.

A process takes a slice at a time (a fifth of a second's rate; a hundredth of an hour's or a
day's budget, at most 50), so the hot path does not take a database round trip per call. Tokens
drawn from the bucket stay good until used, so nothing is wasted and the replicas together send
at most the rate, plus the slices in hand (a few calls a minute); a slice of an hour left over
when the hour ends is not used by anyone.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

from engine.compiler.compiled import CompiledSystem
from engine.errors import CallHeld
from engine.store.controls import QUOTA  # a run held until a window has calls again
from engine.store.quotas import QuotaLedger

PERIODS = {"second": 1.0, "hour": 3600.0, "day": 86400.0}


def budgets(system: CompiledSystem, shared: bool) -> list[tuple[str, int]]:
    """(period, calls) of the budgets the store keeps for `system`."""
    limit = system.rate_limit
    if limit is None:
        return []
    found = [("day", limit.per_day), ("hour", limit.per_hour)]
    return [(period, calls) for period, calls in found if calls]


def window(period: str, now: float) -> float:
    """When the window of `period` holding `now` began (hours and days in UTC)."""
    size = PERIODS[period]
    return math.floor(now / size) * size


class Quotas:
    """This process's slices of every System's budgets."""

    def __init__(self, ledger: QuotaLedger, clock: Callable[[], float], *, shared: bool,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.ledger = ledger
        self.clock = clock
        self.shared = shared
        self._sleep = sleep
        self._slices: dict[tuple[str, str], tuple[float, int]] = {}  # -> (window, calls left)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def take(self, system: CompiledSystem) -> None:
        """One call of each budget of `system`; raises CallHeld (QUOTA) past an hour's or a
        day's, waits for the shared per-second bucket."""
        for period, calls in budgets(system, self.shared):
            await self._take(system.name, period, calls)
        limit = system.rate_limit
        if self.shared and limit is not None and limit.per_second is not None:
            await self._draw(system.name, limit.per_second, limit.burst)

    async def _draw(self, name: str, rate: float, burst: int) -> None:
        key = (name, "second")
        lock = self._locks.get(key) or self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            held = self._slices.get(key)
            if held is not None and held[1] > 0:
                self._slices[key] = (0.0, held[1] - 1)
                return
            want = max(1, math.ceil(rate / 5))
            capacity = max(burst, rate, want)  # a second of stalls in the replicas loses nothing
            while wait := await self.ledger.draw(name, rate, capacity, want,
                                                 self.clock()):
                await self._sleep(wait)
            self._slices[key] = (0.0, want - 1)

    async def _take(self, name: str, period: str, calls: int) -> None:
        key = (name, period)
        lock = self._locks.get(key) or self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            now = self.clock()
            began = window(period, now)
            held = self._slices.get(key)
            if held is not None and held[0] == began and held[1] > 0:
                self._slices[key] = (began, held[1] - 1)
                return
            want = max(1, min(50, math.ceil(calls / 100)))
            granted = await self.ledger.lease(name, period, began, want, calls)
            if not granted:
                raise CallHeld(QUOTA, f"system '{name}' has used its {calls} calls per {period}",
                               began + PERIODS[period])
            self._slices[key] = (began, granted - 1)

    async def remaining(self, systems: list[CompiledSystem]) -> dict[tuple[str, str], int]:
        """(System, period) -> calls left in the current window, among all replicas."""
        now = self.clock()
        wanted = [(s.name, period, calls) for s in systems for period, calls in
                  budgets(s, self.shared)]
        used = await self.ledger.used([(n, p, window(p, now)) for n, p, _ in wanted])
        return {(n, p): max(0, calls - used[(n, p)]) for n, p, calls in wanted}
