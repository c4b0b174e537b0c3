"""The aggregates of engine/store/aggregates.py on PostgreSQL: triggers that append deltas (so
concurrent transactions never lock the same count rows), folded into the base rows by whichever
replica reads while holding the aggregation lock."""

from __future__ import annotations

from typing import Any

from engine.store.aggregates import DONE, Aggregates, MetricConfig
from engine.store.label_tallies import (
    POSTGRES_FOLD_LABELS,
    POSTGRES_READ_LABELS,
    label_rows,
    postgres_sync_labels,
)

AGGREGATE_LOCK = 0x4147474C  # "AGGL": one replica folds deltas at a time

# Whether a run got past a beforeStep (DONE: a step compensated later stays done).
_DONE_STEPS = f"""
CREATE OR REPLACE FUNCTION syncline_done_steps(run_id text, run_flow text) RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    SELECT 'done:' || s.step_id FROM metric_steps AS m JOIN steps AS s
        ON s.run_id = $1 AND s.step_id = m.step AND s.state IN {DONE}
    WHERE m.flow = $2
$$;

"""
_TALLY_STEP = f"""
CREATE OR REPLACE FUNCTION syncline_tally_step() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    was_done boolean := TG_OP <> 'INSERT' AND OLD.state IN {DONE};
    is_done boolean := TG_OP <> 'DELETE' AND NEW.state IN {DONE};
    row_id text := CASE WHEN TG_OP = 'DELETE' THEN OLD.run_id ELSE NEW.run_id END;
    step_id text := CASE WHEN TG_OP = 'DELETE' THEN OLD.step_id ELSE NEW.step_id END;
BEGIN
    IF was_done = is_done THEN
        RETURN NULL;
    END IF;
    INSERT INTO tally_deltas
        SELECT 'done:' || step_id, r.flow, r.state, coalesce(r.reason::jsonb ->> 'code', ''),
               coalesce(r.reason::jsonb ->> 'step', ''), CASE WHEN is_done THEN 1 ELSE -1 END
        FROM runs AS r JOIN metric_steps AS m ON m.flow = r.flow AND m.step = step_id
        WHERE r.id = row_id;
    RETURN NULL;
END $$;
"""

