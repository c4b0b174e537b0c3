"""The tallies business metrics read (engine/store/aggregates.py keeps them)."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from engine.store.aggregates import Aggregates, MetricConfig
    from engine.store.label_backfill import OpenRun, Relabel


class Metrics(abc.ABC):
    @abc.abstractmethod
    async def sync_metrics(self, config: MetricConfig) -> None:
        """Track what a plan's metrics need (beforeStep steps, duration points and buckets)."""

    @abc.abstractmethod
    async def read_aggregates(self) -> Aggregates:
        """The counts the triggers keep: a read of a few rows, however many runs there are."""

    @abc.abstractmethod
    async def label_backfills(self) -> list[tuple[str, int]]:
        """(label set, cursor) of each set whose open runs are still to be counted under it
        (engine/store/label_backfill.py)."""

    @abc.abstractmethod
    async def open_runs(self, flows: Sequence[str], after: int, limit: int) -> list[OpenRun]:
        """Open runs of `flows` after arrival order `after`, with their data and the outputs
        of their steps done: what their labels are resolved from."""

    @abc.abstractmethod
    async def relabel(self, name: str, runs: Sequence[Relabel], after: int, done: bool) -> int:
        """Write the labels of runs nobody wrote since they were read; move set `name`'s
        cursor to `after` (`done`: forget it). How many runs were written."""
