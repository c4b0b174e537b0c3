"""Operator actions on runs: what the admin API (`engine.server.admin`) and the CLI's local runs
client (`engine.commands.runs`) both do, so they behave the same."""

from __future__ import annotations

from typing import Any

from engine.errors import UsageError
from engine.runtime.runtime import MISSING, RunDetail, Runtime

ACTIONS = ("resume", "retry", "cancel", "replay")


async def perform(
    runtime: Runtime,
    run_id: str,
    action: str,
    actor: str,
    data: Any = MISSING,
    reason: str | None = None,
) -> RunDetail:
    """Do one of ACTIONS on `runtime` as `actor`, for `reason` (the operator's words, kept in
    the audit trail); the affected run's detail (for a replay, the new run's)."""
    if action not in ACTIONS:
        raise UsageError(f"unknown action '{action}' (one of {', '.join(ACTIONS)})")
    extra = {"data": data} if action == "resume" and data is not MISSING else {}
    act = getattr(runtime.operations, action)
    record = await act(run_id, actor=actor, note=reason or None, **extra)
    detail = await runtime.run_detail(record.id)
    assert detail is not None, "the run an action answered exists"
    return detail
