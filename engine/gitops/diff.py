"""What changes between two compiled bundles of a project (a base and a head), for one
environment: resources added, removed and changed (field by field), active versions, the
environment's settings, and breaking Schema changes. Pure functions over `Plan.bundle`s.

A Schema is compared two ways. The same name@version in both bundles with a different jsonSchema
was edited in place: an incompatible in-place edit is an error (E_SCHEMA_INPLACE), because runs and
mappings already built against that version would silently change meaning. And when the version
in use changes (the highest version that mappings and flows refer to, else the highest), the base's
version is compared with the head's and every breaking change is listed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.gitops.breaking import BreakingChange, breaking_changes
from engine.loader import Document
from engine.model.base import split_ref
from engine.source import Diagnostic, SourceLocation

Key = tuple[str, str, int]  # kind, name, version
KIND_ORDER = ("Flow", "Mapping", "Schema", "System", "RetryPolicy", "GovernancePolicy")


@dataclass(frozen=True)
class Change:
    """One field-level difference inside a resource or the environment's settings."""

    path: str  # spec.steps[2].call.body
    op: str  # '+' added, '-' removed, '~' changed
    old: Any = None
    new: Any = None


@dataclass(frozen=True)
class ResourceChange:
    """A resource added ('+'), removed ('-') or changed ('~'), with its field changes."""

    op: str
    kind: str
    name: str
    version: int
    changes: tuple[Change, ...] = ()

    @property
    def ident(self) -> str:
        return f"{self.kind} {self.name}@{self.version}"


@dataclass(frozen=True)
class ActiveChange:
    """The version a reference without `@N` means (a Flow's pin, else the highest) moved."""

    kind: str
    name: str
    old: int
    new: int


@dataclass(frozen=True)
class SchemaBreak:
    """A breaking change between the Schema version in use at the base and at the head."""

    name: str
    old_version: int
    new_version: int
    change: BreakingChange
    in_place: bool = False  # the same name@version was edited: an error, bump the version


@dataclass(frozen=True)
class PlanDiff:
    """Everything `syncline plan` reports."""

    project: str
    environment: str
    base_digest: str | None
    head_digest: str
    resources: tuple[ResourceChange, ...] = ()
    settings: tuple[Change, ...] = ()  # the environment's vars and pins, and defaults
    active: tuple[ActiveChange, ...] = ()
    breaking: tuple[SchemaBreak, ...] = ()
    errors: tuple[Diagnostic, ...] = field(default=())

    def count(self, op: str) -> int:
        changed = 1 if op == "~" and self.settings else 0
        return changed + sum(1 for r in self.resources if r.op == op)

    @property
    def has_changes(self) -> bool:
        return bool(self.resources or self.settings or self.active or self.breaking)

    def summary(self) -> str:
        return (
            f"Plan: {self.count('+')} to add, {self.count('~')} to change, "
            f"{self.count('-')} to remove; {len(self.breaking)} breaking."
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "environment": self.environment,
            "digest": {"base": self.base_digest, "head": self.head_digest},
            "resources": [_resource_dict(r) for r in self.resources],
            "settings": [_change_dict(c) for c in self.settings],
            "active": [a.__dict__ for a in self.active],
            "breaking": [_break_dict(b) for b in self.breaking],
            "errors": [d.as_dict() for d in self.errors],
            "summary": {
                "add": self.count("+"),
                "change": self.count("~"),
                "remove": self.count("-"),
                "breaking": len(self.breaking),
            },
        }


EMPTY_BUNDLE: Mapping[str, Any] = {"documents": [], "vars": {}, "pins": {}, "defaults": {}}


