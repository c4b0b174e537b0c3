"""Reading runs from PostgreSQL: one run, its steps, listings, counts, and ordering-key
blockers."""

from __future__ import annotations

from engine.store.aggregates import run_counts
from engine.store.aggregates_postgres import postgres_read
from engine.store.interface.reads import RunReads
from engine.store.ordering import blocker
from engine.store.postgres.core import PostgresCore
from engine.store.postgres_sql import select_runs
from engine.store.records import RunQuery, RunRecord, StepRecord
from engine.store.rows import STEP_COLUMNS, step_record


class PostgresReads(PostgresCore, RunReads):
    async def get_run(self, run_id: str) -> RunRecord | None:
        async with self._transaction() as conn:
            records = await select_runs(conn, "WHERE id = %s", [run_id])
        return records[0] if records else None

    async def get_steps(self, run_id: str) -> dict[str, StepRecord]:
        rows = await self._rows(
            f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = %s",
            (run_id,),
        )
        return {row[1]: step_record(row) for row in rows}

    async def list_runs(self, query: RunQuery) -> list[RunRecord]:
        """Runs matching `query`, newest first."""
        where: list[str] = []
        params: list[object] = []
        for column, value in (
            ("flow", query.flow), ("state", query.state), ("key", query.key),
            ("correlation_id", query.correlation_id),
        ):  # fmt: skip
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        if query.before_seq is not None:
            where.append("seq < %s")
            params.append(query.before_seq)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        async with self._transaction() as conn:
            return await select_runs(
                conn, f"{clause} ORDER BY seq DESC LIMIT %s", [*params, query.limit]
            )

    async def count_runs(self) -> dict[tuple[str, str], int]:
        async with self._transaction() as conn:
            return run_counts(await postgres_read(conn))  # the tallies: no scan of runs

    async def blocked_by(self, run: RunRecord) -> str | None:
        return await blocker(self, run)
