"""The tallies business metrics read (engine/store/aggregates.py keeps them)."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.store.aggregates import Aggregates, MetricConfig


class Metrics(abc.ABC):
    @abc.abstractmethod
    async def sync_metrics(self, config: MetricConfig) -> None:
        """Track what a plan's metrics need (beforeStep steps, duration points and buckets)."""

    @abc.abstractmethod
    async def read_aggregates(self) -> Aggregates:
        """The counts the triggers keep: a read of a few rows, however many runs there are."""
