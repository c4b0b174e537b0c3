"""What is known at compile time of the fields a value has, to check field references.

A ``Shape`` is a JSON Schema (sub)schema with the document its ``#/...`` references resolve in.
A mapping's output has exactly the mapping's fields (dotted paths build nested objects), each
typed by the target Schema where there is one; a Schema's instances have what its
``properties`` declare, and nothing else where ``additionalProperties`` (or
``unevaluatedProperties``) is false. ``unknown_field`` finds the first field of a path that such
a value cannot have; it stays silent wherever the schema allows more or says nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.compiler.compiled import (
    CompiledMapping,
    CompiledStep,
    MapAction,
    SetAction,
    ValidateAction,
)
from engine.compiler.expressions import Expression
from engine.compiler.refs import ITEM, FieldPath
from engine.compiler.templates import Template

__all__ = ["Shape", "StepShapes", "closed_object", "deref", "schema_at", "unknown_field",
           "unknown_reads"]

Loc = tuple[Any, ...]  #: a path into a flow's spec


@dataclass(frozen=True)
class Shape:
    """A JSON Schema node and the root document its ``$ref``s resolve in."""

    node: Mapping[str, Any]
    root: Mapping[str, Any]


def closed_object(paths: Iterable[str], schema: Mapping[str, Any] | None = None) -> Shape:
    """An object with exactly the given (dotted) field paths; leaves typed by ``schema``."""
    tree: dict[str, Any] = {}
    for path in paths:
        level = tree
        for part in path.split("."):
            level = level.setdefault(part, {})
    root = schema or {}
    return Shape(_object(tree, (), root), root)


def _object(tree: dict[str, Any], prefix: tuple[str, ...], root: Mapping[str, Any]
            ) -> Mapping[str, Any]:
    properties = {
        name: _object(sub, (*prefix, name), root) if sub else schema_at(root, (*prefix, name))
        for name, sub in tree.items()
    }
    return {"type": "object", "properties": properties, "additionalProperties": False}


def mapping_shape(mapping: CompiledMapping) -> Shape:
    """A mapping's output: its fields, typed by its target Schema."""
    return closed_object(mapping.fields, mapping.target.json_schema if mapping.target else None)


def input_shape(first: CompiledStep | None) -> Shape | None:
    """The trigger's data, where the first step maps it with a source Schema."""
    if first is None or not isinstance(first.action, MapAction):
        return None
    source = first.action.mapping.source
    if first.action.input.text != "data" or source is None:
        return None
    return Shape(source.json_schema, source.json_schema)


class StepShapes:
    """The output shape of each step it is known of, worked out when first asked: map, set,
    and validate (its Schema, else the shape of what it validates when that is ``data`` or one
    step's output)."""

    def __init__(self, steps: Iterable[CompiledStep], data: Shape | None) -> None:
        self._steps = {step.id: step for step in steps}
        self._data = data
        self._known: dict[str, Shape | None] = {}

    def get(self, step_id: str) -> Shape | None:
        if step_id not in self._known:
            self._known[step_id] = None  # a validate reading itself stays unknown
            step = self._steps.get(step_id)
            self._known[step_id] = None if step is None else self._shape(step)
        return self._known[step_id]

    def _shape(self, step: CompiledStep) -> Shape | None:
        action = step.action
        if isinstance(action, MapAction):
            return mapping_shape(action.mapping)
        if isinstance(action, SetAction):
            return closed_object(action.values)
        if not isinstance(action, ValidateAction):
            return None
        if action.schema is not None:
            return Shape(action.schema.json_schema, action.schema.json_schema)
        text = action.input.text
        if text == "data":
            return self._data
        return self.get(text.removeprefix("steps.")) if text.startswith("steps.") else None


def unknown_reads(reads: Iterable[tuple[Loc, Expression | Template]],
                  steps: Iterable[CompiledStep]) -> Iterator[tuple[Loc, str, FieldPath, list[str]]]:
    """(where, text, the path up to its unknown field, the fields there are) for each read of
    ``steps.<id>.<path>`` or ``data.<path>`` that the value cannot have; once per such path."""
    steps = list(steps)
    data = input_shape(min(steps, key=lambda s: s.index, default=None))
    shapes = StepShapes(steps, data)
    seen: set[tuple[Loc, FieldPath]] = set()
    for loc, compiled in reads:
        for path in sorted(compiled.paths, key=len):
            if path[:1] == ("data",):
                shape, skip = data, 1
            elif len(path) > 2 and path[0] == "steps" and isinstance(path[1], str):
                shape, skip = shapes.get(path[1]), 2
            else:
                continue
            found = unknown_field(shape, path[skip:]) if shape is not None else None
            if found is None or (loc, path[:skip + found[0] + 1]) in seen:
                continue
            seen.add((loc, path[:skip + found[0] + 1]))
            yield loc, compiled.text, path[:skip + found[0] + 1], found[1]


def schema_at(root: Mapping[str, Any], parts: Sequence[str]) -> Mapping[str, Any]:
    """The subschema of a dotted path of objects, or ``{}`` (anything) where it is not declared."""
    node: Any = root
    for part in parts:
        node = deref(node, root)
        properties = node.get("properties") if isinstance(node, Mapping) else None
        if not isinstance(properties, Mapping) or part not in properties:
            return {}
        node = properties[part]
    node = deref(node, root)
    return node if isinstance(node, Mapping) else {}


def unknown_field(shape: Shape, path: FieldPath) -> tuple[int, list[str]] | None:
    """(index in ``path`` of the first field the value cannot have, the fields it can have)."""
    node: Any = shape.node
    for index, part in enumerate(path):
        node = deref(node, shape.root)
        if not isinstance(node, Mapping):
            return None
        if part == ITEM:
            node = node.get("items")
            continue
        properties = node.get("properties")
        if not isinstance(properties, Mapping):
            return None
        if part in properties:
            node = properties[part]
            continue
        closed = node.get("additionalProperties") is False or (
            node.get("unevaluatedProperties") is False)
        if closed and not node.get("patternProperties"):
            return index, sorted(properties)
        return None
    return None


def deref(node: Any, root: Mapping[str, Any]) -> Any:
    """A local ``$ref`` (``#/...``) followed once; any other node as it is."""
    ref = node.get("$ref") if isinstance(node, Mapping) else None
    if not (isinstance(ref, str) and ref.startswith("#/")):
        return node
    target: Any = root
    for part in ref[2:].split("/"):
        target = target.get(part) if isinstance(target, Mapping) else None
    return target if isinstance(target, Mapping) else {}
