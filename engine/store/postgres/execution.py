"""Plans, accepting events (batched across concurrent callers), claiming runs, checkpoints and
operator state changes, in PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

from engine.errors import StoreError
from engine.store.interface.execution import Execution
from engine.store.postgres.core import BATCHES_IN_FLIGHT, PostgresCore
from engine.store.postgres_sql import (
    PLAN_ONCE_PAST,
    AcceptItem,
    accept_many,
    checkpoint,
    claim,
    set_run_state,
    settle,
)
from engine.store.records import (
    Acceptance,
    Checkpoint,
    EventRecord,
    NewRun,
    Reason,
    RunRecord,
    StateChange,
)
from engine.store.rows import dumps, event_row, step_params


class PostgresExecution(PostgresCore, Execution):
    async def save_plan(self, digest: str, bundle: dict[str, Any]) -> None:
        """Keep a compiled bundle by digest; saving a digest again changes nothing."""
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO plans (digest, bundle, created_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (digest) DO NOTHING",
                (digest, dumps(bundle), time.time()),
            )

    async def load_plan(self, digest: str) -> dict[str, Any] | None:
        rows = await self._rows("SELECT bundle FROM plans WHERE digest = %s", (digest,))
        return json.loads(rows[0][0]) if rows else None

    async def accept(self, event: EventRecord, runs: Sequence[NewRun]) -> list[Acceptance]:
        """Store the event (once per event id) and its runs in one transaction (see the module
        docstring for deduplication and arrival order across replicas).

        Concurrent accepts are batched: one statement (a round trip, its own transaction)
        carries every accept that queued while the previous ones committed. Up to
        `BATCHES_IN_FLIGHT` batches commit at once, so that PostgreSQL's own group commit
        shares one WAL flush among them. If a batch fails, its accepts are tried one by one, so
        that a failing accept fails alone."""
        future = asyncio.get_running_loop().create_future()
        self._accepts.append(((event_row(event, time.time()), tuple(runs)), future))
        if len(self._batchers) < BATCHES_IN_FLIGHT:
            task = asyncio.ensure_future(self._commit_accepts())
            self._batchers.add(task)
            task.add_done_callback(self._batchers.discard)
        result: list[Acceptance] = await future
        return result

    async def _commit_accepts(self) -> None:
        """Commit the queued accepts, a batch per transaction, until none are left."""
        while self._accepts:
            batch, self._accepts = self._accepts, []
            try:
                # psycopg prepares the accept once this store's runs make the table large
                prepare = None if self._accepted_runs >= PLAN_ONCE_PAST else False
                async with self._connection() as conn:
                    results = await accept_many(conn, [item for item, _ in batch], prepare)
            except Exception as exc:  # noqa: BLE001 - each accept's caller sees its own outcome
                if len(batch) == 1:
                    settle(batch[0][1], error=exc)
                else:
                    await asyncio.gather(*(self._accept_alone(*entry) for entry in batch))
                continue
            for (_, future), result in zip(batch, results, strict=True):
                settle(future, result)
            if prepare is False:  # counted until the table is large enough
                self._accepted_runs += sum(a.status != "duplicate" for r in results for a in r)

    async def _accept_alone(self, item: AcceptItem, future: asyncio.Future[Any]) -> None:
        try:
            async with self._connection() as conn:
                [result] = await accept_many(conn, [item])
        except Exception as exc:  # noqa: BLE001 - the caller's to see
            settle(future, error=exc)
        else:
            settle(future, result)

    async def claim(self, worker: str, limit: int, now: float, lease: float) -> list[RunRecord]:
        """Lease up to `limit` runs that may execute now, oldest first (see `Store.claim`)."""
        if limit <= 0:
            return []
        async with self._transaction() as conn:
            return await claim(conn, worker, limit, now, lease)

    async def renew(self, worker: str, run_ids: Sequence[str], until: float) -> None:
        """Extend the leases `worker` still holds on these running runs to `until`."""
        if not run_ids:
            return
        async with self._transaction() as conn:
            await conn.execute(
                "UPDATE runs SET lease_until = %s "
                "WHERE id = ANY(%s) AND lease_owner = %s AND state = 'running'",
                (until, list(run_ids), worker),
            )

    async def checkpoint(self, cp: Checkpoint) -> Reason | None:
        """Commit a step record, the run's new state and the emitted events atomically; return
        the run's cancel request, if any (see `Store.checkpoint`)."""
        step = None
        if cp.step is not None:
            if cp.step.run_id != cp.run_id:
                raise StoreError(f"checkpoint of run {cp.run_id!r} carries a step of another run")
            step = step_params(cp.run_id, cp.step)
        async with self._transaction() as conn:
            return await checkpoint(conn, cp, step, time.time())

    async def set_run_state(self, run_id: str, change: StateChange) -> RunRecord:
        """Apply `change` with its audit entry (see `Store.set_run_state`)."""
        async with self._transaction() as conn:
            return await set_run_state(conn, run_id, change, time.time())
