"""Runs as the admin API shows them (SPEC section 6): JSON-ready dicts built from the runtime's
records, times as ISO 8601 UTC text. The CLI shows the same dicts (through engine/commands), so
`runs show --json` and `GET /api/v1/runs/{id}` agree.

A run's detail carries its whole history, never rewritten: every step's attempts of every
generation (each with its generation), and `history` with the generations as a timeline (what
started each, with which data, the attempts, reasons and audit entries in it), every reason the
run stopped for, and each corrected `data` an operator supplied.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from typing import Any

from engine.runtime.details import RunDetail
from engine.server.audit import entry_json
from engine.server.times import iso, iso_or_none
from engine.store.history import Generation, RunHistory
from engine.store.records import Attempt, RunRecord, StepRecord, data_sha256

RESET = "reset"  # the state shown for a step an operator action reset, that has not run again


def run_summary(run: RunRecord) -> dict[str, Any]:
    """A run's fields as the admin API shows them (without steps)."""
    return {
        "id": run.id,
        "flow": run.flow,
        "flow_version": run.flow_version,
        "plan_digest": run.plan_digest,
        "state": run.state,
        "key": run.key,
        "ordering_key": run.ordering_key,
        "correlation_id": run.correlation_id,
        "generation": run.history_generation,
        "created_at": iso(run.created_at),
        "updated_at": iso(run.updated_at),
        "next_attempt_at": iso_or_none(run.next_attempt_at),
        "reason": None if run.reason is None else dict(run.reason.__dict__),
        "links": {"replay_of": run.replay_of, "replayed_by": list(run.replayed_by)},
    }


def attempt_json(attempt: Attempt) -> dict[str, Any]:
    """One attempt: its generation, times (ISO) and duration, outcome, request and response."""
    return {
        "generation": attempt.generation,
        "n": attempt.n,
        "started_at": iso(attempt.started_at),
        "finished_at": iso(attempt.finished_at),
        "duration_ms": round((attempt.finished_at - attempt.started_at) * 1000, 1),
        "outcome": attempt.outcome,
        "status": attempt.status,
        "error": attempt.error,
        "request": attempt.request,
        "response": attempt.response,
    }


def step_detail(record: StepRecord, earlier: Iterable[StepRecord] = ()) -> dict[str, Any]:
    """One step as the admin API shows it: its current record, with the attempts of the records
    operator actions reset (`earlier`, oldest first) before its own."""
    attempts = [a for old in earlier for a in old.attempts] + list(record.attempts)
    return {
        "id": record.step_id,
        "state": record.state,
        "output": record.output,
        "input_digest": record.input_digest,
        "error": record.error,
        "attempts": [attempt_json(a) for a in attempts],
    }


def run_detail(detail: RunDetail) -> dict[str, Any]:
    """A run with its steps (in the flow's order, unknown ones last), its event, the run of its
    ordering key it waits behind, the audit entries of the actions on it (newest first) and its
    history (see the module docstring)."""
    run, history = detail.run, detail.history
    shown = run_summary(run)
    shown["blocked_by"] = detail.blocked_by
    shown["audit"] = [entry_json(dict(entry)) for entry in detail.audit]
    earlier: dict[str, list[StepRecord]] = {}
    for archived in history.archived:
        earlier.setdefault(archived.record.step_id, []).append(archived.record)
    current = dict(detail.steps)
    for step_id in earlier:  # reset, not run again yet
        current.setdefault(step_id, StepRecord(run.id, step_id, RESET, attempts=[]))
    ranked = sorted(current, key=lambda s: (detail.order.get(s, 1 << 30), s))
    shown["steps"] = [step_detail(current[s], earlier.get(s, ())) for s in ranked]
    audit = list(zip(shown["audit"], [float(e["at"]) for e in detail.audit], strict=True))
    shown["history"] = history_json(run, history, shown["steps"], audit)
    if detail.event is not None:
        event = detail.event
        shown["event"] = {"id": event.id, "type": event.type, "data": event.data}
    return shown


# -- the history ---------------------------------------------------------------------------------
def history_json(
    run: RunRecord,
    history: RunHistory,
    steps: list[dict[str, Any]],
    audit: list[tuple[dict[str, Any], float]],
) -> dict[str, Any]:
    """`{generations, reasons, corrections}`: the generations oldest first, each with what
    started it, the data it ran with and the attempts, reasons and audit entries (`audit`:
    each shown entry with its time in unix seconds) in it."""
    first = Generation(0, run.created_at, "accepted", None, None, 0)
    generations = [first, *history.generations]
    corrections = {g.data_generation: g for g in generations if g.corrected}
    timeline = [_generation(g, corrections) for g in generations]
    for step in steps:
        for attempt in step["attempts"]:
            slot = timeline[_index(generations, attempt["generation"])]
            slot["attempts"].append({"step": step["id"], **_brief(attempt)})
    reasons = [_reason_json(entry) for entry in history.reasons]
    for reason in reasons:
        timeline[_index(generations, reason["generation"])]["reasons"].append(reason)
    starts = [g.started_at for g in generations]
    for entry, at in sorted(audit, key=lambda pair: pair[1]):
        slot = timeline[max(0, bisect.bisect_right(starts, at) - 1)]
        slot["audit"].append({k: entry[k] for k in ("at", "actor", "action", "reason")})
    for slot in timeline:
        slot["attempts"].sort(key=lambda a: a["started_at"])
    return {
        "generations": timeline,
        "reasons": reasons,
        "corrections": [_correction(n, g) for n, g in sorted(corrections.items())],
    }


def _generation(g: Generation, corrections: Mapping[int, Generation]) -> dict[str, Any]:
    if g.data_generation == 0:
        data: dict[str, Any] = {"source": "event"}
    else:
        given = corrections.get(g.data_generation)
        data = {"source": "correction", "correction": g.data_generation,
                "sha256": None if given is None else data_sha256(given.data)}  # fmt: skip
    return {
        "generation": g.n,
        "started_at": iso(g.started_at),
        "action": g.action,
        "actor": g.actor,
        "note": g.note,
        "data": data,
        "attempts": [],
        "reasons": [],
        "audit": [],
    }


def _correction(n: int, g: Generation) -> dict[str, Any]:
    """A corrected `data` an operator supplied (the n-th), kept as it was given."""
    return {"correction": n, "generation": g.n, "at": iso(g.started_at), "actor": g.actor,
            "note": g.note, "sha256": data_sha256(g.data), "data": g.data}  # fmt: skip


def _reason_json(entry: Any) -> dict[str, Any]:
    return {"at": iso(entry.at), "generation": entry.generation, "state": entry.state,
            **entry.reason.__dict__}  # fmt: skip


def _brief(attempt: Mapping[str, Any]) -> dict[str, Any]:
    """An attempt in the timeline: without its request and response (the step shows those)."""
    return {k: v for k, v in attempt.items() if k not in ("request", "response", "generation")}


def _index(generations: list[Generation], n: int) -> int:
    """Where generation `n` is in the timeline (an attempt of an unknown one: the last)."""
    for i, g in enumerate(generations):
        if g.n == n:
            return i
    return len(generations) - 1

