"""Counts of runs by the metric labels they resolved from their data and steps.

A label that reads a run's `data` or `steps` cannot be evaluated at scrape time (a scrape never
reads runs); the runtime resolves it when the run's data or steps are written and hands the
values to the store with the write (`NewRun.labels`, `Checkpoint.labels`, `StateChange.labels`:
engine/compiler/metric_labels.py). The store then, in the same transaction:

- admits each value (`admit_*`): the first MAX_LABEL_VALUES distinct values of a label are kept
  in ``label_values``; any later one is written as ``other`` (``unknown``, a label that failed on
  the run's data, is always kept). The admitted values are in the store, so every replica and
  every restart bounds a label alike, and the tallies stay a few rows however many runs there
  are;
- writes them on the run (``runs.labels``: JSON ``{metric key: [values]}``), where triggers move
  the run's count in ``label_tallies(metric, flow, state, code, step, labels)`` from the key it
  was counted under (the old row's labels) to its new one: a run corrected and resumed is
  decremented under exactly what it was incremented under.

Metrics whose run labels depend on the same things (flows, beforeStep, expressions: a *label
set*, engine/compiler/metric_labels.py) share one key, so a run carries, and a state change
moves, one entry per set rather than one per metric: the write cost of labels grows with the
distinct sets, not with the metrics reading them. A set's key is ``metric@generation``: when a
metric's set changes, `sync_*` gives it the key of its new set, a new generation (a random
name) if no other metric has that set; runs still carrying an old key move only its rows, which
nothing reads, and the old key's rows are dropped once no metric names it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the writer process imports this module: it must not load the compiler
    from engine.compiler.metrics import CompiledMetric
    from engine.store.records import RunLabels

MAX_LABEL_VALUES = 50
ALWAYS = frozenset({"other", "unknown"})  # values that are never admitted nor refused
LABEL_LOCK = 0x4C41424C  # "LABL": PostgreSQL replicas admit a label's new values one at a time
LabelRow = tuple[str, str, str, str, str, tuple[str, ...], int, int]

_dumps = json.JSONEncoder(separators=(",", ":")).encode


def label_signatures(metrics: Mapping[str, CompiledMetric]) -> tuple[tuple[str, str], ...]:
    """(metric, its label set: what its run labels depend on) for each metric with run
    labels; metrics of one set share its key (engine/compiler/metric_labels.py)."""
    return tuple(sorted((m.name, m.label_set) for m in metrics.values() if m.run_labels))


def _code(row: str) -> str:
    return f"coalesce(json_extract({row}.reason, '$.code'), '')"


def _step(row: str) -> str:
    return f"coalesce(json_extract({row}.reason, '$.step'), '')"


def _rows(row: str, n: str, total: str) -> str:
    return (f"SELECT j.key, {row}.flow, {row}.state, {_code(row)}, {_step(row)}, j.value, {n}, "
            f"{total} FROM json_each({row}.labels) AS j")


def _tally(*rows: str) -> str:
    """One statement counting `rows` (a run's move is one write, not one per side)."""
    return (f"INSERT INTO label_tallies SELECT * FROM ({' UNION ALL '.join(rows)}) WHERE true "
            "ON CONFLICT DO UPDATE SET n = n + excluded.n, total = total + excluded.total;")


SQLITE_LABELS_MIGRATION = f"""
ALTER TABLE runs ADD COLUMN labels TEXT;
CREATE TABLE label_tallies (
    metric TEXT NOT NULL, flow TEXT NOT NULL, state TEXT NOT NULL, code TEXT NOT NULL,
    step TEXT NOT NULL, labels TEXT NOT NULL,
    n INTEGER NOT NULL,                -- runs now in this state under these labels
    total INTEGER NOT NULL,            -- runs that entered this state under them
    PRIMARY KEY (metric, flow, state, code, step, labels)
) WITHOUT ROWID;
CREATE TABLE label_values (
    metric TEXT NOT NULL, label INTEGER NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (metric, label, value)
) WITHOUT ROWID;
CREATE TABLE metric_labels (
    metric TEXT PRIMARY KEY, signature TEXT, key TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE label_backfills (key TEXT PRIMARY KEY, after INTEGER NOT NULL) WITHOUT ROWID;
CREATE TRIGGER label_tally_insert AFTER INSERT ON runs WHEN new.labels IS NOT NULL
BEGIN
    {_tally(_rows('new', '1', '1'))}
END;
CREATE TRIGGER label_tally_update AFTER UPDATE OF state, reason, labels ON runs
WHEN (new.labels IS NOT NULL OR old.labels IS NOT NULL) AND (new.state IS NOT old.state
    OR new.reason IS NOT old.reason OR new.labels IS NOT old.labels)
BEGIN
    {_tally(_rows('old', '-1', '0'), _rows('new', '1', 'new.state IS NOT old.state'))}
END;
"""

_PG_KEYS = "jsonb_each_text(coalesce({}.labels, '{{}}')::jsonb)"
POSTGRES_LABELS_MIGRATION = f"""
ALTER TABLE runs ADD COLUMN labels text;
CREATE TABLE label_tallies (
    metric text NOT NULL, flow text NOT NULL, state text NOT NULL, code text NOT NULL,
    step text NOT NULL, labels text NOT NULL, n bigint NOT NULL, total bigint NOT NULL,
    PRIMARY KEY (metric, flow, state, code, step, labels)
);
CREATE TABLE label_tally_deltas (
    metric text NOT NULL, flow text NOT NULL, state text NOT NULL, code text NOT NULL,
    step text NOT NULL, labels text NOT NULL, n bigint NOT NULL, total bigint NOT NULL
);
CREATE TABLE label_values (
    metric text NOT NULL, label integer NOT NULL, value text NOT NULL,
    PRIMARY KEY (metric, label, value)
);
CREATE TABLE metric_labels (metric text PRIMARY KEY, signature text, key text NOT NULL);
CREATE TABLE label_backfills (key text PRIMARY KEY, after bigint NOT NULL);
CREATE FUNCTION syncline_tally_labels() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    entered bigint := 1;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.state IS NOT DISTINCT FROM OLD.state AND NEW.reason IS NOT DISTINCT FROM OLD.reason
           AND NEW.labels IS NOT DISTINCT FROM OLD.labels THEN
            RETURN NULL;
        END IF;
        IF NEW.state IS NOT DISTINCT FROM OLD.state THEN
            entered := 0;
        END IF;
        INSERT INTO label_tally_deltas
            SELECT j.key, OLD.flow, OLD.state, coalesce(OLD.reason::jsonb ->> 'code', ''),
                   coalesce(OLD.reason::jsonb ->> 'step', ''), j.value, -1, 0
            FROM {_PG_KEYS.format('OLD')} AS j;
    END IF;
    INSERT INTO label_tally_deltas
        SELECT j.key, NEW.flow, NEW.state, coalesce(NEW.reason::jsonb ->> 'code', ''),
               coalesce(NEW.reason::jsonb ->> 'step', ''), j.value, 1, entered
        FROM {_PG_KEYS.format('NEW')} AS j;
    RETURN NULL;
END $$;
CREATE TRIGGER tally_labels_insert AFTER INSERT ON runs
    FOR EACH ROW WHEN (NEW.labels IS NOT NULL) EXECUTE FUNCTION syncline_tally_labels();
CREATE TRIGGER tally_labels_update AFTER UPDATE OF state, reason, labels ON runs
    FOR EACH ROW WHEN (NEW.labels IS NOT NULL OR OLD.labels IS NOT NULL)
    EXECUTE FUNCTION syncline_tally_labels();
"""

# New runs' labels tallied once per insert statement (an accept batch), not once per row: the
# row trigger's PL/pgSQL ran for each run of a batch (the accept's CPU in the database doubled).
POSTGRES_NEW_LABELS_MIGRATION = """
DROP TRIGGER tally_labels_insert ON runs;
CREATE FUNCTION syncline_tally_new_labels() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO label_tally_deltas
        SELECT j.key, n.flow, n.state, coalesce(n.reason::jsonb ->> 'code', ''),
               coalesce(n.reason::jsonb ->> 'step', ''), j.value, count(*), count(*)
        FROM new_runs AS n CROSS JOIN LATERAL jsonb_each_text(n.labels::jsonb) AS j
        WHERE n.labels IS NOT NULL
        GROUP BY 1, 2, 3, 4, 5, 6;
    RETURN NULL;
END $$;
CREATE TRIGGER tally_new_labels AFTER INSERT ON runs REFERENCING NEW TABLE AS new_runs
    FOR EACH STATEMENT EXECUTE FUNCTION syncline_tally_new_labels();
"""

# -- admitting values (in the writing transaction) -------------------------------------------
_KEYS = "SELECT DISTINCT signature, key FROM metric_labels WHERE signature IS NOT NULL"
_KNOWN = ("SELECT count(*), count(*) FILTER (WHERE value = {0}) FROM label_values "
          "WHERE metric = {0} AND label = {0}")


# Values admitted, as this process has seen them in the store: (metric key, label, value). A
# key's admitted values are never taken back (a changed definition has a new key), so a value
# found here is admitted whatever another process wrote since; the hot path of a run whose
# labels repeat the usual values reads nothing more than the keys. (A write rolled back after
# admitting a value leaves it here and not in the store, uncounted: the scrape bounds again.)
_ADMITTED: set[tuple[str, int, str]] = set()


# The SQLite writer's keys by label set, read once a write transaction: under its write lock no
# other process changes them, and its own sync forgets them (`sqlite_sync_labels`).
_sqlite_keys: dict[str, str] | None = None


def forget_keys() -> None:
    """A new SQLite write transaction begins: read the keys again when first needed (another
    process, a CLI command or a second server on the file, may have synced since)."""
    global _sqlite_keys
    _sqlite_keys = None


def admit_sqlite(conn: Any, labels: RunLabels | None) -> str | None:
    """`labels` as the run's JSON, each value admitted (SQLite: the writer's transaction)."""
    global _sqlite_keys
    if labels is None:
        return None
    keys = _sqlite_keys
    if keys is None:
        keys = _sqlite_keys = dict(conn.execute(_KEYS).fetchall())
    refused = {value for value in _unseen(keys, labels) if not _admit_sqlite(conn, *value)}
    return _labels_json(keys, labels, refused)


def _admit_sqlite(conn: Any, key: str, label: int, value: str) -> bool:
    count, known = conn.execute(_KNOWN.format("?"), (value, key, label)).fetchone()
    if not known and count >= MAX_LABEL_VALUES:
        return False
    if not known:
        conn.execute("INSERT INTO label_values VALUES (?, ?, ?)", (key, label, value))
    _remember(key, label, value)
    return True


async def admit_postgres(conn: Any, labels: RunLabels | None) -> str | None:
    """`labels` as the run's JSON, each value admitted (PostgreSQL: the caller's transaction)."""
    return (await admit_postgres_many(conn, [labels]))[0]


async def admit_postgres_many(conn: Any, labelled: Sequence[RunLabels | None]
                              ) -> list[str | None]:
    """`admit_postgres` of each run's labels in one transaction: the keys read once, and each
    value not seen yet asked about once, under LABEL_LOCK if new (so that replicas never pass
    the bound). Runs whose values were all seen before cost one query together."""
    if all(labels is None for labels in labelled):
        return [None] * len(labelled)
    keys = await _postgres_keys(conn)
    unseen = dict.fromkeys(value for labels in labelled if labels  # in arrival order: the
                           for value in _unseen(keys, labels))    # first ones are admitted
    refused = {value for value in unseen if not await _admit_postgres(conn, *value)}
    return [None if labels is None else _labels_json(keys, labels, refused)
            for labels in labelled]


async def labels_if_seen(conn: Any, labelled: Sequence[RunLabels | None]
                         ) -> list[str | None] | None:
    """Each run's labels JSON if all their values were seen admitted (so that nothing is
    written for them: the keys are read, nothing else), else None (`admit_postgres_many`)."""
    keys = await _postgres_keys(conn)
    if any(_unseen(keys, labels) for labels in labelled if labels):
        return None
    return [None if labels is None else _labels_json(keys, labels, set())
            for labels in labelled]


async def _postgres_keys(conn: Any) -> dict[str, str]:
    return dict(await (await conn.execute(_KEYS)).fetchall())


async def _admit_postgres(conn: Any, key: str, label: int, value: str) -> bool:
    count, known = await (await conn.execute(_KNOWN.format("%s"), (value, key, label))).fetchone()
    if not known and count < MAX_LABEL_VALUES:
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (LABEL_LOCK,))
        count, known = await (await conn.execute(_KNOWN.format("%s"), (value, key, label))
                              ).fetchone()
        if not known and count < MAX_LABEL_VALUES:
            await conn.execute("INSERT INTO label_values VALUES (%s, %s, %s)", (key, label, value))
            known = True
    if known:
        _remember(key, label, value)
    return bool(known)


