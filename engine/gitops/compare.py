"""What differs between a base and a head, shared by the mapping and flow previews: whether a
mapping's definition changed (`mapping_fingerprint`), and leaf-by-leaf differences between two
outputs (`diff_fields`), redacted."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.compiler.compiled import CompiledMapping
from engine.compiler.plan import Plan
from engine.gitops.samples import REDACTED, Redactor

ABSENT = object()


@dataclass
class Change:
    sample: str
    kind: str                                  # one of KINDS
    fields: list[dict[str, Any]] = field(default_factory=list)   # {path, old?, new?}
    error: str | None = None                   # the failure (old for newly passing)


def definition_documents(plan: Plan | None) -> dict[tuple[str, str, int], Any]:
    """Each definition's source spec (without its tests) in `plan`, by (kind, name, version)."""
    documents = plan.bundle["documents"] if plan else []
    return {(d.get("kind"), d["metadata"]["name"], d["metadata"].get("version", 1)):
            {k: v for k, v in (d.get("spec") or {}).items() if k != "tests"}
            for d in documents}


def mapping_documents(documents: Mapping[tuple[str, str, int], Any]) -> dict[str, Any]:
    """The Mappings of `definition_documents`, by ident."""
    return {f"{name}@{version}": spec for (kind, name, version), spec in documents.items()
            if kind == "Mapping"}


def mapping_fingerprint(mapping: CompiledMapping, documents: Mapping[str, Any]) -> str:
    """What decides a mapping's output: its definition and its schemas."""
    schemas = [s.json_schema if s else None for s in (mapping.source, mapping.target)]
    return json.dumps([documents.get(mapping.ident), schemas], sort_keys=True, default=str)


def diff_fields(old: Any, new: Any, redactor: Redactor) -> list[dict[str, Any]]:
    """Leaf paths whose values differ: {path, old, new}; a missing side has no key."""
    before, after = _flatten(old), _flatten(new)
    changes = []
    for path in sorted(set(before) | set(after), key=lambda p: (p not in before, p)):
        a, b = before.get(path, ABSENT), after.get(path, ABSENT)
        if a == b and type(a) is type(b):
            continue
        if _emptied(a, b, path, after) or _emptied(b, a, path, before):
            continue  # `{}` on one side, its fields on the other: the fields say it all
        entry: dict[str, Any] = {"path": path}
        hidden = redactor.hides(path)
        if a is not ABSENT:
            entry["old"] = REDACTED if hidden else redactor.value(a)
        if b is not ABSENT:
            entry["new"] = REDACTED if hidden else redactor.value(b)
        changes.append(entry)
    return changes


def _emptied(value: Any, other: Any, path: str, other_side: Mapping[str, Any]) -> bool:
    """Whether `value` is an empty object or list whose path holds leaves on the other side."""
    if other is not ABSENT or value not in ({}, []):
        return False
    return any(p.startswith((f"{path}.", f"{path}[")) for p in other_side)


def _flatten(value: Any, prefix: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {} if out is None else out
    if value is ABSENT:
        return out
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            _flatten(item, f"{prefix}[{index}]", out)
    else:
        out[prefix or "."] = value
    return out
