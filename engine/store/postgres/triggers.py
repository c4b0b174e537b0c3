"""Timed-trigger state and Reconciliation results in PostgreSQL (claims are safe across
replicas: one INSERT ... ON CONFLICT decides)."""

from __future__ import annotations

import json
import time
from typing import Any

from engine.store.interface.triggers import Triggers
from engine.store.postgres.core import PostgresCore
from engine.store.rows import reconciliation_row


class PostgresTriggers(PostgresCore, Triggers):
    async def get_trigger_state(self, name: str) -> Any:
        """What a timed trigger stored under `name` (None: nothing yet)."""
        rows = await self._rows("SELECT value FROM trigger_state WHERE name = %s", (name,))
        return json.loads(rows[0][0]) if rows else None

    async def put_trigger_state(self, name: str, value: Any) -> None:
        """Store a timed trigger's state under `name`, replacing what was there."""
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO trigger_state (name, value, updated_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at",
                (name, json.dumps(value), time.time()),
            )

    async def claim_reconciliation(self, name: str, tick: str, now: float, lease: float) -> str:
        """Claim a Reconciliation's tick (see `Store.claim_reconciliation`)."""
        async with self._transaction() as conn:
            cursor = await conn.execute(
                "INSERT INTO reconciliations (name, tick, started_at, state) "
                "VALUES (%s, %s, %s, 'running') ON CONFLICT (name, tick) DO UPDATE "
                "SET started_at = excluded.started_at "
                "WHERE reconciliations.state = 'running' AND reconciliations.started_at < %s",
                (name, tick, now, now - lease),
            )
            if cursor.rowcount == 1:
                return "claimed"
            row = await (await conn.execute(
                "SELECT state FROM reconciliations WHERE name = %s AND tick = %s", (name, tick)
            )).fetchone()
            return "running" if row is not None and row[0] == "running" else "done"

    async def finish_reconciliation(
        self, name: str, tick: str, state: str, report: dict[str, Any]
    ) -> None:
        """Store the report of a claimed tick."""
        async with self._transaction() as conn:
            await conn.execute(
                "UPDATE reconciliations SET state = %s, report = %s WHERE name = %s AND tick = %s",
                (state, json.dumps(report, default=str), name, tick),
            )

    async def list_reconciliations(
        self, name: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Reconciliation results, newest first: `{name, tick, started_at, state, report}`."""
        where, params = ("WHERE name = %s", (name, limit)) if name else ("", (limit,))
        rows = await self._rows(
            f"SELECT name, tick, started_at, state, report FROM reconciliations {where} "
            "ORDER BY seq DESC LIMIT %s",
            params,
        )
        return [reconciliation_row(row) for row in rows]
