"""Aggregates the business metrics read, kept by the database itself as runs change.

A scrape must not scan runs (there may be millions), and every replica of a PostgreSQL
deployment must report the same values after any restart. So the store keeps counts that change
in the same transaction as the rows they count, maintained by triggers on `runs`, `steps`,
`audit` and `outbox` (nothing in the write paths calls them, so no write can forget them):

- ``tallies(kind, flow, name, code, step, ...)``: kind ``runs`` counts runs now in state `name`
  with reason `code`/`step` ('' for none) and how many ever entered it (``entered``); ``action``
  counts operator actions (`name`) from the audit log; ``done:<step>`` counts runs now in a state
  that have completed `<step>` (for the (flow, step) pairs a `beforeStep` names).
- Durations: a metric's start point (``run:FLOW:STATE`` or ``event:TYPE``) leaves a mark per
  correlation id (``metric_marks``, the first start wins); its end observes `now - mark` into
  ``metric_buckets`` (cumulative, one row per upper bound, +inf last) and ``metric_sums``, and
  removes the mark.

Labels that read a run's data or steps are counted apart, under the values the runtime resolved
for each run (engine/store/label_tallies.py).

`MetricConfig` is what a plan's metrics need tracked; `Store.sync_metrics` writes it at startup
and on reload. A new `beforeStep` is backfilled from the steps once; a duration counts from the
moment its points are first synced, and starts over when its buckets change. How each store
does it: SQLite (here) has one writer, so its triggers update the counts in place, and the
triggers of metric points and steps are created by `sqlite_sync` with the names as literals (a
write no metric names pays for nothing more than the run tallies). On PostgreSQL
(aggregates_postgres.py) concurrent transactions would lock the same count rows in different
orders, so its triggers append deltas that a read folds in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.store.label_tallies import (
    SQLITE_READ_LABELS,
    LabelRow,
    label_rows,
    label_signatures,
    sqlite_sync_labels,
)

if TYPE_CHECKING:  # the writer process imports this module: it must not load the compiler
    from engine.compiler.metrics import CompiledMetric

# A step a run has got past: a step compensated after it completed stays past (compensation
# undoes its effect; the run does not wait for the step again, and its labels keep the values
# they were resolved with: engine/store/label_tallies.py).
DONE = "('succeeded', 'skipped', 'compensated')"


@dataclass(frozen=True)
class MetricConfig:
    """What the store must track for a plan's metrics (plain values: it crosses processes)."""

    steps: tuple[tuple[str, str], ...] = ()            # (flow, step) of each beforeStep
    points: tuple[tuple[str, str, str], ...] = ()      # (point, metric, 'from' | 'to')
    buckets: tuple[tuple[str, tuple[float, ...]], ...] = ()  # duration metric -> upper bounds
    labels: tuple[tuple[str, str], ...] = ()           # (metric, signature) with run labels


def metric_config(metrics: Mapping[str, CompiledMetric]) -> MetricConfig:
    """What `metrics` need tracked. A metric with run labels is counted from its label set's
    rows, which leave out the runs past its beforeStep already: its step needs no `done:`
    counts (nor their triggers on every step and state written)."""
    steps: set[tuple[str, str]] = set()
    points: list[tuple[str, str, str]] = []
    buckets: list[tuple[str, tuple[float, ...]]] = []
    for metric in metrics.values():
        if metric.before_step and metric.flows and not metric.run_labels:
            steps.update((flow, metric.before_step) for flow in metric.flows)
        if metric.kind == "duration":
            start, end = metric.points
            points += [(start, metric.name, "from"), (end, metric.name, "to")]
            buckets.append((metric.name, (*metric.buckets, math.inf)))
    return MetricConfig(tuple(sorted(steps)), tuple(sorted(points)), tuple(sorted(buckets)),
                        label_signatures(metrics))


@dataclass
class Aggregates:
    """What a scrape reads: tally rows and each duration's histogram."""

    tallies: list[tuple[str, str, str, str, str, int]] = field(default_factory=list)
    # metric -> ([(upper bound, cumulative count)], count, sum of seconds)
    durations: dict[str, tuple[list[tuple[float, int]], int, float]] = field(default_factory=dict)
    # (metric, flow, state, code, step, run label values, runs now, runs that entered)
    labelled: list[LabelRow] = field(default_factory=list)


def run_counts(aggregates: Aggregates) -> dict[tuple[str, str], int]:
    """(flow, state) -> runs now, from the tallies (what `Store.count_runs` answers)."""
    counts: dict[tuple[str, str], int] = {}
    for kind, flow, state, _, _, n in aggregates.tallies:
        if kind == "runs" and n:
            counts[(flow, state)] = counts.get((flow, state), 0) + n
    return counts


# -- SQLite ---------------------------------------------------------------------------------------
# Static: the run and action tallies (every write pays for these: two statements per state change).
# Dynamic: `sqlite_sync` creates one trigger per point or beforeStep the metrics name, with the
# names as literals in its WHEN clause, so a write that touches no metric point runs nothing more.
def _code(row: str) -> str:
    return f"coalesce(json_extract({row}.reason, '$.code'), '')"


