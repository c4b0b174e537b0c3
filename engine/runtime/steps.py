"""One handler per step kind, and the wrappers that give them their cross-cutting behaviour.

A handler has one shape, `async def handler(step, env) -> output`: it reads the run context in
`env.context`, notes what it consumed in `env.consumed`, and returns the step's output or raises.
`HANDLERS` maps each step kind to its handler wrapped twice, the way Starlette wraps ASGI apps:

    recorded(conditional(handler))

- `conditional` evaluates the step's `when`; a falsy condition skips the step (output null).
- `recorded` times the execution, turns the errors a step may raise into a `Stop` (park, fail,
  wait, dead-letter) and returns a `StepOutcome`: the StepRecord to checkpoint, the events it
  emitted and, when the run cannot go on, why.

Failure classes (what the executor does with a `Stop`):

    park         a `park` step, an `onError: park` outcome, `onExhausted: park`   -> parked
    fail         a failed `validate`, a MappingError, a failed expression,
                 an `onError: fail` outcome, a call failing without a retry policy  -> onFailure
    wait         a call to retry after a backoff delay, or held back (its System
                 paused, its circuit open: no attempt spent, the run's reason says so) -> waiting
    dead-letter  retries exhausted with `onExhausted: dead-letter`                 -> dead-lettered
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from engine.compiler.compiled import (
    CallAction,
    CompiledStep,
    EmitAction,
    MapAction,
    ParkAction,
    SetAction,
    ValidateAction,
)
from engine.errors import (
    CallError,
    CallHeld,
    ExecutionError,
    ExpressionError,
    FieldProblem,
    MappingError,
    ParkRequested,
    ValidationFailed,
)
from engine.runtime.adapting import adapted_answer, adapted_body
from engine.runtime.backbone import Backbone
from engine.runtime.calls import Calls, OutboundRequest, describe
from engine.runtime.retry import Decision, decide
from engine.runtime.shadow import Shadow
from engine.runtime.wire import fill_path, idempotency_key, make_traceparent
from engine.store.base import Attempt, EventRecord, RunRecord, StepRecord
from engine.store.controls import HELD

if TYPE_CHECKING:
    from engine.runtime.echo import WriteFingerprint

EVENT_NAMESPACE = uuid.UUID("6f1c1b1e-5b1a-4c43-9a55-2a4f0f5d6a10")
SKIPPED = object()  # a handler's answer when `when` was false


@dataclass(frozen=True)
class Stop:
    """Why a run cannot go on after a step (see the module docstring)."""

    action: str  # park | fail | wait | dead-letter
    code: str
    message: str
    retry_at: float | None = None  # wait: when the step may try again
    errors: tuple[dict[str, str], ...] = ()  # field problems of a validation or mapping failure


class StepStopped(Exception):
    """Raised by a handler that stops the run in a way no error class says by itself."""

    def __init__(self, stop: Stop) -> None:
        super().__init__(f"{stop.code}: {stop.message}")
        self.stop = stop


@dataclass
class StepEnv:
    """What one execution of one step sees, and what it reports besides its output."""

    run: RunRecord
    flow_name: str
    context: Mapping[str, Any]  # {data, event, steps, run, env}
    calls: Calls | None
    clock: Callable[[], float]
    rng: random.Random  # backoff jitter
    previous: StepRecord | None = None  # this step's record from an earlier claim (waiting)
    consumed: Any = None  # what the step read; its digest is the lineage
    emitted: list[EventRecord] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    on_attempt: Callable[[str, bool], None] | None = None  # metrics: (outcome, will retry)
    on_shadow: Callable[[str, str], None] | None = None  # metrics: (candidate System, result)
    backbone: Backbone | None = None  # the NATS connections (publish steps)
    traceparent: str | None = None  # the step's span (tracing on): emitted events continue it
    fingerprint: Callable[[OutboundRequest], WriteFingerprint | None] | None = None  # echo


@dataclass(frozen=True)
class StepOutcome:
    """The result of executing one step: what to checkpoint, and whether the run stops."""

    record: StepRecord
    emitted: tuple[EventRecord, ...] = ()
    stop: Stop | None = None


Handler = Callable[[CompiledStep, StepEnv], Awaitable[Any]]
Wrapped = Callable[[CompiledStep, StepEnv], Awaitable[StepOutcome]]


# -- helpers -------------------------------------------------------------------------------------
def truthy(value: Any) -> bool:
    """JMESPath truth: null, false, and empty strings, lists and objects are false; 0 is true."""
    if value is None or value is False:
        return False
    if isinstance(value, str | list | dict):
        return len(value) > 0
    return True


def digest(value: Any) -> str:
    """sha256 of the canonical JSON of a value (sorted keys, compact, UTF-8): a step's input
    digest. orjson writes it ten times faster; the standard encoder takes what orjson refuses
    (integers past 64 bits)."""
    try:
        data = orjson.dumps(value, default=str, option=_CANONICAL)
    except TypeError:
        data = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
        ).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def now_iso(clock: Callable[[], float]) -> str:
    return datetime.fromtimestamp(clock(), UTC).isoformat().replace("+00:00", "Z")


def _problems(problems: list[FieldProblem]) -> tuple[dict[str, str], ...]:
    return tuple(p.as_dict() for p in problems)


def _listing(problems: list[FieldProblem]) -> str:
    return "; ".join(f"{p.path}: {p.message}" if p.path else p.message for p in problems)


# -- local steps ---------------------------------------------------------------------------------
async def run_map(step: CompiledStep, env: StepEnv) -> Any:
    action = step.action
    assert isinstance(action, MapAction)
    value = action.input.search(env.context)
    env.consumed = value
    return action.mapping.apply(value)


async def run_validate(step: CompiledStep, env: StepEnv) -> Any:
    """Schema first (code: the step's `code`), then every rule; all problems are reported."""
    action = step.action
    assert isinstance(action, ValidateAction)
    value = action.input.search(env.context)
    env.consumed = value
    problems = action.schema.problems(value) if action.schema is not None else []
    code = action.code if problems else None
    for rule in action.rules:
        if not truthy(rule.check.search(env.context)):
            problems.append(FieldProblem("", rule.message, rule.code))
            code = code or rule.code
    if problems:
        raise ValidationFailed(code or action.code, problems)
    return value


async def run_set(step: CompiledStep, env: StepEnv) -> Any:
    action = step.action
    assert isinstance(action, SetAction)
    values = {name: value.evaluate(env.context) for name, value in action.values.items()}
    env.consumed = values
    return values


async def run_park(step: CompiledStep, env: StepEnv) -> Any:
    action = step.action
    assert isinstance(action, ParkAction)
    raise ParkRequested(action.code, action.message)


async def run_emit(step: CompiledStep, env: StepEnv) -> Any:
    """A CloudEvent with a deterministic id (run, step, generation): a re-execution after a crash
    emits the same event, which the dispatcher deduplicates."""
    action = step.action
    assert isinstance(action, EmitAction)
    data = action.data.evaluate(env.context)
    env.consumed = data
    run = env.run
    subject = action.subject.search(env.context) if action.subject else run.ordering_key
    event = EventRecord(
        id=str(uuid.uuid5(EVENT_NAMESPACE, f"{run.id}/{step.id}/{run.generation}")),
        type=action.type,
        source=f"syncline/{env.flow_name}",
        data=data,
        subject=None if subject is None else str(subject),
        time=now_iso(env.clock),
        attributes=trace_extensions(env, step),
    )
    env.emitted.append(event)
    return {
        "id": event.id,
        "type": event.type,
        "source": event.source,
        "subject": event.subject,
        "time": event.time,
        "data": data,
    }


# -- calls ---------------------------------------------------------------------------------------
_UNSAFE_HEADER = re.compile(r"[\r\n\x00]")


def checked_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """`headers`, refused at once (a data error, not a network one) if a name or value holds
    CR, LF or NUL: such a value would split the request."""
    for name, value in headers.items():
        if _UNSAFE_HEADER.search(value) or _UNSAFE_HEADER.search(name):
            raise ExecutionError(f"header '{name}' holds a CR, LF or NUL character (refused)")
    return dict(headers)


def build_request(
    action: CallAction, context: Mapping[str, Any], run: RunRecord, step_id: str
) -> OutboundRequest:
    """Evaluate a call's params, query, headers and body into the request to send (to the
    System a routed call's expression picks; none picks one: the run parks, NO_ROUTE)."""
    route = None
    if action.route is not None:
        value, chosen = action.route.choose(context)
        if chosen is None:
            raise ParkRequested("NO_ROUTE", f"route {action.route.expression.text} is "
                                f"{json.dumps(value)}: no case names a System for it and there "
                                "is no default")
        route = {"by": action.route.expression.text, "value": value, "system": chosen.system.name}
        action = chosen
    params = {name: value.evaluate(context) for name, value in action.params.items()}
    query = {name: value.evaluate(context) for name, value in action.query.items()}
    headers = checked_headers(
        {name: str(value.evaluate(context)) for name, value in action.headers.items()})
    return OutboundRequest(
        system=action.system,
        operation=action.operation,
        method=action.method,
        path=fill_path(action.path, params),
        query=query,
        headers=headers,
        body=adapted_body(action, action.body.evaluate(context) if action.body is not None
                          else None),
        idempotency_key=idempotency_key(run.id, step_id, run.generation),
        correlation_id=run.correlation_id,
        traceparent=make_traceparent(run.traceparent or run.correlation_id, f"{run.id}/{step_id}"),
        is_write=action.is_write,
        route=route,
        template=action.path,
        run_id=run.id,
        params=params,
    )


async def run_call(step: CompiledStep, env: StepEnv) -> Any:
    """One attempt. Earlier attempts (a waiting step) come from the step's previous record; a
    failure is classified by the step's RetryPolicy (none: the call parks)."""
    action = step.action
    assert isinstance(action, CallAction) and env.calls is not None
    request = build_request(action, env.context, env.run, step.id)
    described = describe(request)
    env.consumed = {k: described[k] for k in ("method", "url", "query", "body")}
    timeout = resume_attempts(step, env, request.system.timeout)
    n, started = len(env.attempts) + 1, env.clock()
    shadow = None
    if action.shadow is not None and action.shadow.call.system is not request.system:
        mirrored = action.shadow.call  # (a call routed to the candidate itself has no shadow)

        def build() -> OutboundRequest:
            return build_request(mirrored, env.context, env.run, f"{step.id}#shadow")

        shadow = Shadow.start(action.shadow, build, env.calls, env.clock)
    mark = None if env.fingerprint is None else env.fingerprint(request)
    try:  # the fingerprint is stored before sending: a lost answer still counts as written
        response = await env.calls.send(request, timeout=timeout,
                                        before=None if mark is None else mark.before)
    except CallHeld as held:  # nothing was sent: no attempt spent
        if shadow is not None:  # nor is the candidate's copy (held before the loop ran it)
            shadow.cancel()
        raise StepStopped(Stop("wait", held.code, held.message, retry_at=held.until)) from None
    except CallError as error:
        if shadow is not None:
            shadow.cancel()
        if mark is not None:
            await mark.answered(None, None)
        return failed_attempt(step, env, error, n, started, described)
    if mark is not None:
        await mark.answered(response.status, response.body)
    answered = env.clock()
    body = adapted_answer(request, response.status, response.body)
    output = {"status": response.status, "headers": response.headers, "body": body}
    recorded_response = {"status": response.status, "body": response.body}
    if shadow is not None:
        waits = shadow.spec.timeout if env.calls.patient_shadows else answered - started
        result = await shadow.settle(output, waits, env.clock)
        recorded_response["shadow"] = result
        if env.on_shadow is not None:
            env.on_shadow(result["system"], result["result"])
    env.attempts.append(
        Attempt(n, started, answered, "ok", response.status, None, described, recorded_response,
                env.run.history_generation)
    )
    count_attempt(env, "ok", False)
    return output


def resume_attempts(step: CompiledStep, env: StepEnv, default_timeout: float) -> float:
    """Before an attempt: carry the earlier attempts of a waiting step over (or wait on if another
    step woke the run before this one's retry time); the attempt's timeout."""
    previous = env.previous if env.previous and env.previous.state == "waiting" else None
    if previous is not None:
        env.attempts.extend(previous.attempts)
        retry_at = (previous.output or {}).get("retry_at")
        if retry_at is not None and retry_at > env.clock() + 0.005:  # another step woke the run
            raise StepStopped(Stop("wait", "RETRY", previous.error or "", retry_at=retry_at))
    policy = step.retry.policy if step.retry is not None else None
    return policy.timeout if policy and policy.timeout else default_timeout


def trace_extensions(env: StepEnv, step: CompiledStep) -> dict[str, Any]:
    """The correlation and trace extensions of an event a step sends (with tracing on, the
    step span's context)."""
    run = env.run
    return {"correlationid": run.correlation_id,
            "traceparent": env.traceparent or make_traceparent(
                run.traceparent or run.correlation_id, f"{run.id}/{step.id}")}


def failed_attempt(
    step: CompiledStep, env: StepEnv, error: CallError, n: int, started: float, described: Any
) -> Any:
    now = env.clock()
    first = env.attempts[0].started_at if env.attempts else started
    if step.retry is None:
        decision = Decision("park", reason=f"{error.message} (no retry policy)")
    else:
        decision = decide(
            step.retry.policy, error, attempt=n, first_attempt_at=first, now=now, rng=env.rng
        )
    outcome = {"retry": "retry", "succeed": "ok"}.get(decision.action, "error")
    env.attempts.append(
        Attempt(
            n,
            started,
            now,
            error.kind if outcome != "ok" else "ok",
            error.status,
            error.message,
            described,
            {"status": error.status, "body": error.body},
            env.run.history_generation,
        )
    )
    count_attempt(env, outcome, decision.action == "retry")
    if decision.action == "succeed":
        return {"status": error.status, "headers": error.headers, "body": error.body}
    raise StepStopped(_stop_for(step, decision, error, now))


def _stop_for(step: CompiledStep, decision: Decision, error: CallError, now: float) -> Stop:
    message = f"{error.message}{_error_detail(error.body)} ({decision.reason})"
    if decision.action == "retry":
        return Stop("wait", "RETRY", message, retry_at=now + decision.delay)
    if decision.action == "exhausted":
        assert step.retry is not None
        then = "dead-letter" if step.retry.policy.on_exhausted == "dead-letter" else "park"
        return Stop(then, "RETRIES_EXHAUSTED", message)
    code = f"HTTP_{error.status}" if error.kind == "status" else f"CALL_{error.kind.upper()}"
    return Stop("fail" if decision.action == "fail" else "park", code, message)


def _error_detail(body: Any) -> str:
    """The target's own error code/message, when its error body has one (`{error: {code,
    message}}`, or the first of JSON:API's `{errors: [{code, detail}]}`)."""
    if isinstance(body, dict):
        listed = body.get("errors")
        inner = listed[0] if isinstance(listed, list) and listed else body.get("error", body)
        if isinstance(inner, dict):
            parts = [str(inner[k]) for k in ("code", "message", "detail") if inner.get(k)]
            return f": {' '.join(parts)}" if parts else ""
        if isinstance(inner, str):
            return f": {inner}"
    if isinstance(body, str) and body:
        return f": {body[:200]}"
    return ""


def count_attempt(env: StepEnv, outcome: str, retry: bool) -> None:
    if env.on_attempt is not None:
        env.on_attempt(outcome, retry)


# -- wrappers ------------------------------------------------------------------------------------
def conditional(handler: Handler) -> Handler:
    """Skip the step (output null) when its `when` is falsy."""

    async def run(step: CompiledStep, env: StepEnv) -> Any:
        if step.when is not None and not truthy(step.when.search(env.context)):
            return SKIPPED
        return await handler(step, env)

    return run


def recorded(handler: Handler) -> Wrapped:
    """Time the step, classify what it raised, and build the record to checkpoint."""

    async def run(step: CompiledStep, env: StepEnv) -> StepOutcome:
        started = env.clock()
        stop: Stop | None = None
        output: Any = None
        try:
            output = await handler(step, env)
        except (StepStopped, ExecutionError) as exc:
            stop = classify(exc)
        finished = env.clock()
        if output is SKIPPED:
            return StepOutcome(
                StepRecord(env.run.id, step.id, "skipped", None, updated_at=finished)
            )
        held = stop is not None and stop.code in HELD  # a call not sent: no attempt
        if not env.attempts and not held:  # a local step: one attempt
            env.attempts.append(
                Attempt(
                    1,
                    started,
                    finished,
                    "ok" if stop is None else stop.action,
                    error=None if stop is None else stop.message,
                    generation=env.run.history_generation,
                )
            )
            count_attempt(env, env.attempts[0].outcome, False)
        return StepOutcome(_record(step, env, output, stop, finished), tuple(env.emitted), stop)

    return run


def _record(
    step: CompiledStep, env: StepEnv, output: Any, stop: Stop | None, finished: float
) -> StepRecord:
    if stop is None:
        state, error = "succeeded", None
    elif stop.action == "wait" and stop.code in HELD:  # the gates decide again when it wakes
        state, error, output = "waiting", stop.message, {"held": stop.code}
    elif stop.action == "wait":
        state, error, output = "waiting", stop.message, {"retry_at": stop.retry_at}
    else:
        state, error = "failed", f"{stop.code}: {stop.message}"
        output = {"errors": list(stop.errors)} if stop.errors else None
    consumed = None if env.consumed is None else digest(env.consumed)
    return StepRecord(
        env.run.id, step.id, state, output, consumed, error, list(env.attempts), finished
    )


def classify(exc: Exception) -> Stop:
    """The Stop an error raised by a step means (see the module docstring)."""
    if isinstance(exc, StepStopped):
        return exc.stop
    if isinstance(exc, ParkRequested):
        return Stop("park", exc.code, exc.message)
    if isinstance(exc, ValidationFailed):
        return Stop("fail", exc.code, _listing(exc.problems), errors=_problems(exc.problems))
    if isinstance(exc, MappingError):
        return Stop("fail", "MAPPING_FAILED", str(exc), errors=_problems(exc.problems))
    if isinstance(exc, CallError):
        return Stop("park", "CALL_FAILED", exc.message)
    if isinstance(exc, ExpressionError):  # e.g. a template beyond the sandbox's limits
        return Stop("fail", "EXPRESSION_FAILED", str(exc))
    return Stop("fail", "STEP_FAILED", str(exc))
