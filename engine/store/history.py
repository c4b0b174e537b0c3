"""A run's history, never rewritten (SPEC section 4): its generations, every reason it stopped
for, and its step records as they were before an operator action reset them.

A run's *generation* is 0 when it is accepted and one more each time an operator queues it again
(resume, retry, or cancel of a run that is not executing). Every attempt carries the generation
it was made in (`Attempt.generation`). Three append-only tables keep what the `runs` and `steps`
rows forget, the same on SQLite and PostgreSQL (SQLITE_MIGRATION and POSTGRES_MIGRATION: the
tables, and triggers that refuse UPDATE and DELETE on them):

    run_generations (run_id, generation)  when and why a generation began: the action, actor,
                                          operator's note, the data generation it runs with
                                          (0: the event's data; n: the n-th correction) and the
                                          corrected data itself, when the action supplied one
    run_reasons                           every reason the run stopped or was stopped for
                                          (parked, dead-lettered, failed, a cancel, a
                                          compensation), with its state, time and generation
    step_history                          a step record as it was when a resume or retry reset
                                          it (its attempts, error and output), with the
                                          generation that ended

The stores write these rows in the transactions that change the run (`set_run_state`,
`checkpoint`) with the statements built here; `read_history` reads them back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.store.records import Checkpoint, Reason, StateChange, StepRecord
from engine.store.rows import STEP_COLUMNS, reason_json, step_record

if TYPE_CHECKING:
    from engine.store.interface.lifecycle import Lifecycle

MIGRATION = """
ALTER TABLE runs ADD COLUMN history_generation integer NOT NULL DEFAULT 0;
CREATE TABLE run_generations (
    run_id          text NOT NULL,
    generation      integer NOT NULL,
    started_at      double precision NOT NULL,
    action          text NOT NULL,
    actor           text NOT NULL,
    note            text,
    data_generation integer NOT NULL,
    data            text,
    PRIMARY KEY (run_id, generation)
);
CREATE TABLE run_reasons (
    run_id      text NOT NULL,
    generation  integer NOT NULL,
    at          double precision NOT NULL,
    state       text NOT NULL,
    reason      text NOT NULL
);
CREATE INDEX run_reasons_run ON run_reasons (run_id, at);
CREATE TABLE step_history (
    run_id        text NOT NULL,
    step_id       text NOT NULL,
    generation    integer NOT NULL,
    state         text NOT NULL,
    output        text NOT NULL,
    input_digest  text,
    error         text,
    attempts      text NOT NULL,
    updated_at    double precision NOT NULL,
    archived_at   double precision NOT NULL
);
CREATE INDEX step_history_run ON step_history (run_id, generation);
"""
_TABLES = ("run_generations", "run_reasons", "step_history")
# The database itself refuses to change or delete history, as it does the audit log.
SQLITE_MIGRATION = MIGRATION + "".join(
    f"""
CREATE TRIGGER {table}_append_only BEFORE UPDATE ON {table}
BEGIN
    SELECT RAISE(ABORT, 'run history is append-only');
END;
CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
BEGIN
    SELECT RAISE(ABORT, 'run history is append-only');
END;
"""
    for table in _TABLES
)
POSTGRES_MIGRATION = MIGRATION + """
CREATE FUNCTION syncline_history_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'run history is append-only';
END $$;
""" + "".join(
    f"""
CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION syncline_history_append_only();
"""
    for table in _TABLES
)

Statement = tuple[str, tuple[Any, ...]]

# States whose reason is history; a `waiting` run's reason (a retry's backoff, a held call) is not.
_NOT_RECORDED = frozenset({"waiting"})


def before_change(run_id: str, change: StateChange, at: float) -> list[Statement]:
    """What `set_run_state` writes before it changes the run: the step records it is about to
    reset, archived with the generation that ends."""
    if not change.reset_steps:
        return []
    marks = ", ".join(["%s"] * len(change.reset_steps))
    sql = (
        "INSERT INTO step_history (run_id, step_id, generation, state, output, input_digest, "
        "error, attempts, updated_at, archived_at) "
        "SELECT s.run_id, s.step_id, r.history_generation, s.state, s.output, s.input_digest, "
        "s.error, s.attempts, s.updated_at, %s FROM steps AS s JOIN runs AS r ON r.id = s.run_id "
        f"WHERE s.run_id = %s AND s.step_id IN ({marks})"
    )
    return [(sql, (at, run_id, *change.reset_steps))]


def after_change(
    run_id: str, change: StateChange, data: str | None, at: float
) -> list[Statement]:
    """What `set_run_state` writes after it changed the run (generation bumped, data stored):
    the new generation's row and the reason the change gave, if any."""
    statements: list[Statement] = []
    if change.queues_again:
        statements.append((
            "INSERT INTO run_generations (run_id, generation, started_at, action, actor, note, "
            "data_generation, data) SELECT id, history_generation, %s, %s, %s, %s, generation, %s "
            "FROM runs WHERE id = %s",
            (at, change.audit_action, change.actor, change.note, data, run_id),
        ))  # fmt: skip
    if change.reason is not None:
        statements.append(_reason(run_id, change.state, change.reason, at))
    return statements


