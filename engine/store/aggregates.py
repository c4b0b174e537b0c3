"""Aggregates the business metrics read, kept by the database itself as runs change.

A scrape must not scan runs (there may be millions), and every replica of a PostgreSQL
deployment must report the same values after any restart. So the store keeps counts that change
in the same transaction as the rows they count, maintained by triggers on `runs`, `steps`,
`audit` and `outbox` (nothing in the write paths calls them, so no write can forget them):

- ``tallies(kind, flow, name, code, step, n)``: kind ``runs`` counts runs now in state `name`
  with reason `code`/`step` ('' for none); ``entered`` counts runs that ever entered a state;
  ``action`` counts operator actions (`name`) from the audit log; ``done:<step>`` counts runs now
  in a state that have completed `<step>` (only for the (flow, step) pairs in ``metric_steps``,
  which a `beforeStep` names).
- Durations: ``metric_points`` names, per duration metric, its start and end point
  (``run:FLOW:STATE`` or ``event:TYPE``); a start leaves a mark per correlation id
  (``metric_marks``), an end observes `now - mark` into ``metric_buckets`` (cumulative, one row
  per upper bound, +inf last) and ``metric_sums``, and removes the mark.

SQLite has one writer, so its triggers update the counts in place. On PostgreSQL concurrent
transactions would lock the same count rows in different orders (deadlocks), so its triggers only
append deltas (engine/store/aggregates_postgres.py); a read adds the deltas to the base
rows, and folds them in when it can take the aggregation lock (one replica at a time).

`MetricConfig` is what a plan's metrics need tracked; `sync` writes it (at startup and on
reload). A new `beforeStep` is backfilled from the steps once; a duration counts from the moment
its points are first synced.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.compiler.metrics import CompiledMetric

DONE = "('succeeded', 'skipped')"  # a step a run has got past


@dataclass(frozen=True)
class MetricConfig:
    """What the store must track for a plan's metrics (plain values: it crosses processes)."""

    steps: tuple[tuple[str, str], ...] = ()            # (flow, step) of each beforeStep
    points: tuple[tuple[str, str, str], ...] = ()      # (point, metric, 'from' | 'to')
    buckets: tuple[tuple[str, tuple[float, ...]], ...] = ()  # duration metric -> upper bounds


def metric_config(metrics: Mapping[str, CompiledMetric]) -> MetricConfig:
    steps: set[tuple[str, str]] = set()
    points: list[tuple[str, str, str]] = []
    buckets: list[tuple[str, tuple[float, ...]]] = []
    for metric in metrics.values():
        if metric.before_step and metric.flows:
            steps.update((flow, metric.before_step) for flow in metric.flows)
        if metric.kind == "duration":
            start, end = metric.points
            points += [(start, metric.name, "from"), (end, metric.name, "to")]
            buckets.append((metric.name, (*metric.buckets, math.inf)))
    return MetricConfig(tuple(sorted(steps)), tuple(sorted(points)), tuple(sorted(buckets)))


@dataclass
class Aggregates:
    """What a scrape reads: tally rows and each duration's histogram."""

    tallies: list[tuple[str, str, str, str, str, int]] = field(default_factory=list)
    # metric -> ([(upper bound, cumulative count)], count, sum of seconds)
    durations: dict[str, tuple[list[tuple[float, int]], int, float]] = field(default_factory=dict)


# -- SQLite ---------------------------------------------------------------------------------------
def _sqlite_code(row: str) -> str:
    return f"coalesce(json_extract({row}.reason, '$.code'), '')"


def _sqlite_step(row: str) -> str:
    return f"coalesce(json_extract({row}.reason, '$.step'), '')"


def _sqlite_ends(points: str, correlation: str, at: str) -> str:
    """Statements that observe the durations ending at `points` (an SQL list)."""
    ends = f"SELECT p.metric FROM metric_points AS p WHERE p.role = 'to' AND p.point IN ({points})"
    return f"""
    UPDATE metric_buckets SET n = n + 1
        WHERE metric IN ({ends}) AND le >= (SELECT {at} - m.at FROM metric_marks AS m
            WHERE m.metric = metric_buckets.metric AND m.correlation_id = {correlation});
    INSERT INTO metric_sums (metric, count, total)
        SELECT m.metric, 1, {at} - m.at FROM metric_marks AS m
        WHERE m.correlation_id = {correlation} AND m.metric IN ({ends})
        ON CONFLICT (metric) DO UPDATE SET count = count + 1, total = total + excluded.total;
    DELETE FROM metric_marks WHERE correlation_id = {correlation} AND metric IN ({ends});"""


def _sqlite_point_triggers(name: str, event: str, points: str, correlation: str,
                           at: str, when: str = "true") -> str:
    """Two triggers on `event`: one observes the durations ending at `points`, one marks the
    starts; each runs only when a metric names one of the points in that role."""
    def exists(role: str) -> str:
        return (f"{when} AND EXISTS (SELECT 1 FROM metric_points "
                f"WHERE role = '{role}' AND point IN ({points}))")

    return f"""
CREATE TRIGGER {name}_ends AFTER {event} WHEN {exists('to')}
BEGIN
    {_sqlite_ends(points, correlation, at)}
END;
CREATE TRIGGER {name}_starts AFTER {event} WHEN {exists('from')}
BEGIN
    INSERT INTO metric_marks (metric, correlation_id, at)
        SELECT p.metric, {correlation}, {at} FROM metric_points AS p
        WHERE p.role = 'from' AND p.point IN ({points})
        ON CONFLICT DO NOTHING;
END;"""


