"""Reading runs: one run, its steps, listings and counts, and what a run waits behind."""

from __future__ import annotations

import abc

from engine.store.records import RunQuery, RunRecord, StepRecord


class RunReads(abc.ABC):
    @abc.abstractmethod
    async def get_run(self, run_id: str) -> RunRecord | None: ...

    @abc.abstractmethod
    async def get_steps(self, run_id: str) -> dict[str, StepRecord]: ...

    @abc.abstractmethod
    async def list_runs(self, query: RunQuery) -> list[RunRecord]:
        """Runs matching `query`, newest first, at most `query.limit`."""

    @abc.abstractmethod
    async def count_runs(self) -> dict[tuple[str, str], int]:
        """(flow, state) -> count, for metrics and reports."""

    @abc.abstractmethod
    async def blocked_by(self, run: RunRecord) -> str | None:
        """The run that pending `run` waits behind: the active run of its ordering key, else the
        oldest earlier run that holds the key (engine/store/ordering.py); else None."""
