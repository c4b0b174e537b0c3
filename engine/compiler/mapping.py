"""Compile Schemas (JSON Schema validators) and Mappings (one generated function each)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jsonschema_rs

from engine.compiler.codegen import MISSING, FieldRule, compile_rules
from engine.compiler.compiled import CompiledMapping, CompiledSchema
from engine.compiler.expressions import compile_expression
from engine.compiler.fields import Shape, deref, schema_at, unknown_field
from engine.compiler.records import mapping_test_record
from engine.compiler.refs import FieldPath, path_offset
from engine.compiler.resolve import Registry
from engine.compiler.templates import compile_template
from engine.errors import ExpressionSyntaxError
from engine.loader import Document
from engine.model.base import suggest
from engine.model.mapping import FieldRuleSpec, Mapping
from engine.model.schema import Schema
from engine.source import Diagnostic

Report = Callable[[Diagnostic], None]


def compile_schema(schema: Schema, doc: Document, report: Report) -> CompiledSchema | None:
    """Check the JSON Schema against the 2020-12 meta-schema and build its validator once."""
    body = schema.spec.json_schema
    where = doc.locate(("spec", "jsonSchema"))
    try:
        jsonschema_rs.meta.validate(body)
        validator = jsonschema_rs.Draft202012Validator(body)
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError) as exc:
        message = str(getattr(exc, "message", exc)).splitlines()[0]
        path = "/".join(str(p) for p in getattr(exc, "instance_path", []))
        at = f" at '{path}'" if path else ""
        report(Diagnostic(where, "E_JSONSCHEMA", f"invalid JSON Schema{at}: {message}"))
        return None
    return CompiledSchema(schema.name, schema.version, schema.spec.owner, schema.spec.key, body,
                          validator, doc.locate())


def compile_mapping(
    mapping: Mapping,
    doc: Document,
    registry: Registry,
    schemas: dict[tuple[str, int], CompiledSchema],
    report: Report,
) -> CompiledMapping | None:
    spec = mapping.spec
    source = _schema_ref(spec.source, "source", doc, registry, schemas)
    target = _schema_ref(spec.target, "target", doc, registry, schemas)
    rules: list[FieldRule] = []
    ok = True
    for target_path, raw in spec.fields.items():
        rule = raw if isinstance(raw, FieldRuleSpec) else FieldRuleSpec(expr=raw)
        built = _field_rule(target_path, rule, raw, mapping, doc, target, report)
        ok = ok and built is not None
        if built is not None:
            rules.append(built)
    if not ok or (spec.source and source is None) or (spec.target and target is None):
        return None
    if source is not None:
        _check_reads(spec.fields, source, doc, report)  # errors, but the mapping stays usable
    transform = compile_rules(mapping.ident, rules)
    return CompiledMapping(mapping.name, mapping.version, source, target, transform,
                           tuple(mapping_test_record(t) for t in spec.tests), doc.locate(),
                           tuple(spec.fields), reads=_reads(spec.fields),
                           test_locations=tuple(doc.locate(("spec", "tests", i))
                                                for i in range(len(spec.tests))))


def _reads(fields: dict[str, str | FieldRuleSpec]) -> frozenset[FieldPath] | None:
    """The input paths the rules read (prefixes included); None when one reads it whole."""
    found: set[FieldPath] = set()
    for raw in fields.values():
        rule = raw if isinstance(raw, FieldRuleSpec) else FieldRuleSpec(expr=raw)
        if rule.expr is not None:
            if rule.expr.strip() == "@":
                return None
            found |= compile_expression(rule.expr).paths
        elif rule.template is not None:
            template = compile_template(rule.template)
            if "source" in template.whole:
                return None
            found |= {p[1:] for p in template.paths if p[:1] == ("source",) and len(p) > 1}
    return frozenset(found)


def _check_reads(fields: dict[str, str | FieldRuleSpec], source: CompiledSchema, doc: Document,
                 report: Report) -> None:
    """E_FIELD for a rule reading a field the source Schema says its input cannot have."""
    shape = Shape(source.json_schema, source.json_schema)
    for target_path, raw in fields.items():
        rule = raw if isinstance(raw, FieldRuleSpec) else FieldRuleSpec(expr=raw)
        loc: tuple[str, ...] = ("spec", "fields", target_path)
        if rule.expr is not None:
            text, paths = rule.expr, compile_expression(rule.expr).paths
            loc = (*loc, "expr") if isinstance(raw, FieldRuleSpec) else loc
        elif rule.template is not None:
            text, loc = rule.template, (*loc, "template")
            paths = frozenset(p[1:] for p in compile_template(rule.template).paths
                              if p[:1] == ("source",))
        else:
            continue
        for path in sorted(paths, key=len):
            found = unknown_field(shape, path)
            if found is None:
                continue
            name = str(path[found[0]])
            where = doc.locate_in(loc, path_offset(text, path[:found[0] + 1]))
            report(Diagnostic(where, "E_FIELD", f"the source Schema '{source.name}@"
                              f"{source.version}' has no field '{name}'{suggest(name, found[1])}"
                              ", so this is always null"))
            break


def _schema_ref(ref: str | None, field: str, doc: Document, registry: Registry,
                schemas: dict[tuple[str, int], CompiledSchema]) -> CompiledSchema | None:
    if ref is None:
        return None
    found = registry.lookup("Schema", ref, doc.locate(("spec", field)), f"mapping {field}")
    return schemas.get((found.name, found.version)) if found is not None else None


def _field_rule(path: str, rule: FieldRuleSpec, raw: str | FieldRuleSpec, mapping: Mapping,
                doc: Document,
                target: CompiledSchema | None, report: Report) -> FieldRule | None:
    loc = ("spec", "fields", path)
    where = doc.locate(loc)
    parts = tuple(path.split("."))
    lookup = None
    if rule.lookup is not None:
        lookup = mapping.spec.lookups.get(rule.lookup)
        if lookup is None:
            report(Diagnostic(where, "E_REF", f"field '{path}' uses unknown lookup '{rule.lookup}'"
                              f" (lookups: {', '.join(sorted(mapping.spec.lookups)) or 'none'})"))
            return None
    field_type, required_by_schema = MISSING, False
    if target is not None:
        found = _target_field(target.json_schema, parts)
        if found is None:
            report(Diagnostic(where, "E_TARGET", f"target field '{path}' does not exist in "
                              f"schema '{target.name}@{target.version}'"
                              f"{_nearest_field(target.json_schema, parts)}"))
            return None
        field_type, required_by_schema = found
    if rule.expr is not None:
        kind, source = "expr", rule.expr
        at = (*loc, "expr") if isinstance(raw, FieldRuleSpec) else loc
        if not _check(lambda: compile_expression(rule.expr or ""), doc, at, report):
            return None
    elif rule.template is not None:
        kind, source = "template", rule.template
        check = functools.partial(compile_template, rule.template, native=field_type != "string")
        if not _check(check, doc, (*loc, "template"), report):
            return None
    else:
        kind, source = "const", rule.const
    return FieldRule(
        target=parts, kind=kind, source=source,
        default=rule.default if "default" in rule.model_fields_set else MISSING,
        lookup=lookup, required=rule.required or required_by_schema,
        native=field_type != "string",
    )


def _check(build: Callable[[], Any], doc: Document, loc: tuple[str, ...], report: Report) -> bool:
    try:
        build()
    except ExpressionSyntaxError as exc:
        kind = "JMESPath" if exc.code == "E_JMESPATH" else "template"
        report(exc.at(doc.locate_in(loc, exc.offset), f"invalid {kind}: {exc.message}"))
        return False
    return True


def _target_field(schema: Any, parts: tuple[str, ...]) -> tuple[Any, bool] | None:
    """(declared type, required by its parent) of a dotted path, or None if it cannot exist.

    An object level without `properties` accepts any field (it is free-form)."""
    node, required, root = schema, False, schema
    for part in parts:
        node = deref(node, root)
        properties = node.get("properties") if isinstance(node, dict) else None
        if properties is None:
            return MISSING, False
        if part not in properties:
            return None
        required = part in node.get("required", [])
        node = properties[part]
    node = deref(node, root)
    return (node.get("type", MISSING) if isinstance(node, dict) else MISSING), required


def _nearest_field(schema: Any, parts: tuple[str, ...]) -> str:
    """' (did you mean 'a.b'?)' naming the nearest path the schema declares, or ''."""
    for k, part in enumerate(parts):
        properties = schema_at(schema, parts[:k]).get("properties", {})
        if part not in properties:
            prefix = parts[:k]
            return suggest(".".join(parts), [".".join((*prefix, n)) for n in properties])
    return ""
