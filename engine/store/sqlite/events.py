"""Stored events and the outbox, in SQLite."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from engine.store.interface.events import Events
from engine.store.records import Acceptance, EventRecord, NewRun, OutboxItem
from engine.store.rows import EVENT_COLUMNS, event_record, event_row, outbox_item, run_row
from engine.store.sqlite.core import SQLiteCore
from engine.store.sqlite.readers import query_all
from engine.store.sqlite_writes import tx_dispatch


def _q_event(conn: sqlite3.Connection, event_id: str) -> EventRecord | None:
    row = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ?", (event_id,)).fetchone()
    return None if row is None else event_record(row)


class SQLiteEvents(SQLiteCore, Events):
    async def get_event(self, event_id: str) -> EventRecord | None:
        """The stored event, or None."""
        return await self._read(_q_event, event_id)

    async def outbox(self, limit: int) -> list[OutboxItem]:
        """Emitted events not yet dispatched, oldest first."""
        rows = await self._read(
            query_all,
            "SELECT seq, run_id, event FROM outbox WHERE dispatched_at IS NULL "
            "ORDER BY seq LIMIT ?",
            (limit,),
        )
        return [outbox_item(row) for row in rows]

    async def dispatch(self, item: OutboxItem, runs: Sequence[NewRun]) -> list[Acceptance]:
        """Store the emitted event, create its runs (deduplicated) and mark the item dispatched,
        in one transaction."""
        event = event_row(item.event, time.time())
        rows = tuple(run_row(run, event[0], event[-1]) for run in runs)
        return [Acceptance._make(a) for a in await self._write(tx_dispatch, item.seq, event, rows)]
