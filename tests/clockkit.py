"""A clock the timed-trigger tests set by hand: `clock.t = ...` jumps to any wall time (a tick,
after downtime), while the runtime's own waits stay real but short so its loops keep turning."""

from __future__ import annotations

import asyncio
from typing import Any


class SetClock:
    """A `Clock` (now, sleep, wait_for) whose time is `t`; also callable as a time source."""

    def __init__(self, t: float) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(min(seconds, 0.02))

    async def wait_for(self, awaitable: Any, timeout: float) -> bool:
        try:
            await asyncio.wait_for(awaitable, min(timeout, 0.02))
        except TimeoutError:
            return False
        return True


class JumpingClock(SetClock):
    """Every sleep lets its whole time pass at once: a loop that sleeps until the next tick
    finds itself there."""

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        await asyncio.sleep(0.005)