def diff_bundles(
    base: Mapping[str, Any] | None,
    head: Mapping[str, Any],
    *,
    base_digest: str | None = None,
    head_digest: str = "",
    head_documents: Sequence[Document] = (),
) -> PlanDiff:
    """Compare two bundles compiled for the same environment. `base` None: nothing before.
    `head_documents` (the head's loaded documents) only serve to locate errors."""
    base = base or EMPTY_BUNDLE
    before, after = index(base), index(head)
    breaks, errors = schema_breaks(before, after, head_documents)
    return PlanDiff(
        project=str(head.get("project", "")),
        environment=str(head.get("environment", "")),
        base_digest=base_digest,
        head_digest=head_digest,
        resources=tuple(_resource_changes(before, after)),
        settings=tuple(_settings(base, head)),
        active=tuple(_active_changes(active_versions(base), active_versions(head))),
        breaking=tuple(breaks),
        errors=tuple(errors),
    )


def index(bundle: Mapping[str, Any]) -> dict[Key, dict[str, Any]]:
    """The bundle's documents by (kind, name, version)."""
    found: dict[Key, dict[str, Any]] = {}
    for data in bundle.get("documents", ()):
        metadata = data.get("metadata") or {}
        found[(data["kind"], metadata["name"], int(metadata.get("version", 1)))] = data
    return found


def _sort_key(key: Key) -> tuple[int, str, int]:
    kind, name, version = key
    order = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
    return order, name, version


def _resource_changes(
    before: Mapping[Key, Any], after: Mapping[Key, Any]
) -> Iterable[ResourceChange]:
    for key in sorted(before.keys() | after.keys(), key=_sort_key):
        if key not in before:
            yield ResourceChange("+", *key)
        elif key not in after:
            yield ResourceChange("-", *key)
        elif before[key] != after[key]:
            yield ResourceChange("~", *key, tuple(field_changes(before[key], after[key])))


