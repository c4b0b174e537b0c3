"""Time and randomness, injected: the runtime reads the wall clock, sleeps and waits only through
a `Clock`, and draws ids and jitter only from a `random.Random` it is given, so that tests can
drive time themselves instead of waiting for it."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable
from typing import Any, Protocol


class Clock(Protocol):
    """Where the runtime's time comes from."""

    def now(self) -> float:
        """Unix seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Let `seconds` pass."""
        ...

    async def wait_for(self, awaitable: Awaitable[Any], timeout: float) -> bool:
        """Await `awaitable` for at most `timeout` seconds: True if it finished in time (it is
        cancelled otherwise)."""
        ...


class SystemClock:
    """The real clock: `time.time` and asyncio's timers."""

    now = staticmethod(time.time)  # the builtin itself: the hot path asks for it per step

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_for(self, awaitable: Awaitable[Any], timeout: float) -> bool:
        try:
            await asyncio.wait_for(awaitable, timeout)
        except TimeoutError:
            return False
        return True


def new_id(clock: Clock, rng: random.Random) -> str:
    """32 hex digits: milliseconds since the epoch, then 80 random bits.

    Time-ordered ids are appended at the end of the stores' run-id index instead of at random
    places in it (uuid4 cost ~12 us an accept there), and drawing them from a seeded
    `random.Random` does not release the GIL as os.urandom does on every call. Ids must be
    unique, not secret."""
    return f"{int(clock.now() * 1000):012x}{rng.getrandbits(80):020x}"


_STAMP: list[Any] = [None, ""]  # [the second, its text]


def utc_second(now: float) -> str:
    """`now` as RFC 3339 UTC to the second ("2026-12-05T05:30:00Z"), formatted once a second:
    every accepted event without a time of its own is stamped, and strftime costs ~2 us."""
    second = int(now)
    if _STAMP[0] != second:
        _STAMP[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))]
    return str(_STAMP[1])
