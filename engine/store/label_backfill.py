"""Counting the runs already open when a label set is new: the backfill of its key.

A run carries a label set's values from its next write on (engine/store/label_tallies.py); a
run parked before a plan with a new or changed labelled Metric became active is not written
again until someone acts on it, so without this the gauge would not count it. When `sync_*`
creates a key, it records it in ``label_backfills(key, after)``; the runtime then pages through
the open runs (pending, running, waiting, parked: the states a gauge counts runs in; a run that
has ended counts only in counters, from the write that ended it) of the flows the set counts,
by arrival order after `after`, resolves their labels from their data and steps, and hands
them back (`relabel_*`), which, in one transaction:

- writes each run's labels only if they are still what the page read (a compare-and-set on
  ``runs.labels``) and the run is still open: a worker that wrote the run in between resolved
  its labels itself, so the backfill never overwrites a newer write;
- admits the values as any write does (the first 50 distinct values of a label, then `other`);
- moves the cursor forward (never back), or forgets the key once the last page is done.

So it runs once per new key, in pages, resumes where it stopped after a crash or restart, and
two replicas doing it at once write the same labels (the second write of a run changes nothing,
and the triggers move a run's count only from the labels it had to those it has).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engine.store.aggregates import DONE
from engine.store.label_tallies import admit_postgres, admit_sqlite

if TYPE_CHECKING:
    from engine.store.records import RunLabels

OPEN = "('pending', 'running', 'waiting', 'parked')"  # the states a gauge counts runs in
PAGE = 500  # runs resolved and written per transaction
# (run id, arrival order, flow, labels as stored, data, outputs of the steps done: a step
# compensated since keeps its output, and the values it gave)
OpenRun = tuple[str, int, str, str | None, Any, dict[str, Any]]
# (run id, labels as the page read them, labels resolved now)
Relabel = tuple[str, str | None, "RunLabels"]

_PENDING = ("SELECT DISTINCT m.signature, b.after FROM label_backfills AS b "
            "JOIN metric_labels AS m ON m.key = b.key WHERE m.signature IS NOT NULL "
            "ORDER BY 1")
_PAGE = ("SELECT r.id, r.seq, r.flow, r.labels, "
         "CASE WHEN r.has_override THEN r.data_override ELSE e.data END "
         "FROM runs AS r LEFT JOIN events AS e ON e.id = r.event_id "
         "WHERE r.flow IN ({flows}) AND r.state IN " + OPEN + " AND r.seq > {mark} "
         "ORDER BY r.seq LIMIT {mark}")
_OUTPUTS = "SELECT run_id, step_id, output FROM steps WHERE state IN " + DONE + \
    " AND run_id IN ({ids})"
_WRITE = "UPDATE runs SET labels = {m} WHERE id = {m} AND labels IS {cmp} {m} AND state IN " + OPEN


def _page_rows(rows: Sequence[Sequence[Any]], outputs: Sequence[Sequence[Any]]
               ) -> list[OpenRun]:
    done: dict[str, dict[str, Any]] = {}
    for run_id, step_id, output in outputs:
        done.setdefault(run_id, {})[step_id] = json.loads(output)
    return [(run_id, int(seq), flow, labels, None if data is None else json.loads(data),
             done.get(run_id, {}))
            for run_id, seq, flow, labels, data in rows]


def _set_key(mark: str) -> str:
    """The key of the label set named by the parameter `mark`."""
    return f"(SELECT key FROM metric_labels WHERE signature = {mark} LIMIT 1)"


# -- SQLite -----------------------------------------------------------------------------------
def sqlite_pending(conn: Any) -> list[tuple[str, int]]:
    """(label set, cursor) of each key still to backfill (a reader job)."""
    return [(name, int(after)) for name, after in conn.execute(_PENDING).fetchall()]


def sqlite_open_runs(conn: Any, flows: Sequence[str], after: int, limit: int) -> list[OpenRun]:
    """The next page of open runs of `flows` after arrival order `after` (a reader job)."""
    marks = ", ".join("?" * len(flows))
    rows = conn.execute(_PAGE.format(flows=marks, mark="?"), (*flows, after, limit)).fetchall()
    ids = [row[0] for row in rows]
    outputs = conn.execute(_OUTPUTS.format(ids=", ".join("?" * len(ids))), ids).fetchall() \
        if ids else []
    return _page_rows(rows, outputs)


def tx_relabel(conn: Any, name: str, runs: Sequence[Relabel], after: int, done: bool) -> int:
    """Write the runs' labels where nobody wrote them since the page was read; move the cursor
    of set `name` (a writer job). How many runs were written."""
    written = 0
    sql = _WRITE.format(m="?", cmp="")
    for run_id, seen, labels in runs:
        written += conn.execute(sql, (admit_sqlite(conn, labels), run_id, seen)).rowcount
    key = _set_key("?")
    if done:
        conn.execute(f"DELETE FROM label_backfills WHERE key = {key}", (name,))
    else:
        conn.execute(f"UPDATE label_backfills SET after = max(after, ?) WHERE key = {key}",
                     (after, name))
    return written


# -- PostgreSQL -------------------------------------------------------------------------------
async def postgres_pending(conn: Any) -> list[tuple[str, int]]:
    rows = await (await conn.execute(_PENDING)).fetchall()
    return [(name, int(after)) for name, after in rows]


async def postgres_open_runs(conn: Any, flows: Sequence[str], after: int, limit: int
                             ) -> list[OpenRun]:
    rows = await (await conn.execute(
        _PAGE.format(flows=", ".join(["%s"] * len(flows)), mark="%s"), (*flows, after, limit)
    )).fetchall()
    ids = [row[0] for row in rows]
    outputs = await (await conn.execute(
        _OUTPUTS.format(ids=", ".join(["%s"] * len(ids))), ids)).fetchall() if ids else []
    return _page_rows(rows, outputs)


async def postgres_relabel(conn: Any, name: str, runs: Sequence[Relabel], after: int,
                           done: bool) -> int:
    written = 0
    sql = _WRITE.format(m="%s", cmp="NOT DISTINCT FROM")
    for run_id, seen, labels in runs:
        cursor = await conn.execute(sql, (await admit_postgres(conn, labels), run_id, seen))
        written += cursor.rowcount
    key = _set_key("%s")
    if done:
        await conn.execute(f"DELETE FROM label_backfills WHERE key = {key}", (name,))
    else:
        await conn.execute(
            f"UPDATE label_backfills SET after = greatest(after, %s) WHERE key = {key}",
            (after, name))
    return written
