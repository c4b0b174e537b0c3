"""Runs as the admin API and the CLI show them (SPEC section 6): plain JSON-ready dicts built
from the store's records. The runtime itself never shapes JSON; it hands records here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engine.store.base import EventRecord, RunRecord, StepRecord


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
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "next_attempt_at": run.next_attempt_at,
        "reason": None if run.reason is None else dict(run.reason.__dict__),
        "links": {"replay_of": run.replay_of, "replayed_by": list(run.replayed_by)},
    }


def step_detail(record: StepRecord) -> dict[str, Any]:
    """One step record as the admin API shows it."""
    return {
        "id": record.step_id,
        "state": record.state,
        "output": record.output,
        "input_digest": record.input_digest,
        "error": record.error,
        "attempts": [dict(a.__dict__) for a in record.attempts],
    }


def run_detail(
    run: RunRecord,
    steps: Mapping[str, StepRecord],
    event: EventRecord | None,
    order: Mapping[str, int],
    blocked_by: str | None = None,
    audit: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """A run with its steps (in the flow's `order`, unknown ones last), its event, the run of its
    ordering key it waits behind and the audit entries of the actions taken on it (newest first)."""
    detail = run_summary(run)
    detail["blocked_by"] = blocked_by
    detail["audit"] = list(audit)
    ranked = sorted(steps, key=lambda s: (order.get(s, 1 << 30), s))
    detail["steps"] = [step_detail(steps[s]) for s in ranked]
    if event is not None:
        detail["event"] = {"id": event.id, "type": event.type, "data": event.data}
    return detail
