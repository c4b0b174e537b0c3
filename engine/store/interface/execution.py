"""Runs from acceptance to their end: plans, accepting, claiming, checkpoints, operator changes."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

from engine.store.records import (
    Acceptance,
    Checkpoint,
    EventRecord,
    NewRun,
    Reason,
    RunRecord,
    StateChange,
)


class Execution(abc.ABC):
    """What ingest, the workers and the operator actions write."""

    # plans -----------------------------------------------------------------------------------
    @abc.abstractmethod
    async def save_plan(self, digest: str, bundle: dict[str, Any]) -> None:
        """Keep a compiled bundle by digest (idempotent)."""

    @abc.abstractmethod
    async def load_plan(self, digest: str) -> dict[str, Any] | None: ...

    # ingest ----------------------------------------------------------------------------------
    @abc.abstractmethod
    async def accept(self, event: EventRecord, runs: Sequence[NewRun]) -> list[Acceptance]:
        """Store the event and create its runs atomically; (flow, key) duplicates create nothing
        and answer `duplicate` with the existing run id. Returns once durably committed."""

    # claiming work ---------------------------------------------------------------------------
    @abc.abstractmethod
    async def claim(self, worker: str, limit: int, now: float, lease: float) -> list[RunRecord]:
        """Lease up to `limit` runs that may execute now: state pending, or waiting with
        next_attempt_at <= now, or running with an expired lease (a crashed worker). A run is
        claimable only if it is the head of its ordering key (engine/store/ordering.py): the
        key's active (running or waiting) run, else its oldest run that holds the key (pending,
        running, waiting, or parked unless `parked_holds_key` is false). Claimed runs become
        `running`, leased until now+lease,
        and come with their `event` and `steps` loaded."""

    @abc.abstractmethod
    async def renew(self, worker: str, run_ids: Sequence[str], until: float) -> None: ...

    # execution -------------------------------------------------------------------------------
    @abc.abstractmethod
    async def checkpoint(self, cp: Checkpoint) -> Reason | None:
        """Commit a step result + run state + outbox atomically (group-committed).

        Returns the run's cancel request, if it has one (state `running`, reason code
        CANCELLED, set by `set_run_state`). The request stands: the step is written, but a new
        run state outside CANCEL_ENDS is not, unless `cp.reason` is itself CANCELLED (the
        executor acknowledging it); the run then stays `running` under its worker's lease."""

    # operator actions --------------------------------------------------------------------------
    @abc.abstractmethod
    async def set_run_state(self, run_id: str, change: StateChange) -> RunRecord:
        """Apply `change` to the run and append its audit entry in one transaction: StoreError
        if the run does not exist, StateConflict (nothing written) if it is not in one of
        `change.expect`. The reason is replaced, next_attempt_at cleared, and so is the lease
        unless the new state is `running`."""
