"""Reading runs from SQLite: one run, its steps, listings, counts, and ordering-key blockers."""

from __future__ import annotations

import sqlite3

from engine.store.aggregates import run_counts, sqlite_read
from engine.store.interface.reads import RunReads
from engine.store.ordering import blocker
from engine.store.records import RunQuery, RunRecord, StepRecord
from engine.store.rows import RUN_COLUMNS, STEP_COLUMNS, run_filters, step_record
from engine.store.sqlite.core import SQLiteCore
from engine.store.sqlite.readers import query_all
from engine.store.sqlite_claims import run_records


def _q_run(conn: sqlite3.Connection, run_id: str) -> RunRecord | None:
    rows = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchall()
    return run_records(conn, rows)[0] if rows else None


def _q_list_runs(conn: sqlite3.Connection, query: RunQuery) -> list[RunRecord]:
    clause, params = run_filters(query, "?")
    rows = conn.execute(
        f"SELECT {RUN_COLUMNS} FROM runs {clause} ORDER BY seq DESC LIMIT ?",
        [*params, query.limit],
    ).fetchall()
    return run_records(conn, rows)


class SQLiteReads(SQLiteCore, RunReads):
    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run with `replayed_by` filled in, or None."""
        return await self._read(_q_run, run_id)

    async def get_steps(self, run_id: str) -> dict[str, StepRecord]:
        """The run's step records by step id."""
        rows = await self._read(
            query_all,
            f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ?",
            (run_id,),
        )
        return {row[1]: step_record(row) for row in rows}

    async def list_runs(self, query: RunQuery) -> list[RunRecord]:
        """Runs matching `query`, newest first."""
        query.before_seq  # noqa: B018 - a bad cursor raises UsageError here, before any read
        return await self._read(_q_list_runs, query)

    async def count_runs(self) -> dict[tuple[str, str], int]:
        """(flow, state) -> number of runs."""
        return run_counts(await self._read(sqlite_read))  # the tallies: no scan of runs

    async def blocked_by(self, run: RunRecord) -> str | None:
        return await blocker(self, run)
