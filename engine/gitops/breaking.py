"""Breaking changes between two versions of a Schema's JSON Schema.

The two are compared through `properties` (nested objects) and array `items`, field by field:

- removed:  a property of the old schema is gone from the new one;
- renamed:  a property is gone and one with the very same definition appeared in its place or
            under a similar name (reported once, as a rename, not a removal and an addition);
- type:     the new `type` does not accept every type the old one did (integer -> number widens
            and is fine; adding a `type` where there was none narrows);
- required: a field is required now that was not before (including a new required field);
- enum:     the new `enum` (or `const`) lacks values the old one allowed, or now restricts a
            field that had none.

Anything else a JSON Schema can say (`$ref`, `allOf`, patterns, bounds) is not compared.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

KINDS = ("removed", "renamed", "type", "required", "enum")
SchemaPath = tuple[str, ...]
Node = Mapping[str, Any]  # one (sub)schema


@dataclass(frozen=True)
class BreakingChange:
    """One incompatible difference between an old and a new JSON Schema."""

    kind: str  # one of KINDS
    field: str  # dotted field path: customer.name, lines[].sku ('' for the root)
    message: str  # what changed, for people
    path: SchemaPath = ()  # where in the new jsonSchema (to locate it in the file)


def breaking_changes(old: Node, new: Node) -> list[BreakingChange]:
    """Every breaking change from `old` to `new` (two JSON Schemas), in field order."""
    return list(_changes(old, new, "", ()))


def _changes(old: Any, new: Any, field: str, path: SchemaPath) -> Iterator[BreakingChange]:
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return
    yield from _type_changes(old, new, field, path)
    yield from _enum_changes(old, new, field, path)
    yield from _property_changes(old, new, field, path)
    yield from _changes(old.get("items"), new.get("items"), f"{field}[]", path + ("items",))


def _type_changes(old: Node, new: Node, field: str, path: SchemaPath) -> Iterator[BreakingChange]:
    before, after = _types(old), _types(new)
    if after is None or before == after:
        return
    if before is None or before - _widened(after):
        was = "any type" if before is None else "/".join(sorted(before))
        message = f"changed type of {_name(field)}: {was} -> {'/'.join(sorted(after))}"
        yield BreakingChange("type", field, message, path + ("type",))


def _types(schema: Node) -> set[str] | None:
    declared = schema.get("type")
    if declared is None:
        return None
    return {declared} if isinstance(declared, str) else {str(t) for t in declared}


def _widened(types: set[str]) -> set[str]:
    return types | {"integer"} if "number" in types else types


def _enum_changes(old: Node, new: Node, field: str, path: SchemaPath) -> Iterator[BreakingChange]:
    before, after = _allowed(old), _allowed(new)
    if after is None or before == after:
        return
    if before is None:
        message = f"narrowed {_name(field)} to the values {_values(after)}"
    else:
        lost = [value for value in before if value not in after]
        if not lost:
            return
        message = f"narrowed the enum of {_name(field)}: {_values(lost)} no longer allowed"
    yield BreakingChange("enum", field, message, path + ("enum" if "enum" in new else "const",))


def _allowed(schema: Node) -> list[Any] | None:
    if isinstance(schema.get("enum"), list):
        return list(schema["enum"])
    return [schema["const"]] if "const" in schema else None


def _property_changes(
    old: Node, new: Node, field: str, path: SchemaPath
) -> Iterator[BreakingChange]:
    before = _mapping(old.get("properties"))
    after = _mapping(new.get("properties"))
    renamed = _renames(before, after)
    props = path + ("properties",)
    for name in before:
        child = _join(field, name)
        if name in after:
            yield from _changes(before[name], after[name], child, props + (name,))
        elif name in renamed:
            message = f"renamed field {_name(child)} to {_name(_join(field, renamed[name]))}"
            yield BreakingChange("renamed", child, message, props + (renamed[name],))
        else:
            yield BreakingChange("removed", child, f"removed field {_name(child)}", props)
    was_required = set(_list(old.get("required")))
    renamed_from = {new: old for old, new in renamed.items()}
    for name in _list(new.get("required")):
        if name not in was_required and renamed_from.get(name) not in was_required:
            child = _join(field, name)
            message = f"{_name(child)} is newly required"
            yield BreakingChange("required", child, message, path + ("required",))


def _renames(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, str]:
    """Old name -> new name, for a removed field whose exact definition reappears under a new
    name that stands where the old one stood (after the same field), or reads like it
    (`qty` -> `quantity`)."""
    old_names, new_names = list(before), list(after)
    added = [name for name in after if name not in before]
    renamed: dict[str, str] = {}
    for name in before:
        if name in after:
            continue
        for candidate in added:
            if after[candidate] != before[name] or candidate in renamed.values():
                continue
            same_place = _before(old_names, name) == _before(new_names, candidate)
            if same_place or SequenceMatcher(None, name, candidate).ratio() >= 0.6:
                renamed[name] = candidate
                break
    return renamed


def _before(names: list[str], name: str) -> str | None:
    """The field just before `name` (a renamed field keeps its neighbour)."""
    at = names.index(name)
    return names[at - 1] if at else None


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def _join(field: str, name: str) -> str:
    return f"{field}.{name}" if field else name


def _name(field: str) -> str:
    return f"'{field}'" if field else "the document"


def _values(values: list[Any]) -> str:
    return ", ".join(repr(v) if isinstance(v, str) else str(v) for v in values)
