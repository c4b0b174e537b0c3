"""Alert: telling the owning team when something needs it (parked runs, a metric over a
threshold, an objective being missed, a circuit opening), through an ordinary System call."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from engine.model.base import Duration, Model, Ref
from engine.model.flow import Value
from engine.model.resource import Resource


class ParkedCondition(Model):
    """Runs of `flows` (names or globs) parked with one of `reasons` (any reason when empty)."""

    flows: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    reasons: list[str] = Field(default_factory=list)
    for_: Duration = Field(default=0.0, alias="for", ge=0)  # parked at least this long
    per: Literal["alert", "flow", "reason", "run"] = "alert"  # one subject per ...


class MetricCondition(Model):
    """A gauge or counter (the series matching `labels`, summed) above or below a threshold
    for a duration."""

    _exclusive: ClassVar[tuple[str, ...]] = ("above", "below")
    name: str
    above: float | None = None
    below: float | None = None
    for_: Duration = Field(default=0.0, alias="for", ge=0)
    labels: dict[str, str] = Field(default_factory=dict)


class ObjectiveCondition(Model):
    """A duration metric's objective is being missed."""

    metric: str
    for_: Duration = Field(default=0.0, alias="for", ge=0)


class CircuitCondition(Model):
    """A System's circuit breaker is open (or half-open: probing)."""

    system: str  # a System name, or "*" for any


class When(Model):
    _exclusive: ClassVar[tuple[str, ...]] = ("parked", "metric", "objective", "circuit")
    parked: ParkedCondition | None = None
    metric: MetricCondition | None = None
    objective: ObjectiveCondition | None = None
    circuit: CircuitCondition | None = None


class Notify(Model):
    """The call that tells the team: a System's operation, with values over the alert's
    context `{alert, subject, run, runs, count, reason, metric, system, env}`."""

    system: Ref
    operation: str
    params: dict[str, Value] = Field(default_factory=dict)
    query: dict[str, Value] = Field(default_factory=dict)
    headers: dict[str, Value] = Field(default_factory=dict)
    body: Value | None = None


class AlertSpec(Model):
    when: When
    notify: Notify
    repeat: Duration = Field(default=3600.0, gt=0)  # at most one notification per subject


class Alert(Resource):
    kind: Literal["Alert"]
    spec: AlertSpec
