"""What the runtime knows of one run, as records: the run, its steps, its event, the run it
waits behind, the audit entries of the actions on it and its history. The server shapes them
into JSON (engine/server/views.py); the runtime never does."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import StoreError
from engine.runtime.plans import Plans
from engine.store.audit import AuditQuery
from engine.store.base import EventRecord, RunRecord, StepRecord, Store
from engine.store.history import RunHistory, read_history


@dataclass(frozen=True)
class RunDetail:
    """One run with everything that happened to it."""

    run: RunRecord
    steps: Mapping[str, StepRecord]        # the current step records, by step id
    event: EventRecord | None              # None: the event is no longer stored
    order: Mapping[str, int]               # step id -> its place in the flow ({}: plan unknown)
    blocked_by: str | None                 # the run of its ordering key it waits behind
    audit: Sequence[Mapping[str, Any]]     # audit entries of the actions on it, newest first
    history: RunHistory                    # generations, reasons, reset step records


async def read_detail(store: Store, plans: Plans, run_id: str) -> RunDetail | None:
    """The run's detail, or None if there is no such run."""
    run = await store.get_run(run_id)
    if run is None:
        return None
    steps, event, blocker, audit, history = await asyncio.gather(
        store.get_steps(run_id), store.get_event(run.event_id), store.blocked_by(run),
        store.audit_log(AuditQuery(run_id=run_id)), read_history(store, run_id),
    )  # fmt: skip
    try:
        order = {step.id: i for i, step in enumerate((await plans.flow_of(run)).steps)}
    except (StoreError, KeyError):
        order = {}
    return RunDetail(run, steps, event, order, blocker, audit, history)
