"""Schema: a canonical (or application) entity described by JSON Schema 2020-12."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from engine.model.base import Model
from engine.model.resource import Resource


class SchemaSpec(Model):
    owner: str | None = None          # the System authoritative for this entity
    # fields another System masters: dotted field path -> System
    field_owners: dict[str, str] = Field(default_factory=dict, alias="fieldOwners")
    key: str | None = None            # the entity's identity field
    json_schema: dict[str, Any] = Field(alias="jsonSchema")


class Schema(Resource):
    kind: Literal["Schema"]
    spec: SchemaSpec
