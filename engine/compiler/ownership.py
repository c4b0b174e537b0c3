"""Domain ownership: which System masters each field, and which writes would overwrite it.

A Schema's `owner` masters every field of the entity except those `fieldOwners` gives to another
System. An operation that declares `schema:` tells the compiler which entity its request body
carries, so every `call` (and `compensate`) into it is checked: writing a field into the System
that owns it, from a flow not triggered by that System, overwrites master data (E_OWNERSHIP)
unless the step says why (`authority: {override: reason}`). A flow is triggered by the System of
its webhook, or, for an event trigger, by the Systems that trigger the flows emitting that event
(followed transitively). The fields a write sets are known from a mapping's targets, a JMESPath
multiselect's keys (`{a: x, b: y}`), a `const` object, or `steps.<map step>`; anything else is
W_OWNERSHIP_UNKNOWN.

`ownership_matrix(registry)` is what `syncline owners` prints: entity, field, owning System, and
the writes of each field into each System (copies, the owner's own writes, overrides, unknowns).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError

from engine.compiler.resolve import Registry
from engine.loader import Document
from engine.model import Flow, Schema, System
from engine.model import flow as m
from engine.model.base import split_ref
from engine.model.mapping import Mapping
from engine.source import Diagnostic

ALL_FIELDS = "*"   # the matrix row of the fields the entity's owner masters


@dataclass(frozen=True)
class Write:
    """One call or compensate of a flow into an operation that declares its Schema."""

    flow: str                          # name@version
    step: str                          # step id, `<id>#compensate` for a compensate action
    system: str
    operation: str
    entity: str                        # the Schema's name@version
    fields: tuple[str, ...] | None     # dotted paths the body sets; None: cannot be known
    origins: tuple[str, ...]           # the Systems whose changes trigger the flow
    override: str | None               # authority.override, if the step gave one


@dataclass(frozen=True)
class FieldRow:
    """A row of the matrix: an entity's field (or `*`), its owner, and the writes of it."""

    entity: str
    field: str
    owner: str
    writes: tuple[tuple[Write, str], ...]  # (write, kind): copy | owner | override | unknown

    def as_dict(self) -> dict[str, Any]:
        return {"entity": self.entity, "field": self.field, "owner": self.owner,
                "writes": [{"flow": w.flow, "step": w.step, "system": w.system,
                            "operation": w.operation, "kind": kind,
                            **({"override": w.override} if kind == "override" else {})}
                           for w, kind in self.writes]}


@dataclass(frozen=True)
class _Entity:
    ident: str
    owner: str | None
    field_owners: dict[str, str]

    def owners_of(self, path: str) -> set[str]:
        """The Systems a write of `path` touches the master data of."""
        for key, owner in self.field_owners.items():
            if path == key or path.startswith(key + "."):
                return {owner}
        nested = {o for k, o in self.field_owners.items() if k.startswith(path + ".")}
        return nested | ({self.owner} if self.owner else set())


def check_ownership(registry: Registry) -> list[Diagnostic]:
    """Owners that are no System of the bundle (E_REF), writes into a field's owner from a flow
    triggered elsewhere (E_OWNERSHIP), and writes whose fields cannot be known
    (W_OWNERSHIP_UNKNOWN)."""
    _check_references(registry)
    diagnostics = []
    entities = _entities(registry)
    for write, doc, loc in _writes(registry, entities):
        if write.fields is None:
            diagnostics.append(Diagnostic(
                doc.locate(loc), "W_OWNERSHIP_UNKNOWN",
                f"step '{write.step}' of flow '{write.flow}' writes Schema '{write.entity}' "
                f"into '{write.system}' (operation '{write.operation}'), but which fields it sets "
                "cannot be known at compile time (use a mapping, a {field: expr} multiselect or "
                "a const object to let the compiler check ownership)", "warning"))
            continue
        overwritten = [f for f in write.fields
                       if write.system in entities[write.entity].owners_of(f)]
        if overwritten and write.origins != (write.system,) and write.override is None:
            names = ", ".join(f"'{f}'" for f in overwritten)
            diagnostics.append(Diagnostic(
                doc.locate(loc), "E_OWNERSHIP",
                f"step '{write.step}' of flow '{write.flow}' writes field{_s(overwritten)} "
                f"{names} of '{write.entity}' into '{write.system}', which owns "
                f"{'it' if len(overwritten) == 1 else 'them'}, from a flow "
                f"{_triggered_by(write.origins)}: master data is changed only by its owner "
                "(give the step authority: {override: \"why\"} if this is intended)"))
    return diagnostics