POSTGRES_MIGRATION = f"""
CREATE TABLE tallies (
    kind text NOT NULL, flow text NOT NULL, name text NOT NULL, code text NOT NULL,
    step text NOT NULL, n bigint NOT NULL,
    PRIMARY KEY (kind, flow, name, code, step)
);
CREATE TABLE tally_deltas (
    kind text NOT NULL, flow text NOT NULL, name text NOT NULL, code text NOT NULL,
    step text NOT NULL, n bigint NOT NULL
);
CREATE TABLE metric_steps (flow text NOT NULL, step text NOT NULL, PRIMARY KEY (flow, step));
CREATE TABLE metric_points (
    point text NOT NULL, metric text NOT NULL, role text NOT NULL,
    PRIMARY KEY (point, role, metric)
);
CREATE TABLE metric_marks (
    metric text NOT NULL, correlation_id text NOT NULL, at double precision NOT NULL,
    PRIMARY KEY (correlation_id, metric)
);
CREATE TABLE metric_observations (metric text NOT NULL, seconds double precision NOT NULL);
CREATE TABLE metric_buckets (
    metric text NOT NULL, le double precision NOT NULL, n bigint NOT NULL,
    PRIMARY KEY (metric, le)
);
CREATE TABLE metric_sums (
    metric text PRIMARY KEY, count bigint NOT NULL, total double precision NOT NULL
);
INSERT INTO tallies
    SELECT 'runs', flow, state, coalesce(reason::jsonb ->> 'code', ''),
           coalesce(reason::jsonb ->> 'step', ''), count(*)
    FROM runs GROUP BY 1, 2, 3, 4, 5;
INSERT INTO tallies SELECT 'entered', flow, name, code, step, n FROM tallies WHERE kind = 'runs';

CREATE FUNCTION syncline_metric_points(p_points text[], p_correlation text, p_at double precision)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM metric_points WHERE point = ANY(p_points)) THEN
        RETURN;
    END IF;
    WITH ended AS (
        DELETE FROM metric_marks AS m WHERE m.correlation_id = p_correlation AND m.metric IN (
            SELECT p.metric FROM metric_points AS p WHERE p.role = 'to' AND p.point = ANY(p_points))
        RETURNING m.metric, m.at)
    INSERT INTO metric_observations SELECT ended.metric, p_at - ended.at FROM ended;
    INSERT INTO metric_marks
        SELECT p.metric, p_correlation, p_at FROM metric_points AS p
        WHERE p.role = 'from' AND p.point = ANY(p_points)
        ON CONFLICT DO NOTHING;
END $$;

{_DONE_STEPS}CREATE FUNCTION syncline_tally_run() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    new_code text := coalesce(NEW.reason::jsonb ->> 'code', '');
    new_step text := coalesce(NEW.reason::jsonb ->> 'step', '');
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.state IS NOT DISTINCT FROM OLD.state
           AND NEW.reason IS NOT DISTINCT FROM OLD.reason THEN
            RETURN NULL;
        END IF;
        INSERT INTO tally_deltas
            SELECT k, OLD.flow, OLD.state, coalesce(OLD.reason::jsonb ->> 'code', ''),
                   coalesce(OLD.reason::jsonb ->> 'step', ''), -1
            FROM (SELECT 'runs' UNION ALL
                  SELECT syncline_done_steps(OLD.id, OLD.flow)) AS kinds (k);
    END IF;
    INSERT INTO tally_deltas
        SELECT k, NEW.flow, NEW.state, new_code, new_step, 1
        FROM (SELECT 'runs' UNION ALL SELECT syncline_done_steps(NEW.id, NEW.flow)) AS kinds (k);
    IF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state THEN
        INSERT INTO tally_deltas VALUES ('entered', NEW.flow, NEW.state, new_code, new_step, 1);
        PERFORM syncline_metric_points(
            CASE WHEN TG_OP = 'INSERT' THEN ARRAY[
                'run:' || NEW.flow || ':' || NEW.state,
                'event:' || (SELECT e.type FROM events AS e WHERE e.id = NEW.event_id)]
            ELSE ARRAY['run:' || NEW.flow || ':' || NEW.state] END,
            NEW.correlation_id,
            CASE WHEN TG_OP = 'INSERT' THEN NEW.created_at ELSE NEW.updated_at END);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER tally_run AFTER INSERT OR UPDATE OF state, reason ON runs
    FOR EACH ROW EXECUTE FUNCTION syncline_tally_run();

{_TALLY_STEP}CREATE TRIGGER tally_step AFTER INSERT OR UPDATE OF state OR DELETE ON steps
    FOR EACH ROW EXECUTE FUNCTION syncline_tally_step();

CREATE FUNCTION syncline_tally_action() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tally_deltas
        SELECT 'action', r.flow, NEW.action, '', '', 1 FROM runs AS r WHERE r.id = NEW.run_id;
    RETURN NULL;
END $$;
CREATE TRIGGER tally_action AFTER INSERT ON audit
    FOR EACH ROW WHEN (NEW.run_id IS NOT NULL) EXECUTE FUNCTION syncline_tally_action();

CREATE FUNCTION syncline_metric_emitted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM syncline_metric_points(
        ARRAY['event:' || (NEW.event::jsonb ->> 'type')],
        (SELECT r.correlation_id FROM runs AS r WHERE r.id = NEW.run_id), NEW.created_at);
    RETURN NULL;
END $$;
CREATE TRIGGER metric_emitted AFTER INSERT ON outbox
    FOR EACH ROW EXECUTE FUNCTION syncline_metric_emitted();
"""


