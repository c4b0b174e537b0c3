"""Decide what happens after an outbound call failed, as a RetryPolicy says.

`decide(policy, error, attempt=..., first_attempt_at=..., now=..., rng=...)` returns a `Decision`
(`rng` draws the jitter):

1. `onError` is checked first. Of the classes that match the error, the most specific wins: an
   exact status (`"409"`) beats a class (`"4xx"`). Its outcome is the action: `succeed` (treat the
   call as done), `park` (stop for a human), `fail` (fail the step now) or `retry` (go to 3).
   One exception keeps the spec's own `saas-api` policy meaningful: when `retryOn` names the error
   more specifically than `onError` does (`retryOn: ["429"]` against `onError: {"4xx": park}`),
   the call is retried. On equal specificity `onError` wins.
2. Otherwise, when a class in `retryOn` matches (`timeout`, `network`, `"429"`, `"5xx"`, ...), the
   call is retried (go to 3). An error nothing matches -> `fail`. `CallError.retryable` is only a
   hint for logs: the policy alone decides.
3. A retry is `exhausted` when `attempt` (1-based, the attempt that just failed) has reached
   `maxAttempts`, or when the next attempt (`now + delay`) would start after
   `first_attempt_at + deadline`. The executor then applies `onExhausted` (dead-letter or park).
   Otherwise the decision is `retry` after `delay` seconds.

Backoff (`backoff`): `delay = min(max, initial * multiplier ** (attempt - 1))`, then jitter:
`full` -> uniform(0, delay); `equal` -> delay/2 + uniform(0, delay/2); `none` -> delay. With
`respectRetryAfter` and a `Retry-After` on the error, the delay is `max(retry_after, jittered)`:
never shorter than the server asked, even beyond `max`, but it still counts against the deadline.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Literal

from engine.compiler.records import RetryPolicySpec
from engine.errors import CallError
from engine.model.base import StatusClass

Action = Literal["succeed", "retry", "park", "fail", "exhausted"]

_JITTER: dict[str, Callable[[float, random.Random], float]] = {
    "full": lambda delay, rng: rng.uniform(0.0, delay),
    "equal": lambda delay, rng: delay / 2 + rng.uniform(0.0, delay / 2),
    "none": lambda delay, rng: delay,
}


@dataclass(frozen=True)
class Decision:
    """What to do after a failed attempt."""

    action: Action
    delay: float = 0.0  # seconds before the next attempt (action "retry")
    reason: str = ""  # for lineage and logs, e.g. "429 Too Many Requests, retry-after 2s"


def decide(
    policy: RetryPolicySpec,
    error: CallError,
    *,
    attempt: int,
    first_attempt_at: float,
    now: float,
    rng: random.Random,
) -> Decision:
    """Classify `error` after attempt number `attempt` (1-based) by the rules in the docstring."""
    label = describe_error(error)
    matched = _most_specific(policy.on_error, error)
    retry_on = _most_specific(policy.retry_on, error)
    if matched is not None and not _more_specific(retry_on, matched):
        outcome = policy.on_error[matched]
        if outcome != "retry":
            return Decision(outcome, reason=f"{label}: onError '{matched}' -> {outcome}")
    elif retry_on is None:
        return Decision("fail", reason=f"{label}: not in retryOn")
    return _retry(policy, error, label, attempt, first_attempt_at, now, rng)


def backoff(
    policy: RetryPolicySpec, attempt: int, rng: random.Random, retry_after: float | None
) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based), jittered, honouring Retry-After."""
    spec = policy.backoff
    try:
        raw = spec.initial * spec.multiplier ** max(0, attempt - 1)
    except OverflowError:
        raw = math.inf
    delay = _JITTER[spec.jitter](min(spec.max, raw), rng)
    if policy.respect_retry_after and retry_after is not None:
        return max(retry_after, delay)
    return delay


def describe_error(error: CallError) -> str:
    """A short label: '429 Too Many Requests', 'timeout' or 'network error'."""
    if error.kind == "status" and error.status is not None:
        try:
            return f"{error.status} {HTTPStatus(error.status).phrase}"
        except ValueError:
            return f"HTTP {error.status}"
    return "network error" if error.kind == "network" else error.kind


def _most_specific(classes: Iterable[StatusClass], error: CallError) -> StatusClass | None:
    """The most specific of `classes` matching the error, if any."""
    matching = [c for c in classes if c.matches(error.status, error.kind)]
    return max(matching, key=lambda c: c.specificity, default=None)


def _more_specific(first: StatusClass | None, second: StatusClass) -> bool:
    return first is not None and first.specificity > second.specificity


def _retry(
    policy: RetryPolicySpec,
    error: CallError,
    label: str,
    attempt: int,
    first_attempt_at: float,
    now: float,
    rng: random.Random,
) -> Decision:
    if attempt >= policy.max_attempts:
        return Decision("exhausted", reason=f"{label}: {policy.max_attempts} attempts used")
    delay = backoff(policy, attempt, rng, error.retry_after)
    if policy.deadline is not None and now + delay > first_attempt_at + policy.deadline:
        return Decision("exhausted", reason=f"{label}: deadline {policy.deadline:g}s would pass")
    honoured = policy.respect_retry_after and error.retry_after is not None
    after = f", retry-after {error.retry_after:g}s" if honoured else ""
    return Decision("retry", delay, f"{label}{after}")
