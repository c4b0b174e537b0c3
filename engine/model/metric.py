"""Metric: business telemetry computed from the store (a gauge of runs, a duration between two
points of one correlation, or a counter of operator actions or state transitions)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from engine.model.base import Duration, Model
from engine.model.resource import Resource


class Gauge(Model):
    """A live count of runs of `flow` in one of `states`."""

    flow: str                                 # a flow name, or "*" for every flow
    states: list[str] = Field(min_length=1)
    before_step: str | None = Field(default=None, alias="beforeStep")  # not completed this step


class Point(Model):
    """One end of a duration: an event of a type stored, or a run of a flow entering a state."""

    _exclusive: ClassVar[tuple[str, ...]] = ("event", "flow")
    event: str | None = None
    flow: str | None = None
    state: str | None = None

    @model_validator(mode="after")
    def _state_with_flow(self) -> Point:
        if (self.flow is None) != (self.state is None):
            raise ValueError("a point is {event: TYPE} or {flow: FLOW, state: STATE}")
        return self


class DurationSpec(Model):
    """The time from `from` to the next `to` of the same correlation id."""

    from_: Point = Field(alias="from")
    to: Point
    match: Literal["correlation"] = "correlation"


class Counter(Model):
    """Operator actions on runs of `flow`, or runs of `flow` entering state `to`."""

    _exclusive: ClassVar[tuple[str, ...]] = ("actions", "to")
    flow: str = "*"
    actions: list[Literal["resume", "retry", "cancel", "replay"]] | None = None
    to: str | None = None


class Objective(Model):
    """`percentile` percent of the observations are under `under`."""

    percentile: float = Field(gt=0, le=100)
    under: Duration


class MetricSpec(Model):
    _exclusive: ClassVar[tuple[str, ...]] = ("gauge", "duration", "counter")
    help: str
    gauge: Gauge | None = None
    duration: DurationSpec | None = None
    counter: Counter | None = None
    labels: dict[str, str] = Field(default_factory=dict)  # name -> JMESPath over the run
    buckets: list[Duration] = Field(default_factory=lambda: [1.0, 10.0, 60.0, 600.0, 3600.0,
                                                             86400.0])
    objective: Objective | None = None


class Metric(Resource):
    kind: Literal["Metric"]
    spec: MetricSpec