def _step(row: str) -> str:
    return f"coalesce(json_extract({row}.reason, '$.step'), '')"


SQLITE_MIGRATION = f"""
CREATE TABLE tallies (
    kind TEXT NOT NULL, flow TEXT NOT NULL, name TEXT NOT NULL, code TEXT NOT NULL,
    step TEXT NOT NULL,
    n INTEGER NOT NULL,                -- now: runs in this state (kind runs, done:<step>)
    total INTEGER NOT NULL DEFAULT 0,  -- ever: runs that entered it, or actions taken
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
    SELECT 'runs', flow, state, {_code('runs')}, {_step('runs')}, count(*), count(*)
    FROM runs GROUP BY 1, 2, 3, 4, 5;
CREATE TRIGGER tally_run_insert AFTER INSERT ON runs
BEGIN
    INSERT INTO tallies VALUES ('runs', new.flow, new.state, {_code('new')}, {_step('new')}, 1, 1)
        ON CONFLICT DO UPDATE SET n = n + 1, total = total + 1;
END;
CREATE TRIGGER tally_run_update AFTER UPDATE OF state, reason ON runs
WHEN new.state IS NOT old.state OR new.reason IS NOT old.reason
BEGIN
    UPDATE tallies SET n = n - 1 WHERE kind = 'runs' AND flow = old.flow AND name = old.state
        AND code = {_code('old')} AND step = {_step('old')};
    INSERT INTO tallies VALUES ('runs', new.flow, new.state, {_code('new')}, {_step('new')}, 1,
                                new.state IS NOT old.state)
        ON CONFLICT DO UPDATE SET n = n + 1, total = total + excluded.total;
END;
CREATE TRIGGER tally_action AFTER INSERT ON audit WHEN new.run_id IS NOT NULL
BEGIN
    INSERT INTO tallies SELECT 'action', r.flow, new.action, '', '', 0, 1 FROM runs AS r
        WHERE r.id = new.run_id ON CONFLICT DO UPDATE SET total = total + 1;
END;
"""


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _observe(metric: str, role: str, correlation: str, at: str) -> str:
    """The statements of one metric at one of its points: mark a start, or observe an end."""
    m = _literal(metric)
    if role == "from":
        return (f"INSERT INTO metric_marks VALUES ({m}, {correlation}, {at}) "
                "ON CONFLICT DO NOTHING;")
    mark = f"metric_marks AS m WHERE m.correlation_id = {correlation} AND m.metric = {m}"
    return f"""
    UPDATE metric_buckets SET n = n + 1
        WHERE metric = {m} AND le >= (SELECT {at} - m.at FROM {mark});
    INSERT INTO metric_sums SELECT {m}, 1, {at} - m.at FROM {mark}
        ON CONFLICT (metric) DO UPDATE SET count = count + 1, total = total + excluded.total;
    DELETE FROM metric_marks WHERE correlation_id = {correlation} AND metric = {m};"""


def _point_triggers(i: int, point: str, roles: list[tuple[str, str]]) -> list[str]:
    """The triggers that notice `point` (ends observed before starts are marked)."""
    roles = sorted(roles, key=lambda r: r[1] != "to")
    kind, _, rest = point.partition(":")
    if kind == "run":
        flow, _, state = rest.rpartition(":")
        when = f"new.flow = {_literal(flow)} AND new.state = {_literal(state)}"
        places = [("INSERT ON runs", when, "new.correlation_id", "new.created_at"),
                  ("UPDATE OF state ON runs", f"new.state IS NOT old.state AND {when}",
                   "new.correlation_id", "new.updated_at")]
    else:
        places = [("INSERT ON runs", "(SELECT e.type FROM events AS e WHERE e.id = new.event_id)"
                   f" = {_literal(rest)}", "new.correlation_id", "new.created_at"),
                  ("INSERT ON outbox", f"json_extract(new.event, '$.type') = {_literal(rest)}",
                   "(SELECT r.correlation_id FROM runs AS r WHERE r.id = new.run_id)",
                   "new.created_at")]
    triggers = []
    for j, (event, when, correlation, at) in enumerate(places):
        body = "\n".join(_observe(metric, role, correlation, at) for metric, role in roles)
        triggers.append(f"CREATE TRIGGER metric_point_{i}_{j} AFTER {event} WHEN {when}\n"
                        f"BEGIN\n{body}\nEND")
    return triggers


