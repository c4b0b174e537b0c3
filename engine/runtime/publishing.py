"""The `publish` step: one attempt to put a CloudEvent on the backbone (engine/runtime/backbone.py),
retried through the step's RetryPolicy as a call's network errors are."""

from __future__ import annotations

from typing import Any

from engine.compiler.compiled import CompiledStep, PublishAction
from engine.errors import CallError, ExecutionError
from engine.runtime import backbone
from engine.runtime.steps import (
    StepEnv,
    count_attempt,
    failed_attempt,
    now_iso,
    resume_attempts,
    trace_extensions,
)
from engine.store.base import Attempt


async def run_publish(step: CompiledStep, env: StepEnv) -> Any:
    """One attempt to publish a CloudEvent to the backbone; its id is deterministic (run, step,
    generation), so JetStream stores a retried publish once. Failures go through the step's
    RetryPolicy exactly as a call's network errors do."""
    action = step.action
    assert isinstance(action, PublishAction)
    if env.backbone is None:
        raise ExecutionError("no event backbone in this runtime")
    data = action.data.evaluate(env.context)
    env.consumed = data
    run = env.run
    ident = backbone.event_id(run.id, step.id, run.generation)
    timeout = resume_attempts(step, env, action.system.timeout)
    payload = backbone.cloud_event(action, ident, f"syncline/{env.flow_name}", data,
                                   now_iso(env.clock), trace_extensions(env, step))
    described = {"method": "PUBLISH", "url": action.subject, "headers": {"Nats-Msg-Id": ident},
                 "body": data}
    n, started = len(env.attempts) + 1, env.clock()
    try:
        output = await backbone.publish(env.backbone, step, payload, ident, timeout)
    except CallError as error:
        return failed_attempt(step, env, error, n, started, described)
    env.attempts.append(Attempt(n, started, env.clock(), "ok", None, None, described, output,
                                env.run.history_generation))
    count_attempt(env, "ok", False)
    return output
