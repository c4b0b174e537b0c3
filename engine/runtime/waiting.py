"""Waiting for a run to stop: a future per waiter, resolved when this process finishes the run,
and a look at the store every `poll` seconds for runs another process finishes."""

from __future__ import annotations

import asyncio

from engine.errors import UsageError
from engine.runtime.clock import Clock
from engine.store.base import TERMINAL_STATES, RunRecord, Store

STOPPED_STATES = TERMINAL_STATES | {"parked"}


async def require_run(store: Store, run_id: str) -> RunRecord:
    """The run, or UsageError naming it."""
    run = await store.get_run(run_id)
    if run is None:
        raise UsageError(f"no run '{run_id}'")
    return run


class Waiters:
    """Callers waiting for runs to stop, by run id."""

    def __init__(self, store: Store, clock: Clock, poll: float) -> None:
        self.store, self.clock, self.poll = store, clock, poll
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    async def wait(self, run_id: str, timeout: float) -> RunRecord:
        """The run once it is terminal or parked, or as it is after `timeout` seconds."""
        deadline = self.clock.now() + timeout
        while True:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(run_id, []).append(waiter)
            run = await require_run(self.store, run_id)
            left = deadline - self.clock.now()
            if run.state in STOPPED_STATES or left <= 0:
                self._drop(run_id, waiter)
                return run
            await self.clock.wait_for(waiter, min(left, self.poll))
            self._drop(run_id, waiter)

    def notify(self, run_id: str) -> None:
        """The run stopped here: wake its waiters."""
        for waiter in self._waiters.pop(run_id, []):
            if not waiter.done():
                waiter.set_result(None)

    def _drop(self, run_id: str, waiter: asyncio.Future[None]) -> None:
        waiters = self._waiters.get(run_id, [])
        if waiter in waiters:
            waiters.remove(waiter)
        if not waiters:
            self._waiters.pop(run_id, None)
