"""Which runs hold their ordering key (SPEC section 4): the one predicate the claims, the
`blocked_by` answers and the `runs_blocking` index of both stores share.

A run holds its key while it is pending, running or waiting, and while it is parked unless its
flow says `orderingKey: {key: ..., whileParked: continue}`: such a run is stored with
`parked_holds_key` false, and the flow's later runs of the key go on while it waits for a person.
A resumed run holds its key again; being older it goes next, but only once the run of its
key that started meanwhile (running, or waiting to retry) has finished: runs of one key never
execute at once. So the *head* of a key, the one run of it that may execute, is its active run
(running or waiting) if it has one, else its oldest run that holds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.store.interface.lifecycle import Lifecycle
    from engine.store.records import RunRecord


def holds_key(alias: str = "") -> str:
    """The SQL condition (both stores) on a `runs` row, named `alias` in its query if given,
    that it holds its ordering key."""
    at = f"{alias}." if alias else ""
    return (
        f"({at}state IN ('pending', 'running', 'waiting') "
        f"OR ({at}state = 'parked' AND {at}parked_holds_key))"
    )


# SQLite uses the partial index only when a query's WHERE repeats the index's terms word for
# word: its queries use this very text.
HOLDS_KEY = holds_key()
ACTIVE = "state IN ('running', 'waiting')"  # a run that started and has not stopped

MIGRATION = f"""
ALTER TABLE runs ADD COLUMN parked_holds_key boolean NOT NULL DEFAULT true;
DROP INDEX runs_blocking;
CREATE INDEX runs_blocking ON runs (ordering_key, seq)
    WHERE ordering_key IS NOT NULL AND {HOLDS_KEY};
CREATE INDEX runs_active ON runs (ordering_key, seq)
    WHERE ordering_key IS NOT NULL AND {ACTIVE};
"""
# PostgreSQL's claim seeks the heads too (engine/store/postgres_sql.py): the runs without a key
# get the index SQLite's have had since its migration 3, and the scan of every runnable run goes.
POSTGRES_MIGRATION = MIGRATION + """
DROP INDEX runs_runnable;
CREATE INDEX runs_free ON runs (seq)
    WHERE ordering_key IS NULL AND state IN ('pending', 'running', 'waiting');
"""

# The run a queued run waits behind: its key's active run, else its oldest earlier holder.
_ACTIVE_RUN = (
    f"SELECT id FROM runs WHERE ordering_key IS NOT NULL AND ordering_key = %s AND {ACTIVE} "
    "AND seq <> %s ORDER BY seq LIMIT 1"
)
_EARLIER_HOLDER = (
    f"SELECT id FROM runs WHERE ordering_key IS NOT NULL AND ordering_key = %s AND {HOLDS_KEY} "
    "AND seq < %s ORDER BY seq LIMIT 1"
)


async def blocker(store: Lifecycle, run: RunRecord) -> str | None:
    """`Store.blocked_by`: for a pending run, the active run of its key, else the oldest earlier
    run holding it; None for a run that is not pending or has no ordering key."""
    if run.ordering_key is None or run.state != "pending":
        return None
    params = (run.ordering_key, run.seq)
    active, holder = await store.transact(
        [(_ACTIVE_RUN, params), (_EARLIER_HOLDER, params)], read_only=True
    )
    for rows, _ in (active, holder):
        if rows:
            return str(rows[0][0])
    return None