# A step compensated after it completed stays done (DONE): the functions again, and the `done:`
# counts of the runs whose steps were compensated before (they had left them).
POSTGRES_DONE_MIGRATION = _DONE_STEPS + _TALLY_STEP + f"""
DELETE FROM tally_deltas WHERE kind LIKE 'done:%';
DELETE FROM tallies WHERE kind LIKE 'done:%';
INSERT INTO tallies SELECT 'done:' || s.step_id, r.flow, r.state,
    coalesce(r.reason::jsonb ->> 'code', ''), coalesce(r.reason::jsonb ->> 'step', ''), count(*)
    FROM runs AS r JOIN metric_steps AS m ON m.flow = r.flow
    JOIN steps AS s ON s.run_id = r.id AND s.step_id = m.step AND s.state IN {DONE}
    GROUP BY 1, 2, 3, 4, 5;
"""


# New runs are tallied once per statement, not once per row: an accept batch inserts its runs in
# one statement, and the row trigger's PL/pgSQL (three inserts and a metric-points call a run)
# was half the database's time of an accept (4,000 accepts in batches of 32: 2.4 s with it,
# 1.2 s without). The row trigger keeps the updates; its INSERT branch no longer fires.
POSTGRES_NEW_RUNS_MIGRATION = """
DROP TRIGGER tally_run ON runs;
CREATE TRIGGER tally_run AFTER UPDATE OF state, reason ON runs
    FOR EACH ROW EXECUTE FUNCTION syncline_tally_run();
CREATE FUNCTION syncline_tally_new_runs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    INSERT INTO tally_deltas
        SELECT k, n.flow, n.state, coalesce(n.reason::jsonb ->> 'code', ''),
               coalesce(n.reason::jsonb ->> 'step', ''), count(*)
        FROM new_runs AS n
        CROSS JOIN LATERAL (SELECT 'runs' UNION ALL SELECT 'entered'
                            UNION ALL SELECT syncline_done_steps(n.id, n.flow)) AS kinds (k)
        GROUP BY 1, 2, 3, 4, 5;
    IF EXISTS (SELECT 1 FROM metric_points) THEN
        FOR r IN SELECT n.flow, n.state, n.correlation_id, n.created_at, e.type
                 FROM new_runs AS n LEFT JOIN events AS e ON e.id = n.event_id ORDER BY n.seq
        LOOP
            PERFORM syncline_metric_points(
                ARRAY['run:' || r.flow || ':' || r.state, 'event:' || r.type],
                r.correlation_id, r.created_at);
        END LOOP;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER tally_new_runs AFTER INSERT ON runs REFERENCING NEW TABLE AS new_runs
    FOR EACH STATEMENT EXECUTE FUNCTION syncline_tally_new_runs();
"""

