"""RetryPolicy (how calls are retried) and GovernancePolicy (house rules the compiler checks)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from engine.model.base import DEFAULT_RETRY_ON, Duration, Model, Status
from engine.model.resource import Resource

ErrorOutcome = Literal["succeed", "park", "fail", "retry"]


class Backoff(Model):
    initial: Duration = 0.5
    multiplier: float = Field(default=2.0, ge=1.0)
    max: Duration = 300.0
    jitter: Literal["full", "equal", "none"] = "full"


class RetryPolicySpec(Model):
    max_attempts: int = Field(default=5, ge=1, alias="maxAttempts")
    backoff: Backoff = Field(default_factory=Backoff)
    timeout: Duration | None = None           # per attempt; default: the System's timeout
    deadline: Duration | None = None          # overall, then onExhausted
    retry_on: list[Status] = Field(
default_factory=lambda: list(DEFAULT_RETRY_ON), alias="retryOn"
    )
    respect_retry_after: bool = Field(default=True, alias="respectRetryAfter")
    on_error: dict[Status, ErrorOutcome] = Field(default_factory=dict, alias="onError")
    on_exhausted: Literal["dead-letter", "park"] = Field(default="dead-letter", alias="onExhausted")


class RetryPolicy(Resource):
    kind: Literal["RetryPolicy"]
    spec: RetryPolicySpec


class RuleMatch(Model):
    kind: str = "*"                           # a kind, or "*" for every kind
    name: str | None = None                   # glob
    labels: dict[str, str] = Field(default_factory=dict)    # all must be present and equal
    environments: list[str] = Field(default_factory=list)  # only for these; empty: all


class GovernanceRule(Model):
    id: str
    match: RuleMatch = Field(default_factory=RuleMatch)
    assert_: str = Field(alias="assert")
    message: str
    severity: Literal["error", "warning"] = "error"


class GovernancePolicySpec(Model):
    rules: list[GovernanceRule]

    @model_validator(mode="after")
    def _unique_ids(self) -> GovernancePolicySpec:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id '{rule.id}' is used twice")
            seen.add(rule.id)
        return self


class GovernancePolicy(Resource):
    kind: Literal["GovernancePolicy"]
    spec: GovernancePolicySpec