def _step_triggers(i: int, flow: str, step: str) -> list[str]:
    """The triggers that keep `done:<step>` of `flow`: a run moving with the step completed, the
    step written (once, even when rewritten) and the step reset."""
    f, s, kind = _literal(flow), _literal(step), _literal(f"done:{step}")

    def tally(row: str, sign: str) -> str:
        return (f"INSERT INTO tallies SELECT {kind}, r.flow, r.state, {_code('r')}, "
                f"{_step('r')}, {sign}1, 0 FROM runs AS r WHERE r.id = {row}.run_id "
                f"ON CONFLICT DO UPDATE SET n = n {sign} 1;")

    def of_flow(row: str) -> str:
        return f"(SELECT r.flow FROM runs AS r WHERE r.id = {row}.run_id) = {f}"

    done = f"SELECT 1 FROM steps AS s WHERE s.run_id = {{}} AND s.step_id = {s} " \
        f"AND s.state IN {DONE}"
    return [
        f"""CREATE TRIGGER metric_step_{i}_move AFTER UPDATE OF state, reason ON runs
WHEN new.flow = {f} AND (new.state IS NOT old.state OR new.reason IS NOT old.reason)
    AND EXISTS ({done.format('new.id')})
BEGIN
    UPDATE tallies SET n = n - 1 WHERE kind = {kind} AND flow = {f} AND name = old.state
        AND code = {_code('old')} AND step = {_step('old')};
    INSERT INTO tallies VALUES ({kind}, {f}, new.state, {_code('new')}, {_step('new')}, 1, 0)
        ON CONFLICT DO UPDATE SET n = n + 1;
END""",
        f"""CREATE TRIGGER metric_step_{i}_replace BEFORE INSERT ON steps
WHEN new.step_id = {s} AND EXISTS ({done.format('new.run_id')}) AND {of_flow('new')}
BEGIN {tally('new', '-')} END""",
        f"""CREATE TRIGGER metric_step_{i}_insert AFTER INSERT ON steps
WHEN new.step_id = {s} AND new.state IN {DONE} AND {of_flow('new')}
BEGIN {tally('new', '+')} END""",
        f"""CREATE TRIGGER metric_step_{i}_delete AFTER DELETE ON steps
WHEN old.step_id = {s} AND old.state IN {DONE} AND {of_flow('old')}
BEGIN {tally('old', '-')} END""",
    ]


# The `done:` counts again, now that a step compensated after it completed stays done (DONE);
# the triggers themselves are written again by every sync.
SQLITE_DONE_MIGRATION = f"""
DELETE FROM tallies WHERE kind LIKE 'done:%';
INSERT INTO tallies SELECT 'done:' || s.step_id, r.flow, r.state, {_code('r')}, {_step('r')},
    count(*), 0 FROM runs AS r JOIN metric_steps AS m ON m.flow = r.flow
    JOIN steps AS s ON s.run_id = r.id AND s.step_id = m.step AND s.state IN {DONE}
    GROUP BY 1, 2, 3, 4, 5;
"""


def sqlite_triggers(config: MetricConfig) -> list[str]:
    """The dynamic triggers of `config`."""
    points: dict[str, list[tuple[str, str]]] = {}
    for point, metric, role in config.points:
        points.setdefault(point, []).append((metric, role))
    triggers = []
    for i, (point, roles) in enumerate(sorted(points.items())):
        triggers += _point_triggers(i, point, roles)
    for i, (flow, step) in enumerate(config.steps):
        triggers += _step_triggers(i, flow, step)
    return triggers


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
            f"{_code('r')}, {_step('r')}, count(*), 0 FROM runs AS r "
            f"JOIN steps AS s ON s.run_id = r.id AND s.step_id = ? AND s.state IN {DONE} "
            "WHERE r.flow = ? GROUP BY 1, 2, 3, 4, 5",
            (step, flow),
        )
    conn.execute("DELETE FROM metric_points")
    conn.executemany("INSERT INTO metric_points VALUES (?, ?, ?)", config.points)
    _sync_buckets(conn, config, "?")
    sqlite_sync_labels(conn, config.labels)
    for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'metric_%'"
    ).fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    for trigger in sqlite_triggers(config):
        conn.execute(trigger)


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
    rows = conn.execute("SELECT kind, flow, name, code, step, n, total FROM tallies").fetchall()
    labelled = label_rows(conn.execute(SQLITE_READ_LABELS).fetchall())
    return Aggregates(expand(rows), _durations(conn), labelled)


def expand(rows: list[tuple[Any, ...]]) -> list[tuple[str, str, str, str, str, int]]:
    """Tally rows (kind, flow, name, code, step, now, ever) as the 6-tuples `Aggregates` holds:
    a `runs` row is also an `entered` row (its `ever`), an `action` row counts its `ever`."""
    out = []
    for kind, flow, name, code, step, now, ever in rows:
        if kind == "runs":
            out.append(("entered", flow, name, code, step, int(ever)))
        out.append((kind, flow, name, code, step, int(ever if kind == "action" else now)))
    return out


def _durations(conn: Any) -> dict[str, tuple[list[tuple[float, int]], int, float]]:
    durations: dict[str, tuple[list[tuple[float, int]], int, float]] = {}
    rows = conn.execute("SELECT metric, le, n FROM metric_buckets ORDER BY metric, le")
    for metric, le, n in rows:
        durations.setdefault(metric, ([], 0, 0.0))[0].append((float(le), int(n)))
    for metric, count, total in conn.execute("SELECT metric, count, total FROM metric_sums"):
        if metric in durations:
            durations[metric] = (durations[metric][0], int(count), float(total))
    return durations
