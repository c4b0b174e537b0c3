"""Reconciliation: a scheduled check that two Systems agree, item by item."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from engine.model.base import Model, Ref
from engine.model.resource import Resource
from engine.model.triggers import PollPages, ScheduleTrigger


class Side(Model):
    system: Ref
    operation: str                     # a read (GET/HEAD or `write: false`), no path parameters
    items: str = "body.items"          # JMESPath over a response: the list of items
    key: str                           # JMESPath over an item: what pairs it with the other side
    query: dict[str, str] = Field(default_factory=dict)  # constant query parameters
    pages: PollPages | None = None


class OnMismatch(Model):
    _exclusive: ClassVar[tuple[str, ...]] = ("emit", "park")
    emit: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-.]+$")
    park: str | None = Field(default=None, pattern=r"^[A-Z][A-Z0-9_]*$")


class ReconciliationSpec(Model):
    schedule: ScheduleTrigger | None = None   # none: only `syncline reconcile` runs it
    left: Side
    right: Side
    compare: dict[str, list[str]] = Field(default_factory=dict)  # name -> [left expr, right expr]
    on_mismatch: OnMismatch | None = Field(default=None, alias="onMismatch")


class Reconciliation(Resource):
    kind: Literal["Reconciliation"]
    spec: ReconciliationSpec
