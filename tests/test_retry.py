"""The retry rules of a RetryPolicy: classification, exhaustion, backoff, jitter, Retry-After."""

from __future__ import annotations

import random
from typing import Any

import pytest

from engine.errors import CallError
from engine.model.policy import RetryPolicySpec
from engine.runtime.retry import Decision, backoff, decide

SAAS_API = {
    "maxAttempts": 8,
    "backoff": {"initial": "500ms", "multiplier": 2, "max": "5m", "jitter": "full"},
    "timeout": "30s",
    "deadline": "24h",
    "retryOn": ["timeout", "network", "429", "5xx"],
    "respectRetryAfter": True,
    "onError": {"409": "succeed", "4xx": "park"},
    "onExhausted": "dead-letter",
}


def policy(**overrides: Any) -> RetryPolicySpec:
    """The spec's `saas-api` policy with some fields replaced (YAML names)."""
    return RetryPolicySpec.model_validate({**SAAS_API, **overrides})


def status(code: int, retry_after: float | None = None) -> CallError:
    return CallError(f"HTTP {code}", status=code, retry_after=retry_after)


TIMEOUT = CallError("timed out", kind="timeout", retryable=True)
NETWORK = CallError("refused", kind="network", retryable=True)


def first(spec: RetryPolicySpec, error: CallError, attempt: int = 1, now: float = 0.0) -> Decision:
    return decide(spec, error, attempt=attempt, first_attempt_at=0.0, now=now, rng=random.Random(7))


# --- classification --------------------------------------------------------------------------


def test_exact_on_error_code_beats_its_class() -> None:
    assert first(policy(), status(409)).action == "succeed"
    assert first(policy(), status(404)).action == "park"
    assert first(policy(), status(422)).action == "park"


def test_on_error_precedence_does_not_depend_on_declaration_order() -> None:
    spec = policy(onError={"4xx": "park", "409": "succeed"})
    assert first(spec, status(409)).action == "succeed"


def test_on_error_is_checked_before_retry_on() -> None:
    spec = policy(onError={"503": "fail", "timeout": "park"})
    assert first(spec, status(503)).action == "fail"
    assert first(spec, status(504)).action == "retry"
    assert first(spec, TIMEOUT).action == "park"
    assert first(spec, status(500)).action == "retry"


def test_the_spec_policy_retries_429_although_4xx_parks() -> None:
    # retryOn's exact "429" is more specific than onError's "4xx" class.
    assert first(policy(), status(429)).action == "retry"
    assert first(policy(), status(428)).action == "park"


def test_on_error_wins_over_retry_on_of_equal_specificity() -> None:
    assert first(policy(onError={"429": "park"}), status(429)).action == "park"
    assert first(policy(onError={"5xx": "fail"}), status(500)).action == "fail"
    assert first(policy(onError={"timeout": "park"}), TIMEOUT).action == "park"


def test_an_exact_retry_on_code_beats_an_on_error_class() -> None:
    spec = policy(retryOn=["503"], onError={"5xx": "fail"})
    assert first(spec, status(503)).action == "retry"
    assert first(spec, status(500)).action == "fail"


def test_on_error_retry_retries_what_retry_on_does_not_list() -> None:
    spec = policy(retryOn=["timeout"], onError={"409": "retry"})
    assert first(spec, status(409)).action == "retry"
    assert first(spec, status(500)).action == "fail"


def test_retry_on_matches_exact_codes_and_classes() -> None:
    spec = policy(onError={})
    assert first(spec, status(429)).action == "retry"
    assert first(spec, status(500)).action == "retry"
    assert first(spec, status(503)).action == "retry"
    assert first(spec, status(400)).action == "fail"
    assert first(spec, status(418)).action == "fail"


def test_timeout_and_network_are_classes_of_their_own() -> None:
    spec = policy(retryOn=["timeout"], onError={})
    assert first(spec, TIMEOUT).action == "retry"
    assert first(spec, NETWORK).action == "fail"
    spec = policy(retryOn=["network", "5xx"], onError={})
    assert first(spec, NETWORK).action == "retry"
    assert first(spec, TIMEOUT).action == "fail"


def test_an_error_nothing_matches_fails_whatever_its_retryable_hint() -> None:
    spec = policy(retryOn=["5xx"], onError={})
    decision = first(spec, CallError("boom", status=429, retryable=True))
    assert decision == Decision("fail", reason="429 Too Many Requests: not in retryOn")


def test_status_classes_never_match_timeouts() -> None:
    spec = policy(retryOn=["5xx"], onError={"4xx": "park"})
    assert first(spec, TIMEOUT).action == "fail"


def test_reasons_name_the_status_and_the_rule() -> None:
    assert first(policy(), status(409)).reason == "409 Conflict: onError '409' -> succeed"
    assert first(policy(), status(404)).reason == "404 Not Found: onError '4xx' -> park"
    assert first(policy(), status(599)).reason == "HTTP 599"


# --- exhaustion ------------------------------------------------------------------------------


def test_max_attempts_counts_the_attempt_that_just_failed() -> None:
    spec = policy(maxAttempts=3)
    assert first(spec, status(503), attempt=1).action == "retry"
    assert first(spec, status(503), attempt=2).action == "retry"
    exhausted = first(spec, status(503), attempt=3)
    assert exhausted == Decision("exhausted", reason="503 Service Unavailable: 3 attempts used")


def test_one_attempt_means_no_retry() -> None:
    assert first(policy(maxAttempts=1), TIMEOUT).action == "exhausted"