def _sqlite_done(run: str, sign: str) -> str:
    """Move the run's completed tracked steps out of (`-`) or into (`+`) its tally rows."""
    join = (f"FROM metric_steps AS m JOIN steps AS s ON s.run_id = {run}.id "
            f"AND s.step_id = m.step AND s.state IN {DONE} WHERE m.flow = {run}.flow")
    if sign == "-":
        return (f"UPDATE tallies SET n = n - 1 WHERE kind IN (SELECT 'done:' || s.step_id {join}) "
                f"AND flow = {run}.flow AND name = {run}.state AND code = {_sqlite_code(run)} "
                f"AND step = {_sqlite_step(run)};")
    return (f"INSERT INTO tallies SELECT 'done:' || s.step_id, {run}.flow, {run}.state, "
            f"{_sqlite_code(run)}, {_sqlite_step(run)}, 1 {join} "
            "ON CONFLICT DO UPDATE SET n = n + 1;")


_TRACKED = ("EXISTS (SELECT 1 FROM metric_steps AS m JOIN runs AS r ON r.id = {row}.run_id "
            "AND r.flow = m.flow WHERE m.step = {row}.step_id)")


def _sqlite_step_tally(row: str, sign: str) -> str:
    return (f"INSERT INTO tallies SELECT 'done:' || {row}.step_id, r.flow, r.state, "
            f"{_sqlite_code('r')}, {_sqlite_step('r')}, {sign}1 FROM runs AS r "
            f"WHERE r.id = {row}.run_id ON CONFLICT DO UPDATE SET n = n {sign} 1;")


_NEW_RUN_POINTS = ("'run:' || new.flow || ':' || new.state, "
                   "'event:' || (SELECT e.type FROM events AS e WHERE e.id = new.event_id)")

SQLITE_MIGRATION = f"""
CREATE TABLE tallies (
    kind TEXT NOT NULL, flow TEXT NOT NULL, name TEXT NOT NULL, code TEXT NOT NULL,
    step TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (kind, flow, name, code, step)
) WITHOUT ROWID;
CREATE TABLE metric_steps (
    flow TEXT NOT NULL, step TEXT NOT NULL, PRIMARY KEY (flow, step)
) WITHOUT ROWID;
CREATE TABLE metric_points (
    point TEXT NOT NULL, metric TEXT NOT NULL, role TEXT NOT NULL,
    PRIMARY KEY (point, role, metric)
) WITHOUT ROWID;
CREATE TABLE metric_marks (
    metric TEXT NOT NULL, correlation_id TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (correlation_id, metric)
) WITHOUT ROWID;
CREATE TABLE metric_buckets (
    metric TEXT NOT NULL, le REAL NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (metric, le)
) WITHOUT ROWID;
CREATE TABLE metric_sums (
    metric TEXT PRIMARY KEY, count INTEGER NOT NULL, total REAL NOT NULL
) WITHOUT ROWID;
INSERT INTO tallies
    SELECT 'runs', flow, state, {_sqlite_code('runs')}, {_sqlite_step('runs')}, count(*)
    FROM runs GROUP BY 1, 2, 3, 4, 5;
INSERT INTO tallies
    SELECT 'entered', flow, name, code, step, n FROM tallies WHERE kind = 'runs';
CREATE TRIGGER tally_run_insert AFTER INSERT ON runs
BEGIN
    INSERT INTO tallies VALUES
        ('runs', new.flow, new.state, {_sqlite_code('new')}, {_sqlite_step('new')}, 1),
        ('entered', new.flow, new.state, {_sqlite_code('new')}, {_sqlite_step('new')}, 1)
        ON CONFLICT DO UPDATE SET n = n + 1;
END;
{_sqlite_point_triggers("metric_run_insert", "INSERT ON runs", _NEW_RUN_POINTS,
                         "new.correlation_id", "new.created_at")}
CREATE TRIGGER tally_run_update AFTER UPDATE OF state, reason ON runs
WHEN new.state IS NOT old.state OR new.reason IS NOT old.reason
BEGIN
    UPDATE tallies SET n = n - 1 WHERE kind = 'runs' AND flow = old.flow AND name = old.state
        AND code = {_sqlite_code('old')} AND step = {_sqlite_step('old')};
    INSERT INTO tallies VALUES
        ('runs', new.flow, new.state, {_sqlite_code('new')}, {_sqlite_step('new')}, 1)
        ON CONFLICT DO UPDATE SET n = n + 1;
    INSERT INTO tallies SELECT 'entered', new.flow, new.state, {_sqlite_code('new')},
        {_sqlite_step('new')}, 1 WHERE new.state IS NOT old.state
        ON CONFLICT DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER tally_run_steps AFTER UPDATE OF state, reason ON runs
WHEN (new.state IS NOT old.state OR new.reason IS NOT old.reason)
    AND EXISTS (SELECT 1 FROM metric_steps WHERE flow = new.flow)
BEGIN
    {_sqlite_done('old', '-')}
    {_sqlite_done('new', '+')}
END;
{_sqlite_point_triggers("metric_run_update", "UPDATE OF state ON runs",
                         "'run:' || new.flow || ':' || new.state", "new.correlation_id",
                         "new.updated_at", "new.state IS NOT old.state")}
CREATE TRIGGER tally_step_replace BEFORE INSERT ON steps
WHEN {_TRACKED.format(row='new')} AND EXISTS (SELECT 1 FROM steps AS s
    WHERE s.run_id = new.run_id AND s.step_id = new.step_id AND s.state IN {DONE})
BEGIN
    {_sqlite_step_tally('new', '-')}
END;
CREATE TRIGGER tally_step_insert AFTER INSERT ON steps
WHEN new.state IN {DONE} AND {_TRACKED.format(row='new')}
BEGIN
    {_sqlite_step_tally('new', '+')}
END;
CREATE TRIGGER tally_step_delete AFTER DELETE ON steps
WHEN old.state IN {DONE} AND {_TRACKED.format(row='old')}
BEGIN
    {_sqlite_step_tally('old', '-')}
END;
CREATE TRIGGER tally_action AFTER INSERT ON audit WHEN new.run_id IS NOT NULL
BEGIN
    INSERT INTO tallies SELECT 'action', r.flow, new.action, '', '', 1 FROM runs AS r
        WHERE r.id = new.run_id ON CONFLICT DO UPDATE SET n = n + 1;
END;
{_sqlite_point_triggers("metric_emitted", "INSERT ON outbox",
                         "'event:' || json_extract(new.event, '$.type')",
                         "(SELECT r.correlation_id FROM runs AS r WHERE r.id = new.run_id)",
                         "new.created_at")}
"""


