"""Mapping: a versioned transformation rule from one document shape to another."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from engine.model.base import Model, Ref, RelativePath
from engine.model.resource import Resource


class FieldRuleSpec(Model):
    """One target field: exactly one of expr, template, const; then lookup, default, required."""

    _exclusive: ClassVar[tuple[str, ...]] = ("expr", "template", "const")
    expr: str | None = None
    template: str | None = None
    const: Any = None
    default: Any = None
    lookup: str | None = None
    required: bool = False


class MappingTest(Model):
    name: str
    input: Any = None
    input_file: RelativePath | None = Field(default=None, alias="inputFile")
    expect: Any = None
    expect_file: RelativePath | None = Field(default=None, alias="expectFile")
    expect_error: str | None = Field(default=None, alias="expectError")


class MappingSpec(Model):
    source: Ref | None = None
    target: Ref | None = None
    fields: dict[str, str | FieldRuleSpec]
    lookups: dict[str, dict[str, Any]] = Field(default_factory=dict)
    tests: list[MappingTest] = Field(default_factory=list)


class Mapping(Resource):
    kind: Literal["Mapping"]
    spec: MappingSpec
