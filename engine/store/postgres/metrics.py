"""The business-metric tallies in PostgreSQL (engine/store/aggregates_postgres.py keeps them)."""

from __future__ import annotations

from collections.abc import Sequence

from engine.store.aggregates import Aggregates, MetricConfig
from engine.store.aggregates_postgres import postgres_read, postgres_sync
from engine.store.interface.metrics import Metrics
from engine.store.label_backfill import (
    OpenRun,
    Relabel,
    postgres_open_runs,
    postgres_pending,
    postgres_relabel,
)
from engine.store.postgres.core import PostgresCore


class PostgresMetrics(PostgresCore, Metrics):
    async def sync_metrics(self, config: MetricConfig) -> None:
        async with self._transaction() as conn:
            await postgres_sync(conn, config)

    async def read_aggregates(self) -> Aggregates:
        async with self._transaction() as conn:
            return await postgres_read(conn)

    async def label_backfills(self) -> list[tuple[str, int]]:
        async with self._transaction() as conn:
            return await postgres_pending(conn)

    async def open_runs(self, flows: Sequence[str], after: int, limit: int) -> list[OpenRun]:
        async with self._transaction() as conn:
            return await postgres_open_runs(conn, flows, after, limit)

    async def relabel(self, name: str, runs: Sequence[Relabel], after: int, done: bool) -> int:
        async with self._transaction() as conn:
            return await postgres_relabel(conn, name, runs, after, done)
