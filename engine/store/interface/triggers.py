"""What timed triggers (schedules, polls) and Reconciliations keep between ticks."""

from __future__ import annotations

import abc
from typing import Any


class Triggers(abc.ABC):
    @abc.abstractmethod
    async def get_trigger_state(self, name: str) -> Any:
        """What a timed trigger (schedule, poll) stored under `name`; None: nothing yet."""

    @abc.abstractmethod
    async def put_trigger_state(self, name: str, value: Any) -> None:
        """Store a timed trigger's JSON state under `name`, replacing what was there."""

    @abc.abstractmethod
    async def claim_reconciliation(self, name: str, tick: str, now: float, lease: float) -> str:
        """Create the `running` result of a Reconciliation's tick: "claimed" (run it), or
        "running" (another process started it less than `lease` seconds before `now`), or
        "done" (it has a result). A `running` row older than the lease (its process died) is
        claimed again."""

    @abc.abstractmethod
    async def finish_reconciliation(
        self, name: str, tick: str, state: str, report: dict[str, Any]
    ) -> None:
        """Store the report of a claimed tick, with its state (ok, mismatch, parked, error)."""

    @abc.abstractmethod
    async def list_reconciliations(
        self, name: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Reconciliation results, newest first: `{name, tick, started_at, state, report}`."""
