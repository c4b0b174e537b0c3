"""The business-metric tallies in PostgreSQL (engine/store/aggregates_postgres.py keeps them)."""

from __future__ import annotations

from engine.store.aggregates import Aggregates, MetricConfig
from engine.store.aggregates_postgres import postgres_read, postgres_sync
from engine.store.interface.metrics import Metrics
from engine.store.postgres.core import PostgresCore


class PostgresMetrics(PostgresCore, Metrics):
    async def sync_metrics(self, config: MetricConfig) -> None:
        async with self._transaction() as conn:
            await postgres_sync(conn, config)

    async def read_aggregates(self) -> Aggregates:
        async with self._transaction() as conn:
            return await postgres_read(conn)
