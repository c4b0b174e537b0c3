"""Stored events and the outbox, in PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Sequence

from engine.store.interface.events import Events
from engine.store.postgres.core import PostgresCore
from engine.store.postgres_sql import accept_many
from engine.store.records import Acceptance, EventRecord, NewRun, OutboxItem
from engine.store.rows import EVENT_COLUMNS, event_record, event_row, outbox_item


class PostgresEvents(PostgresCore, Events):
    async def get_event(self, event_id: str) -> EventRecord | None:
        rows = await self._rows(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = %s", (event_id,))
        return event_record(rows[0]) if rows else None

    async def outbox(self, limit: int) -> list[OutboxItem]:
        rows = await self._rows(
            "SELECT seq, run_id, event FROM outbox WHERE dispatched_at IS NULL "
            "ORDER BY seq LIMIT %s",
            (limit,),
        )
        return [outbox_item(row) for row in rows]

    async def dispatch(self, item: OutboxItem, runs: Sequence[NewRun]) -> list[Acceptance]:
        """Store the emitted event, create its runs (deduplicated) and mark the item dispatched,
        in one transaction. Another replica dispatching the same item meanwhile is harmless:
        the event is stored once and the runs' keys deduplicate."""
        now = time.time()
        async with self._transaction() as conn:
            [acceptances] = await accept_many(conn, [(event_row(item.event, now), tuple(runs))])
            await conn.execute(
                "UPDATE outbox SET dispatched_at = %s WHERE seq = %s AND dispatched_at IS NULL",
                (now, item.seq),
            )
            return acceptances