def ownership_matrix(registry: Registry) -> list[FieldRow]:
    """Every owned entity's fields with their owners and the writes of them, sorted."""
    entities = _entities(registry)
    writes = [w for w, _, _ in _writes(registry, entities)]
    rows = []
    for ident, entity in sorted(entities.items()):
        fields = ([(ALL_FIELDS, entity.owner)] if entity.owner else []) + sorted(
            entity.field_owners.items())
        for field, owner in fields:
            found = tuple((w, _kind(w, owner)) for w in writes
                          if w.entity == ident and _touches(entity, field, w.fields))
            rows.append(FieldRow(ident, field, owner, found))
    return rows


def plan_ownership(bundle: Any) -> list[FieldRow]:
    """The ownership matrix of a compiled plan's bundle (its interpolated documents)."""
    from engine.compiler.parse import parse_document

    registry = Registry()
    for index, data in enumerate(bundle["documents"]):
        doc = Document("<bundle>", index, data)
        resource, _ = parse_document(doc)
        if resource is not None:
            registry.add(resource, doc)
    return ownership_matrix(registry)


def _kind(write: Write, owner: str) -> str:
    if write.fields is None:
        return "unknown"
    if write.system != owner:
        return "copy"
    return "owner" if write.origins == (owner,) else "override"


def _touches(entity: _Entity, field: str, written: tuple[str, ...] | None) -> bool:
    if written is None:
        return field == ALL_FIELDS
    if field == ALL_FIELDS:
        return any(entity.owner in entity.owners_of(f) for f in written)
    return any(f == field or f.startswith(field + ".") or field.startswith(f + ".")
               for f in written)


def _s(items: list[str]) -> str:
    return "s" if len(items) != 1 else ""


def _triggered_by(origins: tuple[str, ...]) -> str:
    if not origins:
        return "no System's change triggers"
    return "triggered by " + " and ".join(f"'{o}'" for o in origins)


# what the bundle declares -----------------------------------------------------------------------

def _check_references(registry: Registry) -> None:
    """Owners must be Systems of the bundle and operation schemas Schemas (E_REF, located)."""
    systems = {s.name for s, _ in registry.all("System")}
    for schema, doc in registry.all("Schema"):
        assert isinstance(schema, Schema)
        named = [(("spec", "owner"), schema.spec.owner)] + [
            (("spec", "fieldOwners", f), o) for f, o in schema.spec.field_owners.items()]
        for loc, owner in named:
            if owner is not None and owner not in systems:
                registry.lookup("System", owner, doc.locate(loc), f"schema '{schema.ident}' owner")
    for system, doc in registry.all("System"):
        assert isinstance(system, System)
        for name, operation in system.spec.operations.items():
            if operation.schema_:
                registry.lookup("Schema", operation.schema_,
                                doc.locate(("spec", "operations", name, "schema")),
                                f"operation '{name}' of system '{system.name}'")


def _entities(registry: Registry) -> dict[str, _Entity]:
    entities = {}
    for schema, _ in registry.all("Schema"):
        assert isinstance(schema, Schema)
        entities[schema.ident] = _Entity(schema.ident, schema.spec.owner,
                                         dict(schema.spec.field_owners))
    return entities


def _silent(registry: Registry, kind: str, ref: str) -> Any:
    """Resolve a reference without reporting (the flow compiler reports bad references)."""
    name, version = split_ref(ref)
    versions = registry.versions(kind, name)
    if not versions:
        return None
    found = versions.get(version if version is not None else max(versions))
    return found[0] if found else None


