"""The runtime's structured log events (formatted by `engine.logs`), one function per event.

    run.started        debug    a worker begins executing a run (each generation, each wake-up)
    run.succeeded      debug
    run.waiting        debug    a retry is due later (reason RETRY, SYSTEM_PAUSED, ...)
    run.parked         warning  needs a person: reason code and step (the message, which may
                                quote the data, stays in the run: API, console)
    run.compensated    warning  a failure undone by compensation
    run.cancelled      info
    run.failed         error
    run.dead-lettered  error
    call.completed     debug    an outbound call attempt answered 2xx
    call.failed        warning  one that did not: status or timeout/network, duration
    operator.action    info     resume | retry | cancel | replay, by whom (a token's name)

Each carries `flow`, `run_id` and `correlation_id` where they apply. Fields are names, codes,
states, statuses and durations: never a payload, a response body, a header value or a secret.
Per-run and per-call successes are debug, so the default level costs the hot path one
`isEnabledFor` test.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.runtime.calls import OutboundRequest
    from engine.store.base import Reason, RunRecord

log = logging.getLogger("syncline.runtime")
_LEVELS = {
    "succeeded": logging.DEBUG,
    "waiting": logging.DEBUG,
    "pending": logging.DEBUG,
    "parked": logging.WARNING,
    "compensated": logging.WARNING,
    "cancelled": logging.INFO,
    "failed": logging.ERROR,
    "dead-lettered": logging.ERROR,
}


def _run_fields(run: RunRecord) -> dict[str, Any]:
    return {"flow": run.flow, "run_id": run.id, "correlation_id": run.correlation_id}


def run_started(run: RunRecord) -> None:
    if log.isEnabledFor(logging.DEBUG):
        fields = {"event": "run.started", **_run_fields(run), "generation": run.generation}
        log.debug("run %s of %s started", run.id, run.flow, extra=fields)


def run_ended(run: RunRecord, state: str, reason: Reason | None = None) -> None:
    """`run` reached `state` (an execution ended)."""
    level = _LEVELS.get(state, logging.INFO)
    if not log.isEnabledFor(level):
        return
    fields: dict[str, Any] = {"event": f"run.{state}", **_run_fields(run)}
    message = f"run {run.id} of {run.flow} {state}"
    if reason is not None:  # its message stays in the run: a validation's may quote the data
        fields.update(reason=reason.code, step=reason.step)
        message += f": {reason.code}" + (f" at step {reason.step}" if reason.step else "")
    log.log(level, "%s", message, extra=fields)


def call_ended(request: OutboundRequest, outcome: str, status: int | None, seconds: float) -> None:
    """One outbound call attempt ended: `ok`, `timeout`, `network`, `429`, `4xx`, `5xx`."""
    level = logging.DEBUG if outcome == "ok" else logging.WARNING
    if not log.isEnabledFor(level):
        return
    fields = {
        "event": "call.completed" if outcome == "ok" else "call.failed",
        "system": request.system.name,
        "operation": request.operation,
        "method": request.method,
        "path": request.template or request.path,
        "status": status,
        "outcome": outcome,
        "duration_ms": round(seconds * 1000, 1),
        "run_id": request.run_id,
        "correlation_id": request.correlation_id,
    }
    answer = status if status is not None else outcome
    log.log(level, "%s %s: %s %s -> %s", request.system.name, request.operation,
            request.method, fields["path"], answer, extra=fields)  # fmt: skip


def operator_action(action: str, actor: str, run: RunRecord, **detail: Any) -> None:
    """An operator acted on `run` (the actor is a token's name, never the token)."""
    fields = {"event": "operator.action", "action": action, "actor": actor,
              **_run_fields(run), **detail}  # fmt: skip
    log.info("%s %s run %s of %s", actor, action, run.id, run.flow, extra=fields)