def after_checkpoint(
    cp: Checkpoint, written: str | None, stored: Sequence[Any], at: float
) -> list[Statement]:
    """The reason a checkpoint records: one that comes with the run's `written` new state (None:
    not written), unless the run is only waiting or already stood so (`stored`: its state and
    reason as JSON, read in the same transaction)."""
    if written is None or cp.reason is None or written in _NOT_RECORDED:
        return []
    text = reason_json(cp.reason)
    if (written, text) == (stored[0], stored[1]):
        return []  # the executor acknowledging what an operator already asked (a cancel)
    return [_reason(cp.run_id, written, cp.reason, at)]


def _reason(run_id: str, state: str, reason: Reason, at: float) -> Statement:
    return (
        "INSERT INTO run_reasons (run_id, generation, at, state, reason) "
        "SELECT id, history_generation, %s, %s, %s FROM runs WHERE id = %s",
        (at, state, reason_json(reason), run_id),
    )


# -- reading -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Generation:
    """One generation of a run: when it began and with which data."""

    n: int                    # 0: accepted; then one per operator action that queued it again
    started_at: float         # unix seconds
    action: str               # accepted | resume | retry | cancel
    actor: str | None         # who (None for generation 0: the sender of the event)
    note: str | None          # the operator's reason, in words
    data_generation: int      # the data it runs with: 0 the event's, n the n-th correction
    data: Any = None          # the corrected data this action supplied (see `corrected`)
    corrected: bool = False   # whether this action supplied corrected data


@dataclass(frozen=True)
class ReasonEntry:
    """A reason the run stopped (or was stopped) for, as it was given."""

    at: float
    generation: int
    state: str                # the state it came with: parked, dead-lettered, failed, running
    reason: Reason


@dataclass(frozen=True)
class ArchivedStep:
    """A step record as it was when an operator action reset it."""

    generation: int           # the generation that ended with the reset
    archived_at: float
    record: StepRecord


@dataclass(frozen=True)
class RunHistory:
    """Everything a run went through that its current rows no longer show."""

    generations: tuple[Generation, ...]   # without generation 0 (implicit: the run's creation)
    reasons: tuple[ReasonEntry, ...]      # oldest first
    archived: tuple[ArchivedStep, ...]    # oldest first


_GENERATIONS = (
    "SELECT generation, started_at, action, actor, note, data_generation, data "
    "FROM run_generations WHERE run_id = %s ORDER BY generation"
)
_REASONS = "SELECT at, generation, state, reason FROM run_reasons WHERE run_id = %s ORDER BY at"
_ARCHIVED = (
    f"SELECT generation, archived_at, {STEP_COLUMNS} FROM step_history WHERE run_id = %s "
    "ORDER BY generation, archived_at"
)


async def read_history(store: Lifecycle, run_id: str) -> RunHistory:
    """The run's history rows, read in one transaction."""
    generations, reasons, archived = await store.transact(
        [(sql, (run_id,)) for sql in (_GENERATIONS, _REASONS, _ARCHIVED)], read_only=True
    )
    return RunHistory(
        generations=tuple(
            Generation(n, at, action, actor, note, data_gen,
                       None if data is None else json.loads(data), data is not None)
            for n, at, action, actor, note, data_gen, data in generations[0]
        ),  # fmt: skip
        reasons=tuple(
            ReasonEntry(at, n, state, Reason(**json.loads(reason)))
            for at, n, state, reason in reasons[0]
        ),
        archived=tuple(
            ArchivedStep(row[0], row[1], step_record(row[2:])) for row in archived[0]
        ),
    )