def _writes(registry: Registry, entities: dict[str, _Entity]
            ) -> Iterator[tuple[Write, Document, tuple[Any, ...]]]:
    origins = _origins(registry)
    for flow, doc in registry.all("Flow"):
        assert isinstance(flow, Flow)
        steps = {s.id: s for s in flow.spec.steps}
        for index, step in enumerate(flow.spec.steps):
            override = step.authority.override if step.authority else None
            actions = [("call", step.id, step.call), ("compensate", f"{step.id}#compensate",
                                                      step.compensate)]
            for key, sid, call in actions:
                if call is None:
                    continue
                shadow = [step.shadow.system] if step.shadow and key == "call" else []
                for target in dict.fromkeys([*_targets(call), *shadow]):
                    entity = _entity_of(registry, target, call.operation, entities)
                    if entity is None:
                        continue
                    fields = _written(call.body, steps, registry)
                    where = "body" if call.body is not None else "system"
                    yield (Write(flow.ident, sid, split_ref(target)[0], call.operation, entity,
                                 fields, origins.get(flow.name, ()), override),
                           doc, ("spec", "steps", index, key, where))


def _targets(call: m.CallSpec) -> list[str]:
    """The Systems a call may go to (every case of a routed one)."""
    if isinstance(call.system, m.RouteSpec):
        route = call.system
        default = [route.default] if route.default else []
        return list(dict.fromkeys([*route.cases.values(), *default]))
    return [call.system]


def _entity_of(registry: Registry, ref: str, operation_name: str,
               entities: dict[str, _Entity]) -> str | None:
    system = _silent(registry, "System", ref)
    operation = system.spec.operations.get(operation_name) if system else None
    if operation is None or not operation.is_write or not operation.schema_:
        return None
    schema = _silent(registry, "Schema", operation.schema_)
    return schema.ident if schema is not None and schema.ident in entities else None


def _origins(registry: Registry) -> dict[str, tuple[str, ...]]:
    """Flow name -> the Systems whose changes trigger it, through events flows emit."""
    found: dict[str, set[str]] = {}
    listens: dict[str, set[str]] = {}      # event type -> flows it triggers
    emitters: dict[str, set[str]] = {}     # event type -> flows that emit it
    for flow, _ in registry.all("Flow"):
        assert isinstance(flow, Flow)
        trigger = flow.spec.trigger
        found.setdefault(flow.name, set())
        if trigger.webhook is not None:
            found[flow.name].add(split_ref(trigger.webhook.system)[0])
        if trigger.event:
            listens.setdefault(trigger.event, set()).add(flow.name)
        for step in flow.spec.steps:
            if step.emit is not None:
                emitters.setdefault(step.emit.type, set()).add(flow.name)
    changed = True
    while changed:
        changed = False
        for event, targets in listens.items():
            sources = set().union(*(found[e] for e in emitters.get(event, ())))
            for target in targets:
                if not sources <= found[target]:
                    found[target] |= sources
                    changed = True
    return {name: tuple(sorted(systems)) for name, systems in found.items()}


# which fields a body sets -----------------------------------------------------------------------

def _written(body: Any, steps: dict[str, m.Step], registry: Registry) -> tuple[str, ...] | None:
    if body is None:
        return ()
    if isinstance(body, m.MapValue):
        return _mapping_fields(registry, body.map)
    if isinstance(body, m.ConstValue):
        return tuple(_paths(body.const)) if isinstance(body.const, dict) else None
    if isinstance(body, str):
        try:
            node = jmespath.compile(body).parsed
        except JMESPathError:
            return None   # reported as E_JMESPATH by the flow compiler
        if node["type"] == "multi_select_dict":
            return tuple(_multiselect_paths(node))
        step = _whole_step(node)
        source = steps.get(step) if step else None
        if source is not None and source.map is not None:
            return _mapping_fields(registry, source.map)
    return None


def _mapping_fields(registry: Registry, ref: str) -> tuple[str, ...] | None:
    mapping = _silent(registry, "Mapping", ref)
    return tuple(sorted(mapping.spec.fields)) if isinstance(mapping, Mapping) else None


def _whole_step(node: dict[str, Any]) -> str | None:
    """`steps.<id>` (the whole output of a step) -> id."""
    children = node.get("children", [])
    if node["type"] == "subexpression" and len(children) == 2 and all(
            c["type"] == "field" for c in children) and children[0]["value"] == "steps":
        return str(children[1]["value"])
    return None


def _multiselect_paths(node: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for pair in node["children"]:
        path = prefix + pair["value"]
        value = pair["children"][0]
        if value["type"] == "multi_select_dict":
            yield from _multiselect_paths(value, path + ".")
        else:
            yield path


def _paths(value: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, item in value.items():
        if isinstance(item, dict) and item:
            yield from _paths(item, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"