def _unseen(keys: Mapping[str, str], labels: RunLabels) -> list[tuple[str, int, str]]:
    """(key, label, value) of each value of `labels` the store must be asked about: not one of
    ALWAYS, and not seen admitted by this process. (A set whose key is not synced yet has
    nothing to ask: nothing would read it.)"""
    return [(key, i, value) for name, values in labels if (key := keys.get(name)) is not None
            for i, value in enumerate(values)
            if value not in ALWAYS and (key, i, value) not in _ADMITTED]


def _labels_json(keys: Mapping[str, str], labels: RunLabels,
                 refused: set[tuple[str, int, str]]) -> str:
    """The run's labels JSON: {key: [values]}, a refused value written as `other`."""
    return _dumps({key: ["other" if (key, i, value) in refused else value
                         for i, value in enumerate(values)]
                   for name, values in labels if (key := keys.get(name)) is not None})


def _remember(key: str, label: int, value: str) -> None:
    if len(_ADMITTED) < 100_000:  # the keys of many generations: past that, ask the store
        _ADMITTED.add((key, label, value))


# -- syncing definitions and reading ---------------------------------------------------------
def _changes(have: dict[str, tuple[str | None, str]], want: dict[str, str]
             ) -> tuple[list[tuple[str, str | None, str]], set[str]]:
    """(metric, label set, key) rows to write, and the keys no live row names any more (their
    tallies and values are dropped). A metric keeps its key while its set is unchanged; a
    changed or new one takes the key of its set if another metric has it, else a new
    generation (named at random: no two stores or generations share a key, nor `_ADMITTED`
    entries); a metric gone keeps its row without a set."""
    keys = {s: k for s, k in have.values() if s is not None and s in want.values()}
    rows = []
    for metric in sorted(have.keys() | want.keys()):
        signature = want.get(metric)
        if have.get(metric, (None, ""))[0] == signature:
            continue
        if signature is not None and signature not in keys:
            keys[signature] = f"{metric}@{uuid.uuid4().hex[:12]}"
        rows.append((metric, signature, keys[signature] if signature else have[metric][1]))
    return rows, {k for s, k in have.values() if s is not None} - set(keys.values())