def test_exhaustion_does_not_apply_to_classified_outcomes() -> None:
    spec = policy(maxAttempts=1)
    assert first(spec, status(409)).action == "succeed"
    assert first(spec, status(400)).action == "park"


def test_deadline_exhausts_when_the_next_attempt_would_start_after_it() -> None:
    spec = policy(deadline="10s", backoff={"initial": "4s", "jitter": "none"})
    assert first(spec, TIMEOUT, attempt=1, now=6.0) == Decision("retry", 4.0, "timeout")
    late = first(spec, TIMEOUT, attempt=1, now=6.5)
    assert late == Decision("exhausted", reason="timeout: deadline 10s would pass")


def test_deadline_is_measured_from_the_first_attempt() -> None:
    spec = policy(deadline="1m", backoff={"initial": "1s", "jitter": "none"})
    decision = decide(
        spec, NETWORK, attempt=2, first_attempt_at=1000.0, now=1058.0, rng=random.Random(1)
    )
    assert decision.action == "retry" and decision.delay == 2.0
    decision = decide(
        spec, NETWORK, attempt=2, first_attempt_at=1000.0, now=1058.5, rng=random.Random(1)
    )
    assert decision.action == "exhausted"


def test_without_deadline_only_max_attempts_limits() -> None:
    spec = policy(deadline=None, maxAttempts=100, backoff={"jitter": "none"})
    decision = first(spec, TIMEOUT, attempt=99, now=1e9)
    assert decision.action == "retry" and decision.delay == 300.0


# --- backoff ---------------------------------------------------------------------------------


def test_backoff_grows_by_the_multiplier_up_to_max() -> None:
    spec = policy(backoff={"initial": "500ms", "multiplier": 3, "max": "10s", "jitter": "none"})
    rng = random.Random(0)
    delays = [backoff(spec, attempt, rng, None) for attempt in range(1, 7)]
    assert delays == [0.5, 1.5, 4.5, 10.0, 10.0, 10.0]


def test_backoff_survives_huge_attempt_numbers() -> None:
    spec = policy(backoff={"initial": "1s", "multiplier": 10, "max": "1h", "jitter": "none"})
    assert backoff(spec, 10_000, random.Random(0), None) == 3600.0


def test_a_multiplier_of_one_is_a_constant_delay() -> None:
    spec = policy(backoff={"initial": "2s", "multiplier": 1, "jitter": "none"})
    assert {backoff(spec, n, random.Random(0), None) for n in range(1, 10)} == {2.0}


@pytest.mark.parametrize(
    ("jitter", "low", "high"),
    [("full", 0.0, 8.0), ("equal", 4.0, 8.0), ("none", 8.0, 8.0)],
)
def test_jitter_stays_within_its_bounds(jitter: str, low: float, high: float) -> None:
    spec = policy(backoff={"initial": "1s", "multiplier": 2, "max": "1m", "jitter": jitter})
    rng = random.Random(42)
    delays = [backoff(spec, 4, rng, None) for _ in range(2000)]
    assert all(low <= d <= high for d in delays)
    if jitter != "none":  # spread over the range, not stuck at one end
        assert min(delays) < low + (high - low) * 0.05
        assert max(delays) > high - (high - low) * 0.05


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    spec = policy()
    one = [backoff(spec, n, random.Random(3), None) for n in range(1, 6)]
    two = [backoff(spec, n, random.Random(3), None) for n in range(1, 6)]
    assert one == two


def test_decide_uses_the_jittered_backoff() -> None:
    spec = policy(backoff={"initial": "1s", "multiplier": 2, "max": "1m", "jitter": "full"})
    decision = decide(spec, NETWORK, attempt=3, first_attempt_at=0, now=0, rng=random.Random(9))
    assert decision.delay == random.Random(9).uniform(0, 4.0)


# --- Retry-After -----------------------------------------------------------------------------


def test_retry_after_is_never_undercut() -> None:
    spec = policy(backoff={"initial": "500ms", "jitter": "none"})
    decision = first(spec, status(429, retry_after=2.0))
    assert decision == Decision("retry", 2.0, "429 Too Many Requests, retry-after 2s")


def test_a_longer_backoff_wins_over_a_short_retry_after() -> None:
    spec = policy(backoff={"initial": "8s", "jitter": "none"})
    assert first(spec, status(503, retry_after=1.0)).delay == 8.0


def test_retry_after_may_exceed_the_backoff_max() -> None:
    spec = policy(backoff={"initial": "1s", "max": "5s", "jitter": "none"})
    assert first(spec, status(429, retry_after=120.0)).delay == 120.0


def test_retry_after_counts_against_the_deadline() -> None:
    spec = policy(deadline="1m", backoff={"initial": "1s", "jitter": "none"})
    decision = first(spec, status(429, retry_after=90.0))
    assert decision.action == "exhausted"
    assert decision.reason == "429 Too Many Requests: deadline 60s would pass"


def test_retry_after_is_ignored_when_the_policy_says_so() -> None:
    spec = policy(respectRetryAfter=False, backoff={"initial": "500ms", "jitter": "none"})
    assert first(spec, status(429, retry_after=30.0)) == Decision(
        "retry", 0.5, "429 Too Many Requests"
    )
    assert backoff(spec, 1, random.Random(0), 30.0) == 0.5


def test_retry_after_with_full_jitter_is_a_floor() -> None:
    spec = policy(backoff={"initial": "10s", "jitter": "full"})
    rng = random.Random(1)
    delays = [backoff(spec, 1, rng, 3.0) for _ in range(500)]
    assert min(delays) == 3.0 and max(delays) > 9.0
