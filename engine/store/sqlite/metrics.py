"""The business-metric tallies in SQLite (engine/store/aggregates.py keeps them)."""

from __future__ import annotations

from engine.store.aggregates import Aggregates, MetricConfig, sqlite_read, sqlite_sync
from engine.store.interface.metrics import Metrics
from engine.store.sqlite.core import SQLiteCore


class SQLiteMetrics(SQLiteCore, Metrics):
    async def sync_metrics(self, config: MetricConfig) -> None:
        await self._write(sqlite_sync, config)

    async def read_aggregates(self) -> Aggregates:
        result: Aggregates = await self._read(sqlite_read)
        return result