def sqlite_sync_labels(conn: Any, wanted: tuple[tuple[str, str], ...]) -> list[str]:
    """Write the metrics' label sets; the keys that are new, recorded for the backfill of the
    runs already open (engine/store/label_backfill.py)."""
    have = {m: (s, k) for m, s, k in conn.execute("SELECT metric, signature, key FROM "
                                                    "metric_labels").fetchall()}
    rows, dropped = _changes(have, dict(wanted))
    forget_keys()
    conn.executemany("INSERT OR REPLACE INTO metric_labels VALUES (?, ?, ?)", rows)
    for key in sorted(dropped):  # the old generation's rows: nothing reads them any more
        for table in ("label_tallies", "label_values", "label_backfills"):
            conn.execute(f"DELETE FROM {table} WHERE {_KEY[table]} = ?", (key,))
    new = _new_keys(have, rows)
    conn.executemany("INSERT OR IGNORE INTO label_backfills VALUES (?, 0)", [(k,) for k in new])
    return new


async def postgres_sync_labels(conn: Any, wanted: tuple[tuple[str, str], ...]) -> list[str]:
    rows = await (await conn.execute("SELECT metric, signature, key FROM metric_labels")
                  ).fetchall()
    have = {m: (s, k) for m, s, k in rows}
    changes, dropped = _changes(have, dict(wanted))
    for metric, signature, key in changes:
        await conn.execute(
            "INSERT INTO metric_labels VALUES (%s, %s, %s) ON CONFLICT (metric) DO UPDATE "
            "SET signature = excluded.signature, key = excluded.key", (metric, signature, key))
    for key in sorted(dropped):
        for table in ("label_tallies", "label_tally_deltas", "label_values", "label_backfills"):
            await conn.execute(f"DELETE FROM {table} WHERE {_KEY[table]} = %s", (key,))
    new = _new_keys(have, changes)
    for key in new:
        await conn.execute("INSERT INTO label_backfills VALUES (%s, 0) ON CONFLICT DO NOTHING",
                           (key,))
    return new


