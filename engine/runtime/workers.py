"""The worker loops of a Runtime: claim due runs and execute them (leased, so a crashed worker's
runs are claimed again once the lease expires), renew the leases of the runs executing, and turn
the outbox's emitted events into runs. A run waiting for a retry holds no worker: its next
attempt time is in the store and the claim loop sleeps until it is due."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import logging
from collections.abc import Awaitable, Callable, Sequence

from engine.errors import StoreError
from engine.runtime.clock import Clock
from engine.runtime.executor import Executor, Finished
from engine.runtime.gates import Gates
from engine.runtime.plans import Plans
from engine.runtime.waiting import STOPPED_STATES, Waiters
from engine.store.base import (
    RUNNABLE_STATES,
    Acceptance,
    Checkpoint,
    OutboxItem,
    Reason,
    RunRecord,
    Store,
)
from engine.store.controls import FLOW_PAUSED, HELD

log = logging.getLogger("syncline.runtime")
IDLE_POLL = 0.02  # seconds between looks while `idle` waits
FLOW_BACKSTOP = 3600.0  # a run held for a paused flow looks again this late if no resume wakes it
GIVE_WAY = 8  # while ingest is busy (Ingest.busy), concurrency // GIVE_WAY runs execute (>= 1)


class Workers:
    """Executes up to `concurrency` runs at once for `worker_id`; `lease` is how long a claimed
    run is reserved (renewed every lease/3 while it executes); `poll` bounds every sleep;
    `dispatch` turns an emitted event from the outbox into runs; `busy` says whether this
    process's deliveries are waiting for their accepts (then fewer runs execute: GIVE_WAY)."""

    def __init__(
        self,
        store: Store,
        plans: Plans,
        executor: Executor,
        waiters: Waiters,
        clock: Clock,
        dispatch: Callable[[OutboxItem], Awaitable[None]],
        *,
        worker_id: str,
        concurrency: int,
        lease: float,
        poll: float,
        gates: Gates,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store, self.plans, self.executor = store, plans, executor
        self.busy = busy
        self.waiters, self.clock = waiters, clock
        self.worker_id, self.concurrency = worker_id, concurrency
        self.lease, self.poll = lease, poll
        self.stopping = False
        self.depth = 0  # runs accepted and not finished: an estimate
        self.dispatch = dispatch  # turns an emitted event into runs
        self.gates = gates  # paused flows and Systems, circuit breakers
        self._active: dict[str, asyncio.Task[None]] = {}
        self._due: list[float] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._wakeup = asyncio.Event()
        self._outbox_wakeup = asyncio.Event()

    async def start(self) -> None:
        """Count the queue and start the claim, dispatch and renew loops."""
        await self.gates.refresh()
        counts = await self.store.count_runs()
        self.depth = sum(n for (_, state), n in counts.items() if state in RUNNABLE_STATES)
        self.stopping = False
        self._tasks = [
            asyncio.create_task(loop())
            for loop in (self._claim_loop, self._dispatch_loop, self._renew_loop, self._gates_loop)
        ]

    async def stop(self, grace: float) -> None:
        """Claim nothing new; give executing runs `grace` seconds, then cancel them and the
        loops (a cancelled run's lease expires and another worker claims it)."""
        self.stopping = True
        self._wakeup.set()
        self._outbox_wakeup.set()
        if self._active:
            await asyncio.wait(list(self._active.values()), timeout=grace)
        for task in [*self._active.values(), *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._active.values(), *self._tasks, return_exceptions=True)
        self._tasks.clear()

    def accepted(self, acceptances: Sequence[Acceptance]) -> None:
        """New runs were accepted: count them and wake the claim loop."""
        new = sum(1 for a in acceptances if a.status == "accepted")
        if new:
            self.depth += new
            self._wakeup.set()

    def requeued(self, record: RunRecord) -> RunRecord:
        """An operator queued `record` again."""
        self.depth += 1
        self._wakeup.set()
        return record

    async def idle(self, timeout: float) -> bool:
        """True once no run is pending, running or waiting and the outbox is empty."""
        deadline = self.clock.now() + timeout
        while self.clock.now() < deadline:
            if not self._active:  # busy here: no need to ask the store (and slow its writers)
                # outbox first: dispatch is atomic, so an empty outbox means its runs are counted
                empty = not await self.store.outbox(1)
                counts = await self.store.count_runs()
                busy = any(n for (_, state), n in counts.items() if state in RUNNABLE_STATES)
                if empty and not busy and not self._active:
                    return True
            await self.clock.sleep(IDLE_POLL)
        return False

    # the loops -------------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        while not self.stopping:
            self._wakeup.clear()
            # fewer runs at once while deliveries wait for their accepts (GIVE_WAY)
            limit = max(1, self.concurrency // GIVE_WAY) if self.busy() else self.concurrency
            free = limit - len(self._active)
            claimed: list[RunRecord] = []
            if free > 0:
                try:
                    now = self.clock.now()
                    claimed = await self.store.claim(self.worker_id, free, now, self.lease)
                except StoreError:
                    log.exception("claiming runs failed; retrying")
            for run in claimed:
                self._active[run.id] = asyncio.create_task(self._execute(run))
            if claimed and len(claimed) == free:
                await self._wakeup.wait()  # every slot is busy: wait for one to free up
            elif not claimed:
                await self._sleep()

    async def _sleep(self) -> None:
        """Until woken, or a local retry is due, or the poll interval passed."""
        now = self.clock.now()
        while self._due and self._due[0] <= now:
            heapq.heappop(self._due)
        timeout = min(self.poll, self._due[0] - now) if self._due else self.poll
        await self.clock.wait_for(self._wakeup.wait(), max(timeout, 0.001))

    async def _execute(self, run: RunRecord) -> None:
        finished: Finished | None = None
        try:
            if self.gates.flow_paused(run.flow) and _holdable(run) and await self._hold(run):
                return
            plan = await self.plans.plan_for(run.plan_digest)
            finished = await self.executor.execute(run, plan, self.plans.calls_for(plan))
        except asyncio.CancelledError:
            raise
        except StoreError:
            log.exception(
                "run %s: the store failed; the run is retried when its lease ends", run.id
            )
        except Exception as exc:  # a bug, or a plan that cannot be rebuilt: say so on the run
            fields = {"event": "run.failed", "flow": run.flow, "run_id": run.id,
                      "correlation_id": run.correlation_id, "reason": "INTERNAL_ERROR"}
            log.exception("run %s failed unexpectedly", run.id, extra=fields)
            finished = await self._fail(run, exc)
        finally:
            self._active.pop(run.id, None)
            self._wakeup.set()
        if finished is not None:
            if finished.state == "waiting" and finished.reason is not None:
                woken = await self.gates.wake_if_resumed(run.id, finished.reason)
                if woken is not None:
                    finished = dataclasses.replace(finished, next_attempt_at=woken)
            self._after(run.id, finished)

    async def _hold(self, run: RunRecord) -> bool:
        """Put a claimed run of a paused flow back, unexecuted (False: resumed meanwhile)."""
        switch = self.gates.flow_paused(run.flow)
        message = f"flow '{run.flow}' is paused: {switch.reason if switch else ''}"
        now = self.clock.now()
        return await self.gates.controls.hold(
            run.id, Reason(FLOW_PAUSED, None, message), now + FLOW_BACKSTOP, now
        )

    async def _gates_loop(self) -> None:
        """Keep this process's copy of the switches current (other replicas, the CLI)."""
        while not self.stopping:
            await self.clock.sleep(self.poll)
            try:
                await self.gates.refresh()
            except StoreError:
                log.exception("reading the pause switches failed")

    async def _fail(self, run: RunRecord, exc: Exception) -> Finished | None:
        reason = Reason("INTERNAL_ERROR", None, f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(StoreError):
            await self.store.checkpoint(Checkpoint(run.id, None, "failed", reason=reason))
            return Finished("failed")
        return None

    def _after(self, run_id: str, finished: Finished) -> None:
        if finished.emitted:
            self._outbox_wakeup.set()
        if finished.next_attempt_at is not None:
            heapq.heappush(self._due, finished.next_attempt_at)
        if finished.state in STOPPED_STATES:
            self.depth -= 1
            self.waiters.notify(run_id)

    async def _renew_loop(self) -> None:
        while not self.stopping:
            await self.clock.sleep(self.lease / 3)
            if self._active:
                try:
                    until = self.clock.now() + self.lease
                    await self.store.renew(self.worker_id, list(self._active), until)
                except StoreError:
                    log.exception("renewing leases failed")

    async def _dispatch_loop(self) -> None:
        while not self.stopping:
            self._outbox_wakeup.clear()
            try:
                items = await self.store.outbox(100)
                for item in items:
                    await self.dispatch(item)
            except StoreError:
                log.exception("dispatching emitted events failed; retrying")
                items = []
            if not items:
                await self.clock.wait_for(self._outbox_wakeup.wait(), self.poll)


def _holdable(run: RunRecord) -> bool:
    """A paused flow holds its runs, but not one being compensated or cancelled."""
    return run.reason is None or run.reason.code in HELD
