"""Stored events, and the outbox of events that runs emitted."""

from __future__ import annotations

import abc
from collections.abc import Sequence

from engine.store.records import Acceptance, EventRecord, NewRun, OutboxItem


class Events(abc.ABC):
    @abc.abstractmethod
    async def get_event(self, event_id: str) -> EventRecord | None: ...

    @abc.abstractmethod
    async def outbox(self, limit: int) -> list[OutboxItem]:
        """Emitted events not yet dispatched, oldest first."""

    @abc.abstractmethod
    async def dispatch(self, item: OutboxItem, runs: Sequence[NewRun]) -> list[Acceptance]:
        """Store the emitted event, create its runs (deduplicated) and mark the item dispatched,
        in one transaction."""