async def postgres_sync(conn: Any, config: MetricConfig) -> None:
    """Write `config` in the caller's transaction, under the aggregation lock."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (AGGREGATE_LOCK,))
    await _postgres_fold(conn)
    have = set(await (await conn.execute("SELECT flow, step FROM metric_steps")).fetchall())
    want = set(config.steps)
    for flow, step in have - want:
        await conn.execute("DELETE FROM metric_steps WHERE flow = %s AND step = %s", (flow, step))
        await conn.execute("DELETE FROM tallies WHERE kind = %s AND flow = %s",
                           (f"done:{step}", flow))
    for flow, step in want - have:
        await conn.execute("INSERT INTO metric_steps VALUES (%s, %s)", (flow, step))
        await conn.execute(
            "INSERT INTO tallies SELECT 'done:' || s.step_id, r.flow, r.state, "
            "coalesce(r.reason::jsonb ->> 'code', ''), coalesce(r.reason::jsonb ->> 'step', ''), "
            f"count(*) FROM runs AS r JOIN steps AS s ON s.run_id = r.id AND s.step_id = %s "
            f"AND s.state IN {DONE} WHERE r.flow = %s GROUP BY 1, 2, 3, 4, 5",
            (step, flow),
        )
    await conn.execute("DELETE FROM metric_points")
    for point in config.points:
        await conn.execute("INSERT INTO metric_points VALUES (%s, %s, %s)", point)
    stored: dict[str, list[float]] = {}
    rows = await (await conn.execute("SELECT metric, le FROM metric_buckets ORDER BY 1, 2")
                  ).fetchall()
    for metric, le in rows:
        stored.setdefault(metric, []).append(float(le))
    wanted = dict(config.buckets)
    for metric in set(stored) | set(wanted):
        if stored.get(metric) == list(wanted.get(metric, ())):
            continue
        for table in ("metric_buckets", "metric_sums", "metric_marks", "metric_observations"):
            sql = f"DELETE FROM {table} WHERE metric = %s"
            await conn.execute(sql, (metric,))
        for le in wanted.get(metric, ()):
            await conn.execute("INSERT INTO metric_buckets VALUES (%s, %s, 0)", (metric, le))
    await postgres_sync_labels(conn, config.labels)


async def _postgres_fold(conn: Any) -> None:
    """Add the deltas to the base rows (the caller holds the aggregation lock)."""
    await conn.execute(
        "WITH d AS (DELETE FROM tally_deltas RETURNING *) "
        "INSERT INTO tallies SELECT kind, flow, name, code, step, sum(n) FROM d "
        "GROUP BY 1, 2, 3, 4, 5 "
        "ON CONFLICT (kind, flow, name, code, step) DO UPDATE SET n = tallies.n + excluded.n"
    )
    await conn.execute(POSTGRES_FOLD_LABELS)
    observed = await (await conn.execute(
        "DELETE FROM metric_observations RETURNING metric, seconds")).fetchall()
    bounds: dict[str, list[float]] = {}
    rows = await (await conn.execute("SELECT metric, le FROM metric_buckets")).fetchall()
    for metric, le in rows:
        bounds.setdefault(metric, []).append(float(le))
    counts: dict[tuple[str, float], int] = {}
    sums: dict[str, tuple[int, float]] = {}
    for metric, seconds in observed:
        for le in bounds.get(metric, ()):
            if seconds <= le:
                counts[(metric, le)] = counts.get((metric, le), 0) + 1
        count, total = sums.get(metric, (0, 0.0))
        sums[metric] = (count + 1, total + seconds)
    for (metric, le), n in counts.items():
        await conn.execute("UPDATE metric_buckets SET n = n + %s WHERE metric = %s AND le = %s",
                           (n, metric, le))
    for metric, (count, total) in sums.items():
        await conn.execute(
            "INSERT INTO metric_sums VALUES (%s, %s, %s) ON CONFLICT (metric) DO UPDATE "
            "SET count = metric_sums.count + excluded.count, "
            "total = metric_sums.total + excluded.total",
            (metric, count, total))


async def postgres_read(conn: Any) -> Aggregates:
    """Fold the deltas in if no other replica is doing so, then read base rows plus deltas."""
    locked = await (await conn.execute(
        "SELECT pg_try_advisory_xact_lock(%s)", (AGGREGATE_LOCK,))).fetchone()
    if locked and locked[0]:
        await _postgres_fold(conn)
    tallies = await (await conn.execute(
        "SELECT kind, flow, name, code, step, sum(n)::bigint FROM (SELECT * FROM tallies "
        "UNION ALL SELECT * FROM tally_deltas) AS t GROUP BY 1, 2, 3, 4, 5")).fetchall()
    durations: dict[str, tuple[list[tuple[float, int]], int, float]] = {}
    for metric, le, n in await (await conn.execute(
            "SELECT metric, le, n FROM metric_buckets ORDER BY metric, le")).fetchall():
        durations.setdefault(metric, ([], 0, 0.0))[0].append((float(le), int(n)))
    for metric, count, total in await (await conn.execute(
            "SELECT metric, count, total FROM metric_sums")).fetchall():
        if metric in durations:
            durations[metric] = (durations[metric][0], int(count), float(total))
    labelled = label_rows(await (await conn.execute(POSTGRES_READ_LABELS)).fetchall())
    return Aggregates([tuple(row) for row in tallies], durations, labelled)
