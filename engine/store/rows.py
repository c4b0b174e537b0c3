"""Records <-> rows: the one encoding of runs, steps and events both stores share.

JSON values are stored as text (a payload received as JSON as its own text), timestamps as unix
seconds; a row of RUN_COLUMNS reads back into a RunRecord whichever database it came from.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from typing import Any

from engine.errors import StateConflict
from engine.store.base import (
    CANCEL_ENDS,
    CANCELLED,
    Attempt,
    Checkpoint,
    EventRecord,
    NewRun,
    OutboxItem,
    Reason,
    ReceivedJSON,
    RunQuery,
    RunRecord,
    StateChange,
    StepRecord,
)

RUN_COLUMNS = (
    "id, flow, flow_version, plan_digest, event_id, state, key, ordering_key, correlation_id, "
    "traceparent, created_at, updated_at, seq, next_attempt_at, reason, replay_of, "
    "data_override, has_override, generation, history_generation"
)

dumps = json.JSONEncoder(default=str, separators=(",", ":")).encode


def run_record(row: Sequence[Any], replayed_by: list[str]) -> RunRecord:
    """RUN_COLUMNS lists RunRecord's fields in order up to `next_attempt_at`; the rest is JSON."""
    reason, replay_of, override, has_override, generation, history_generation = row[14:]
    rest: dict[str, Any] = {
        "reason": Reason(**json.loads(reason)) if reason is not None else None,
        "replay_of": replay_of,
        "replayed_by": replayed_by,
        "data_override": json.loads(override) if has_override else None,
        "has_override": bool(has_override),
        "generation": generation,
        "history_generation": history_generation,
    }
    return RunRecord(*row[:14], **rest)


def fields(obj: Any) -> dict[str, Any]:
    """A dataclass's fields as a dict (no deep copy of payloads, unlike dataclasses.asdict)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def event_row(event: EventRecord, now: float) -> tuple[Any, ...]:
    """(id, type, source, subject, time, data, attributes, received_at). A payload received as
    JSON is kept as its own text, not encoded again."""
    data = event.data.text if type(event.data) is ReceivedJSON else dumps(event.data)
    attributes = dumps(event.attributes) if event.attributes else "{}"
    return (event.id, event.type, event.source, event.subject, event.time, data, attributes, now)


def step_params(run_id: str, step: StepRecord) -> dict[str, Any]:
    return {
        **fields(step),
        "run_id": run_id,
        "output": dumps(step.output),
        "attempts": dumps([fields(attempt) for attempt in step.attempts]),
        "updated_at": step.updated_at or time.time(),
    }


def with_work(
    records: list[RunRecord], events: Sequence[Sequence[Any]], steps: Sequence[Sequence[Any]]
) -> list[RunRecord]:
    """Claimed `records` with their events (rows of EVENT_COLUMNS) and steps (STEP_COLUMNS)."""
    by_event = {row[0]: event_record(row) for row in events}
    by_run: dict[str, dict[str, StepRecord]] = {record.id: {} for record in records}
    for row in steps:
        by_run[row[0]][row[1]] = step_record(row)
    for record in records:
        record.event, record.steps = by_event.get(record.event_id), by_run[record.id]
    return records


def step_record(row: Sequence[Any]) -> StepRecord:
    run_id, step_id, state, output, input_digest, error, attempts, updated_at = row
    return StepRecord(
        run_id=run_id,
        step_id=step_id,
        state=state,
        output=json.loads(output),
        input_digest=input_digest,
        error=error,
        attempts=[Attempt(**a) for a in json.loads(attempts)],
        updated_at=updated_at,
    )


def reason_json(reason: Reason | None) -> str | None:
    return None if reason is None else dumps(dataclasses.asdict(reason))


def cancel_request(state: str, reason: str | None) -> Reason | None:
    """The operator's cancel request a run carries: state `running`, reason code CANCELLED."""
    if state != "running" or reason is None or CANCELLED not in reason:
        return None
    parsed = Reason(**json.loads(reason))
    return parsed if parsed.code == CANCELLED else None


def run_row(run: NewRun, event_id: str, now: float) -> tuple[Any, ...]:
    """(id, flow, flow_version, plan_digest, event_id, state, key, ordering_key, correlation_id,
    traceparent, created_at, updated_at, replay_of, parked_holds_key, reason, labels) of a new
    run; its labels as resolved (the store admits them: `with_admitted`)."""
    return (
        run.id, run.flow, run.flow_version, run.plan_digest, event_id, run.state, run.key,
        run.ordering_key, run.correlation_id, run.traceparent, now, now, run.replay_of,
        run.parked_holds_key,
        reason_json(run.reason), run.labels,
    )  # fmt: skip


def set_labels(sets: str, params: list[Any], labels: str | None, mark: str) -> str:
    """`sets` with the run's admitted metric labels written too (None: left as they are)."""
    if labels is None:
        return sets
    params.append(labels)
    return f"{sets}, labels = {mark}"


EVENT_COLUMNS = "id, type, source, data, subject, time, attributes"
STEP_COLUMNS = "run_id, step_id, state, output, input_digest, error, attempts, updated_at"


def event_record(row: Sequence[Any]) -> EventRecord:
    """An EventRecord from a row of EVENT_COLUMNS."""
    id_, type_, source, data, subject, time_, attributes = row
    return EventRecord(id_, type_, source, json.loads(data), subject, time_, json.loads(attributes))


def outbox_item(row: Sequence[Any]) -> OutboxItem:
    """An OutboxItem from a row (seq, run_id, event)."""
    seq, run_id, event = row
    return OutboxItem(seq, run_id, EventRecord(**json.loads(event)))


