"""The business-metric tallies in SQLite (engine/store/aggregates.py keeps them)."""

from __future__ import annotations

from collections.abc import Sequence

from engine.store.aggregates import Aggregates, MetricConfig, sqlite_read, sqlite_sync
from engine.store.interface.metrics import Metrics
from engine.store.label_backfill import (
    OpenRun,
    Relabel,
    sqlite_open_runs,
    sqlite_pending,
    tx_relabel,
)
from engine.store.sqlite.core import SQLiteCore


class SQLiteMetrics(SQLiteCore, Metrics):
    async def sync_metrics(self, config: MetricConfig) -> None:
        await self._write(sqlite_sync, config)

    async def read_aggregates(self) -> Aggregates:
        result: Aggregates = await self._read(sqlite_read)
        return result

    async def label_backfills(self) -> list[tuple[str, int]]:
        result: list[tuple[str, int]] = await self._read(sqlite_pending)
        return result

    async def open_runs(self, flows: Sequence[str], after: int, limit: int) -> list[OpenRun]:
        result: list[OpenRun] = await self._read(sqlite_open_runs, tuple(flows), after, limit)
        return result

    async def relabel(self, name: str, runs: Sequence[Relabel], after: int, done: bool) -> int:
        return await self._write(tx_relabel, name, list(runs), after, done)