def sqlite_sync(conn: Any, config: MetricConfig) -> None:
    """Write `config` (a writer job: inside the writer's transaction)."""
    have = set(conn.execute("SELECT flow, step FROM metric_steps").fetchall())
    want = set(config.steps)
    for flow, step in have - want:
        conn.execute("DELETE FROM metric_steps WHERE flow = ? AND step = ?", (flow, step))
        conn.execute("DELETE FROM tallies WHERE kind = ? AND flow = ?", (f"done:{step}", flow))
    for flow, step in want - have:
        conn.execute("INSERT INTO metric_steps VALUES (?, ?)", (flow, step))
        conn.execute(
            f"INSERT INTO tallies SELECT 'done:' || s.step_id, r.flow, r.state, "
            f"{_sqlite_code('r')}, {_sqlite_step('r')}, count(*) FROM runs AS r "
            f"JOIN steps AS s ON s.run_id = r.id AND s.step_id = ? AND s.state IN {DONE} "
            "WHERE r.flow = ? GROUP BY 1, 2, 3, 4, 5",
            (step, flow),
        )
    conn.execute("DELETE FROM metric_points")
    conn.executemany("INSERT INTO metric_points VALUES (?, ?, ?)", config.points)
    _sync_buckets(conn, config, "?")


def _sync_buckets(conn: Any, config: MetricConfig, mark: str) -> None:
    """Reset a duration's histogram when its bounds change; drop those of removed metrics."""
    stored: dict[str, list[float]] = {}
    for metric, le in conn.execute("SELECT metric, le FROM metric_buckets ORDER BY metric, le"):
        stored.setdefault(metric, []).append(float(le))
    wanted = dict(config.buckets)
    for metric in set(stored) | set(wanted):
        if stored.get(metric) == list(wanted.get(metric, ())):
            continue
        for table in ("metric_buckets", "metric_sums", "metric_marks"):
            conn.execute(f"DELETE FROM {table} WHERE metric = {mark}", (metric,))
        for le in wanted.get(metric, ()):
            conn.execute(f"INSERT INTO metric_buckets VALUES ({mark}, {mark}, 0)", (metric, le))


def sqlite_read(conn: Any) -> Aggregates:
    """Every tally and histogram (a reader job: one read transaction)."""
    tallies = conn.execute("SELECT kind, flow, name, code, step, n FROM tallies").fetchall()
    return Aggregates(tallies, _durations(conn))


def _durations(conn: Any) -> dict[str, tuple[list[tuple[float, int]], int, float]]:
    durations: dict[str, tuple[list[tuple[float, int]], int, float]] = {}
    rows = conn.execute("SELECT metric, le, n FROM metric_buckets ORDER BY metric, le")
    for metric, le, n in rows:
        durations.setdefault(metric, ([], 0, 0.0))[0].append((float(le), int(n)))
    for metric, count, total in conn.execute("SELECT metric, count, total FROM metric_sums"):
        if metric in durations:
            durations[metric] = (durations[metric][0], int(count), float(total))
    return durations
