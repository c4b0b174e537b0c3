"""Timed-trigger state and Reconciliation results in SQLite."""

from __future__ import annotations

import json
import time
from typing import Any

from engine.store.interface.triggers import Triggers
from engine.store.rows import dumps, reconciliation_row
from engine.store.sqlite.core import SQLiteCore
from engine.store.sqlite.readers import query_all
from engine.store.sqlite_writes import (
    tx_claim_reconciliation,
    tx_finish_reconciliation,
    tx_put_trigger_state,
)


class SQLiteTriggers(SQLiteCore, Triggers):
    async def get_trigger_state(self, name: str) -> Any:
        """What a timed trigger stored under `name` (None: nothing yet)."""
        sql = "SELECT value FROM trigger_state WHERE name = ?"
        rows = await self._read(query_all, sql, (name,))
        return json.loads(rows[0][0]) if rows else None

    async def put_trigger_state(self, name: str, value: Any) -> None:
        """Store a timed trigger's state under `name`, replacing what was there."""
        await self._write(tx_put_trigger_state, name, dumps(value), time.time())

    async def claim_reconciliation(self, name: str, tick: str, now: float, lease: float) -> str:
        """Claim a Reconciliation's tick (see `Store.claim_reconciliation`)."""
        claimed: str = await self._write(tx_claim_reconciliation, name, tick, now, lease)
        return claimed

    async def finish_reconciliation(
        self, name: str, tick: str, state: str, report: dict[str, Any]
    ) -> None:
        """Store the report of a claimed tick."""
        await self._write(tx_finish_reconciliation, name, tick, state, dumps(report))

    async def list_reconciliations(
        self, name: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Reconciliation results, newest first: `{name, tick, started_at, state, report}`."""
        where, params = ("WHERE name = ?", (name, limit)) if name else ("", (limit,))
        rows = await self._read(
            query_all,
            f"SELECT name, tick, started_at, state, report FROM reconciliations {where} "
            "ORDER BY seq DESC LIMIT ?",
            params,
        )
        return [reconciliation_row(row) for row in rows]