def field_changes(old: Any, new: Any, path: str = "") -> Iterable[Change]:
    """Field-level differences; lists of steps (dicts with an `id`) are matched by id."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            child = f"{path}.{key}" if path else str(key)
            if key not in new:
                yield Change(child, "-", old[key])
            elif key not in old:
                yield Change(child, "+", None, new[key])
            else:
                yield from field_changes(old[key], new[key], child)
    elif isinstance(old, list) and isinstance(new, list) and old != new:
        yield from (_by_id(old, new, path) if _has_ids(old, new) else _by_index(old, new, path))
    elif old != new:
        yield Change(path, "~", old, new)


def _has_ids(*lists: list[Any]) -> bool:
    return all(isinstance(item, dict) and "id" in item for items in lists for item in items)


def _by_id(old: list[Any], new: list[Any], path: str) -> Iterable[Change]:
    old_at = {item["id"]: i for i, item in enumerate(old)}
    new_ids = {item["id"] for item in new}
    for i, item in enumerate(new):
        if item["id"] not in old_at:
            yield Change(f"{path}[{i}]", "+", None, item)
        else:
            yield from field_changes(old[old_at[item["id"]]], item, f"{path}[{i}]")
    for item in old:
        if item["id"] not in new_ids:
            yield Change(f"{path}[{old_at[item['id']]}]", "-", item)


def _by_index(old: list[Any], new: list[Any], path: str) -> Iterable[Change]:
    for i in range(max(len(old), len(new))):
        if i >= len(new):
            yield Change(f"{path}[{i}]", "-", old[i])
        elif i >= len(old):
            yield Change(f"{path}[{i}]", "+", None, new[i])
        else:
            yield from field_changes(old[i], new[i], f"{path}[{i}]")


def _settings(base: Mapping[str, Any], head: Mapping[str, Any]) -> Iterable[Change]:
    for part in ("vars", "pins", "defaults"):
        yield from field_changes(dict(base.get(part) or {}), dict(head.get(part) or {}), part)


def active_versions(bundle: Mapping[str, Any]) -> dict[tuple[str, str], int]:
    """What each name means where it is used: a Flow's pin if it exists, else its highest
    version; for the other kinds, the highest version a definition refers to (a reference
    without `@N`: the highest there is). A name nothing refers to has no active version."""
    versions: dict[tuple[str, str], set[int]] = {}
    for kind, name, version in index(bundle):
        versions.setdefault((kind, name), set()).add(version)
    pins = bundle.get("pins") or {}
    active = {}
    for (kind, name), found in versions.items():
        if kind == "Flow":
            pinned = pins.get(name)
            active[(kind, name)] = pinned if pinned in found else max(found)
    for kind, ref in _references(bundle):
        try:
            name, pinned = split_ref(ref)
        except ValueError:  # a string under such a key that is no reference
            continue
        known = versions.get((kind, name))
        if known:
            active[(kind, name)] = max(active.get((kind, name), 0), pinned or max(known))
    return active


# keys whose string value names a resource of a kind (`map: to-order@2`, `retry: saas-api`)
REFERENCE_KEYS = {"map": "Mapping", "schema": "Schema", "source": "Schema", "target": "Schema",
                  "retry": "RetryPolicy", "system": "System"}


def _references(bundle: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    """(kind, reference) for every reference by name in the definitions and the defaults."""

    def walk(value: Any) -> Iterable[tuple[str, str]]:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "tests":  # test data, not definitions
                    continue
                if key in REFERENCE_KEYS and isinstance(item, str):
                    yield REFERENCE_KEYS[key], item
                else:
                    yield from walk(item)
        elif isinstance(value, list):
            for item in value:
                yield from walk(item)

    for data in index(bundle).values():
        yield from walk(data.get("spec") or {})
    yield from walk(dict(bundle.get("defaults") or {}))


def _active_changes(
    before: Mapping[tuple[str, str], int], after: Mapping[tuple[str, str], int]
) -> Iterable[ActiveChange]:
    for key in sorted(before.keys() & after.keys(), key=lambda k: _sort_key((*k, 0))):
        if before[key] != after[key]:
            yield ActiveChange(*key, before[key], after[key])


def schemas_in_use(bundle: Mapping[str, Any]) -> dict[str, int]:
    """Per Schema name, the highest version mappings and flows refer to (else the highest)."""
    docs = index(bundle)
    highest: dict[str, int] = {}
    for kind, name, version in docs:
        if kind == "Schema":
            highest[name] = max(version, highest.get(name, 0))
    used: dict[str, int] = {}
    for ref in _schema_refs(docs.values()):
        name, pinned = split_ref(ref)
        if name in highest:
            used[name] = max(used.get(name, 0), pinned or highest[name])
    return {name: used.get(name, version) for name, version in highest.items()}


def _schema_refs(documents: Iterable[Mapping[str, Any]]) -> Iterable[str]:
    for data in documents:
        spec = data.get("spec") or {}
        if data.get("kind") == "Mapping":
            yield from (spec[k] for k in ("source", "target") if isinstance(spec.get(k), str))
        elif data.get("kind") == "Flow":
            for step in spec.get("steps") or ():
                schema = (step.get("validate") or {}).get("schema")
                if isinstance(schema, str):
                    yield schema


def schema_breaks(
    before: Mapping[Key, Any], after: Mapping[Key, Any], head_documents: Sequence[Document] = ()
) -> tuple[list[SchemaBreak], list[Diagnostic]]:
    """Breaking changes of Schemas edited in place, and between the versions in use."""
    breaks: list[SchemaBreak] = []
    errors: list[Diagnostic] = []
    for kind, name, version in sorted(before.keys() & after.keys()):
        if kind != "Schema":
            continue
        changes = breaking_changes(
            _json_schema(before, name, version), _json_schema(after, name, version)
        )
        breaks.extend(SchemaBreak(name, version, version, c, in_place=True) for c in changes)
        if changes:
            errors.append(_in_place_error(name, version, changes, after, head_documents))
    old_use = schemas_in_use({"documents": list(before.values())})
    new_use = schemas_in_use({"documents": list(after.values())})
    for name in sorted(old_use.keys() & new_use.keys()):
        old, new = old_use[name], new_use[name]
        if old != new:
            changes = breaking_changes(
                _json_schema(before, name, old), _json_schema(after, name, new)
            )
            breaks.extend(SchemaBreak(name, old, new, c) for c in changes)
    return breaks, errors


def _json_schema(docs: Mapping[Key, Any], name: str, version: int) -> Mapping[str, Any]:
    return (docs[("Schema", name, version)].get("spec") or {}).get("jsonSchema") or {}


def _in_place_error(
    name: str,
    version: int,
    changes: list[BreakingChange],
    after: Mapping[Key, Any],
    head_documents: Sequence[Document],
) -> Diagnostic:
    top = max(v for k, n, v in after if k == "Schema" and n == name) + 1
    what = "; ".join(c.message for c in changes)
    message = (
        f"Schema '{name}@{version}' was changed incompatibly in place ({what}): keep "
        f"{name}@{version} as it was and add the change as metadata.version {top}, then "
        f"move the mappings and flows that need it to {name}@{top}"
    )
    return Diagnostic(
        _locate(head_documents, name, version, changes[0]), "E_SCHEMA_INPLACE", message
    )


def _locate(
    documents: Sequence[Document], name: str, version: int, change: BreakingChange
) -> SourceLocation:
    for doc in documents:
        data: dict[str, Any] = doc.data if isinstance(doc.data, dict) else {}
        metadata = data.get("metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        if (
            data.get("kind") == "Schema"
            and metadata.get("name") == name
            and metadata.get("version", 1) == version
        ):
            return doc.locate(("spec", "jsonSchema", *change.path))
    return SourceLocation("<schema>")


def _resource_dict(r: ResourceChange) -> dict[str, Any]:
    return {
        "op": r.op,
        "kind": r.kind,
        "name": r.name,
        "version": r.version,
        "changes": [_change_dict(c) for c in r.changes],
    }


def _change_dict(c: Change) -> dict[str, Any]:
    return {"path": c.path, "op": c.op, "old": c.old, "new": c.new}


def _break_dict(b: SchemaBreak) -> dict[str, Any]:
    return {
        "schema": b.name,
        "from": b.old_version,
        "to": b.new_version,
        "kind": b.change.kind,
        "field": b.change.field,
        "message": b.change.message,
        "in_place": b.in_place,
    }


def render_text(diff: PlanDiff, base_label: str = "base", head_label: str = "head") -> str:
    """`terraform plan`-like text: + / - / ~ per resource, then active versions, breaking
    changes and errors, and the summary line."""
    lines = [
        f"Plan for {diff.project} [{diff.environment}]: {base_label} -> {head_label}",
        f"  {diff.base_digest or '(nothing)'} -> {diff.head_digest}",
        "",
    ]
    if not diff.has_changes:
        lines += ["No changes.", ""]
    for resource in diff.resources:
        lines.append(f"  {resource.op} {resource.ident}")
        lines.extend(_change_line(c) for c in resource.changes)
    if diff.settings:
        lines.append(f"  ~ environment {diff.environment}")
        lines.extend(_change_line(c) for c in diff.settings)
    if diff.active:
        lines += ["", "Active versions:"]
        lines.extend(f"  ~ {a.kind} {a.name}: {a.old} -> {a.new}" for a in diff.active)
    if diff.breaking:
        lines += ["", "Breaking changes:"]
        lines.extend(_break_line(b) for b in diff.breaking)
    if diff.errors:
        lines.append("")
        lines.extend(d.format() for d in sorted(diff.errors))
    if diff.has_changes:
        lines.append("")
    lines.append(diff.summary())
    return "\n".join(lines) + "\n"


def _change_line(change: Change) -> str:
    if change.op == "+":
        return f"      + {change.path}: {_short(change.new)}"
    if change.op == "-":
        return f"      - {change.path}: {_short(change.old)}"
    return f"      ~ {change.path}: {_short(change.old)} -> {_short(change.new)}"


def _break_line(b: SchemaBreak) -> str:
    where = (
        f"{b.name}@{b.old_version} (edited in place)"
        if b.in_place
        else f"{b.name}@{b.old_version} -> {b.name}@{b.new_version}"
    )
    return f"  ! Schema {where}: {b.change.message}"


def _short(value: Any, limit: int = 70) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
