"""Plans, accepting events, claiming runs, checkpoints and operator state changes, in SQLite:
each one job of the writer process (engine/store/sqlite_writes.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from engine.errors import StoreError
from engine.store.interface.execution import Execution
from engine.store.records import (
    Acceptance,
    Checkpoint,
    EventRecord,
    NewRun,
    Reason,
    RunRecord,
    StateChange,
)
from engine.store.rows import dumps, event_row, fields, run_row, step_params
from engine.store.sqlite.core import SQLiteCore
from engine.store.sqlite.readers import query_all
from engine.store.sqlite_claims import tx_claim
from engine.store.sqlite_writes import (
    tx_accept,
    tx_checkpoint,
    tx_renew,
    tx_save_plan,
    tx_set_run_state,
)


class SQLiteExecution(SQLiteCore, Execution):
    async def save_plan(self, digest: str, bundle: dict[str, Any]) -> None:
        """Keep a compiled bundle by digest; saving a digest again changes nothing."""
        await self._write(tx_save_plan, digest, dumps(bundle), time.time())

    async def load_plan(self, digest: str) -> dict[str, Any] | None:
        """The bundle saved under `digest`, or None."""
        rows = await self._read(query_all, "SELECT bundle FROM plans WHERE digest = ?", (digest,))
        return json.loads(rows[0][0]) if rows else None

    async def accept(self, event: EventRecord, runs: Sequence[NewRun]) -> list[Acceptance]:
        """Store the event (once per event id) and its runs in one transaction.

        A NewRun whose (flow, key) an existing run holds answers `duplicate` with that run. A
        filtered run is recorded but does not hold its key (see the `runs_dedup` index)."""
        row = event_row(event, time.time())
        # Rows and plain tuples cross to the writer process and back (see `rows.accept_rows`).
        rows = tuple(run_row(run, row[0], row[-1]) for run in runs)
        return [Acceptance._make(a) for a in await self._write(tx_accept, row, rows)]

    async def claim(self, worker: str, limit: int, now: float, lease: float) -> list[RunRecord]:
        """Lease up to `limit` runs that may execute now, oldest first (see `Store.claim`)."""
        if limit <= 0:
            return []
        return await self._write(tx_claim, worker, limit, now, lease)

    async def renew(self, worker: str, run_ids: Sequence[str], until: float) -> None:
        """Extend the leases `worker` still holds on these running runs to `until`."""
        await self._write(tx_renew, worker, tuple(run_ids), until)

    async def checkpoint(self, cp: Checkpoint) -> Reason | None:
        """Commit a step record, the run's new state and the emitted events atomically; return
        the run's cancel request, if any (see `Store.checkpoint`).

        `next_attempt_at` and `reason` are written together with a new `run_state` (so leaving
        `waiting` clears them); the lease is cleared when asked or when the state is not
        `running`."""
        step = None
        if cp.step is not None:
            if cp.step.run_id != cp.run_id:
                raise StoreError(f"checkpoint of run {cp.run_id!r} carries a step of another run")
            step = step_params(cp.run_id, cp.step)
        now = time.time()
        outbox_rows = [(cp.run_id, dumps(fields(event)), now) for event in cp.emitted]
        return await self._write(tx_checkpoint, cp, step, outbox_rows)

    async def set_run_state(self, run_id: str, change: StateChange) -> RunRecord:
        """Apply `change` with its audit entry (see `Store.set_run_state`)."""
        data = None if change.data is None else dumps(change.data.value)
        return await self._write(tx_set_run_state, run_id, change, data, time.time())