_KEY = {"label_tallies": "metric", "label_tally_deltas": "metric", "label_values": "metric",
        "label_backfills": "key"}  # the column that holds a set's key


def _new_keys(have: dict[str, tuple[str | None, str]], rows: list[tuple[str, str | None, str]]
              ) -> list[str]:
    old = {k for _, k in have.values()}
    return sorted({k for _, s, k in rows if s is not None and k not in old})


# Rows of the live generations only, by metric name; the zero rows of states left are skipped.
_READ = ("SELECT m.metric, t.flow, t.state, t.code, t.step, t.labels, {sum_n}, {sum_total} "
         "FROM {tallies} AS t JOIN metric_labels AS m ON m.key = t.metric "
         "WHERE m.signature IS NOT NULL {group}")
SQLITE_READ_LABELS = _READ.format(sum_n="t.n", sum_total="t.total", tallies="label_tallies",
                                  group="AND (t.n <> 0 OR t.total <> 0)")
POSTGRES_READ_LABELS = _READ.format(
    sum_n="sum(t.n)::bigint", sum_total="sum(t.total)::bigint",
    tallies="(SELECT * FROM label_tallies UNION ALL SELECT * FROM label_tally_deltas)",
    group="GROUP BY 1, 2, 3, 4, 5, 6")
POSTGRES_FOLD_LABELS = (
    "WITH d AS (DELETE FROM label_tally_deltas RETURNING *) "
    "INSERT INTO label_tallies SELECT metric, flow, state, code, step, labels, sum(n), sum(total) "
    "FROM d GROUP BY 1, 2, 3, 4, 5, 6 ON CONFLICT (metric, flow, state, code, step, labels) "
    "DO UPDATE SET n = label_tallies.n + excluded.n, total = label_tallies.total + excluded.total"
)


def label_rows(rows: list[tuple[Any, ...]]) -> list[LabelRow]:
    """Read rows with their labels parsed (the values, in the order of the metric's labels)."""
    return [(m, f, s, c, st, tuple(json.loads(labels)), int(n), int(total))
            for m, f, s, c, st, labels, n, total in rows]