def checkpoint_update(
    cp: Checkpoint, stored: Sequence[Any], now: float, mark: str
) -> tuple[Reason | None, str | None, str, list[Any]]:
    """What a checkpoint writes to its run, given the run's stored (state, reason): the run's
    cancel request, the new state it writes (None: none), and the UPDATE's SET clause (with
    `mark` placeholders) and parameters. A new state outside CANCEL_ENDS is not written while a
    cancel request stands, unless `cp` carries the CANCELLED reason itself (see
    `Store.checkpoint`)."""
    cancel = cancel_request(*stored)
    run_state = cp.run_state
    acknowledged = cp.reason is not None and cp.reason.code == CANCELLED
    if cancel is not None and run_state not in CANCEL_ENDS and not acknowledged:
        run_state = None  # the operator's cancel request stands
    sets, params = [f"updated_at = {mark}"], [now]  # type: list[str], list[Any]
    if run_state is not None:
        sets += [f"state = {mark}", f"next_attempt_at = {mark}", f"reason = {mark}"]
        params += [run_state, cp.next_attempt_at, reason_json(cp.reason)]
    if cp.clear_lease or (run_state is not None and run_state != "running"):
        sets += ["lease_owner = NULL", "lease_until = NULL"]
    return cancel, run_state, ", ".join(sets), params


def state_update(
    run_id: str, stored: str, change: StateChange, now: float, data: str | None, mark: str
) -> tuple[str, list[Any]]:
    """The SET clause (with `mark` placeholders) and parameters of `change` to a run whose stored
    state is `stored` (`data`: the corrected data as JSON). Raises StateConflict when the run is
    not in one of `change.expect`."""
    if change.expect and stored not in change.expect:
        expected = " or ".join(repr(s) for s in change.expect)
        raise StateConflict(
            f"run {run_id!r} is {stored!r}, not {expected}: cannot make it {change.state!r}"
        )
    sets = f"state = {mark}, reason = {mark}, updated_at = {mark}, next_attempt_at = NULL"
    params: list[Any] = [change.state, reason_json(change.reason), now]
    if change.state != "running":
        sets += ", lease_owner = NULL, lease_until = NULL"
    if change.queues_again:
        sets += ", history_generation = history_generation + 1"
    if change.data is not None:
        sets += f", generation = generation + 1, data_override = {mark}, has_override = true"
        params.append(data)
    return sets, params


Holders = dict[tuple[str, str], tuple[str, str]]  # (flow, key) -> (run id, correlation id)


def run_rows(
    items: Sequence[tuple[tuple[Any, ...], Sequence[NewRun]]],
) -> list[tuple[tuple[Any, ...], tuple[tuple[Any, ...], ...]]]:
    """Each (event row, runs) item with its runs as the rows `run_row` makes of them."""
    return [
        (event, tuple(run_row(run, event[0], event[-1]) for run in runs)) for event, runs in items
    ]


# The columns of a run_row that accepting reads.
_ID, _FLOW, _STATE, _KEY, _CORRELATION = 0, 1, 5, 6, 8


def accept_rows(
    items: Sequence[tuple[tuple[Any, ...], Sequence[tuple[Any, ...]]]], holders: Holders
) -> tuple[list[list[tuple[str, str, str]]], list[tuple[Any, ...]]]:
    """Accept each item's runs (an item: an event row and its runs as the rows `run_row` makes)
    in order, given the runs already holding their (flow, key): the acceptances of every item,
    and the rows of the runs to insert. Plain tuples (what the SQLite writer process receives:
    a tuple of plain values pickles several times faster than a dataclass), each acceptance a
    (run id, status, correlation id) tuple for the same reason. The first run of a
    (flow, key) is accepted and every later one is a duplicate naming it; a filtered run is
    recorded without holding its key. Updates `holders`."""
    results: list[list[tuple[str, str, str]]] = []
    rows: list[tuple[Any, ...]] = []
    for _, runs in items:
        acceptances = []
        for row in runs:
            holder = holders.get((row[_FLOW], row[_KEY]))
            if holder is not None:
                acceptances.append((holder[0], "duplicate", holder[1]))
                continue
            rows.append(row)
            if row[_STATE] == "filtered":
                acceptances.append((row[_ID], "filtered", row[_CORRELATION]))
            else:
                holders[(row[_FLOW], row[_KEY])] = (row[_ID], row[_CORRELATION])
                acceptances.append((row[_ID], "accepted", row[_CORRELATION]))
        results.append(acceptances)
    return results, rows


def reconciliation_row(row: Sequence[Any]) -> dict[str, Any]:
    """``{name, tick, started_at, state, report}`` of a stored Reconciliation result."""
    name, tick, started_at, state, report = row
    return {"name": name, "tick": tick, "started_at": started_at, "state": state,
            "report": None if report is None else json.loads(report)}  # fmt: skip


def run_filters(query: RunQuery, mark: str) -> tuple[str, list[object]]:
    """The WHERE clause of a RunQuery's filters (`mark` the store's placeholder) and its
    parameters."""
    where: list[str] = []
    params: list[object] = []
    for column, value in (
        ("flow", query.flow), ("state", query.state), ("key", query.key),
        ("correlation_id", query.correlation_id), ("seq <", query.before_seq),
    ):  # fmt: skip
        if value is not None:
            where.append(f"{column} {mark}" if column.endswith("<") else f"{column} = {mark}")
            params.append(value)
    return (f"WHERE {' AND '.join(where)}" if where else ""), params
