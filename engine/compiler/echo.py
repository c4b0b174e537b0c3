"""Echo suppression compiled: the records a System's writes fingerprint, the record a webhook
delivery is about, and which of its fields the flows it triggers read.

A System with `echo: {window}` fingerprints every call into an operation that declares
`record: {type, id}` (`system_echo` compiles them into `RecordWrite`s). A webhook trigger with
`record: {type, id, fields, changed}` (`trigger_echo`) names the record a delivery is about; its
type must be one the System writes. `attach_echo_reads` then works out, once per plan, the fields
of that record the triggered flows read (`EchoCheck.reads`, relative to `fields`): every
expression, template and mapping rule of the webhook flow, and of the flows its emitted events
trigger, followed through an emit whose data is a field path or a `{key: path}` hash. A path
read whole (`emit data: data` into a flow that maps it with a template reading `source` whole, a
value that is not a path) reads every field: `reads` is None and every field counts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from engine.compiler.compiled import (
    CallAction,
    CompiledFlow,
    EchoCheck,
    EmitAction,
    ExprValue,
    MapAction,
    MapValue,
    RecordWrite,
    SetAction,
    TemplateValue,
    ValidateAction,
    Value,
)
from engine.compiler.expressions import Expression, compile_expression
from engine.compiler.refs import ITEM, FieldPath
from engine.errors import ExpressionSyntaxError
from engine.loader import Document
from engine.model import flow as m
from engine.model.base import suggest
from engine.model.system import System
from engine.source import Diagnostic

if TYPE_CHECKING:
    from engine.compiler.compiled import CompiledSchema, CompiledSystem
    from engine.compiler.flow import FlowCompiler

__all__ = ["attach_echo_reads", "check_test_writes", "numeric_fields", "system_echo",
           "trigger_echo"]

MAX_DEPTH = 8  # emit -> flow -> emit ... followed this deep; deeper counts as reading everything
_Shape = Any   # FieldPath (the value is that path) | dict[str, _Shape] (a hash of them) | None


WRITE_VIEW = ("params", "query", "body", "response")  # what a record's expressions see


def system_echo(system: System, doc: Document, schemas: Mapping[str, CompiledSchema],
                report: Any) -> tuple[float | None, dict[str, RecordWrite]]:
    """The System's echo window and the records its write operations declare (errors: a record
    on a read, an expression that does not compile or reads what a write has not, `echo` on a
    System none of whose writes has one)."""
    spec, records = system.spec, {}
    for name, operation in spec.operations.items():
        if operation.record is None:
            continue
        loc = ("spec", "operations", name, "record")
        if not operation.is_write:
            report(Diagnostic(doc.locate(loc), "E_ECHO", f"operation '{name}' reads "
                              f"({operation.method}); only a write has a record to fingerprint"))
            continue
        ident = _write_expression(operation.record.id, (*loc, "id"), doc, report)
        fields = _write_expression(operation.record.fields, (*loc, "fields"), doc, report)
        if ident is None or fields is None:
            continue
        schema = schemas.get(operation.schema_) if operation.schema_ else None
        numeric = numeric_fields(schema.json_schema) if schema is not None else frozenset()
        creates = _reads_answer(ident)
        records[name] = RecordWrite(
            operation.record.type, ident, None if fields.text == "body" else fields, numeric,
            creates=creates, from_answer=creates or _reads_answer(fields))
    if spec.echo is not None and not records:
        report(Diagnostic(doc.locate(("spec", "echo")), "E_ECHO", f"system '{system.name}' sets "
                          "echo but none of its write operations declares record: {type, id}, "
                          "so no write leaves a fingerprint"))
    return (spec.echo.window if spec.echo is not None else None), records


def _write_expression(text: str, loc: tuple[str, ...], doc: Document,
                      report: Any) -> Expression | None:
    """A record expression over the write `{params, query, body, response}`."""
    try:
        expression = compile_expression(text)
    except ExpressionSyntaxError as exc:
        report(Diagnostic(doc.locate(loc), exc.code, f"invalid JMESPath '{text}': {exc.message}"))
        return None
    roots = sorted({str(p[0]) for p in expression.paths if p and p[0] not in WRITE_VIEW})
    if roots:
        report(Diagnostic(doc.locate(loc), "E_ECHO", f"'{text}' reads '{roots[0]}', which a "
                          f"write does not have (it sees {', '.join(WRITE_VIEW)})"))
        return None
    return expression


def _reads_answer(expression: Expression) -> bool:
    """Whether an expression over a write reads its `response` (then it waits for the answer)."""
    return any(path[:1] == ("response",) for path in expression.paths)


def trigger_echo(fc: FlowCompiler, spec: m.TriggerRecord,
                 system: CompiledSystem | None) -> EchoCheck | None:
    """A webhook trigger's `record:`, checked against the System that sends the deliveries."""
    loc = ("trigger", "webhook", "record")
    ident = fc.expr(spec.id, (*loc, "id"))
    fields = fc.expr(spec.fields, (*loc, "fields"))
    changed = fc.expr(spec.changed, (*loc, "changed")) if spec.changed else None
    if system is None:
        return None
    if system.echo_window is None:
        fc.error(loc, "E_ECHO", f"system '{system.name}' has no echo: {{window: ...}}, so none "
                 "of its writes is fingerprinted and no delivery can be recognised as an echo")
        return None
    types = sorted({r.type for r in system.records.values()})
    if spec.type not in types:
        hint = suggest(spec.type, types) or (f" (it writes: {', '.join(types)})" if types else "")
        fc.error((*loc, "type"), "E_ECHO", f"system '{system.name}' has no write operation with "
                 f"record type '{spec.type}'{hint}")
        return None
    if ident is None or fields is None or (spec.changed and changed is None):
        return None
    numeric = frozenset().union(*(r.numeric for r in system.records.values()
                                  if r.type == spec.type))
    return EchoCheck(system.name, spec.type, ident, fields, changed, None, numeric)


def check_test_writes(fc: FlowCompiler, tests: list[m.FlowTest]) -> None:
    """A flow test's `written:` names a System and one of its operations with a `record`."""
    for i, test in enumerate(tests):
        for j, write in enumerate(test.written):
            loc = ("tests", i, "written", j)
            system = fc.system(write.system, (*loc, "system"))
            if system is None:
                continue
            if write.operation not in system.records:
                declared = sorted(system.records)
                hint = suggest(write.operation, declared) or (
                    f" (these do: {', '.join(declared)})" if declared else "")
                fc.error((*loc, "operation"), "E_ECHO", f"test '{test.name}': operation "
                         f"'{write.operation}' of system '{system.name}' declares no record, so "
                         f"its write leaves no fingerprint{hint}")


def numeric_fields(schema: Mapping[str, Any], prefix: str = "") -> frozenset[str]:
    """The dotted paths a JSON Schema types as number or integer (objects followed)."""
    found: set[str] = set()
    for name, sub in (schema.get("properties") or {}).items():
        if not isinstance(sub, Mapping):
            continue
        path = f"{prefix}{name}"
        kinds = sub.get("type")
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if "number" in kinds or "integer" in kinds:
            found.add(path)
        if "object" in kinds or "properties" in sub:
            found |= numeric_fields(sub, path + ".")
    return frozenset(found)


# -- which fields the triggered flows read ---------------------------------------------------

class _Everything(Exception):
    """A flow reads the record whole (or the analysis cannot tell)."""


def attach_echo_reads(flows: dict[str, CompiledFlow],
                      subscriptions: Mapping[str, tuple[CompiledFlow, ...]]) -> None:
    """Fill in `EchoCheck.reads` of every webhook flow with a record (in place in `flows`)."""
    for name, flow in list(flows.items()):
        echo = flow.trigger.echo
        if echo is None:
            continue
        root = _plain_path(echo.fields)
        reads: frozenset[FieldPath] | None = None
        if root is not None:
            try:
                found = _flow_reads(flow, ("data",), subscriptions, 0)
                reads = frozenset(_relative(found, root))
            except _Everything:
                reads = None
        trigger = dataclasses.replace(flow.trigger, echo=dataclasses.replace(echo, reads=reads))
        flows[name] = dataclasses.replace(flow, trigger=trigger)


def _relative(paths: Iterable[FieldPath], root: FieldPath) -> Iterator[FieldPath]:
    """Each read path as a path inside the record at `root`; a read of an ancestor of the
    record (or of the record itself) reads all of it."""
    for path in paths:
        if path[: len(root)] == root:
            inside = path[len(root):]
            if not inside:
                raise _Everything
            yield inside
        elif root[: len(path)] == path:
            raise _Everything


def _flow_reads(flow: CompiledFlow, data: _Shape, subscriptions: Mapping[str, Any],
                depth: int) -> set[FieldPath]:
    """The paths of the delivery (`data` is what this flow's `data` stands for there) that the
    flow, and the flows its emits trigger, read."""
    if depth > MAX_DEPTH:
        raise _Everything
    found: set[FieldPath] = set()
    for expression in _expressions(flow):
        found |= _through(_leaves(expression.paths), data)
    for step in flow.steps:
        action = step.action
        if isinstance(action, EmitAction):
            shape = _emit_shape(action.data, data, found)
            for target in subscriptions.get(action.type, ()):
                found |= _flow_reads(target, shape, subscriptions, depth + 1)
        for value in _values(step):
            found |= _value_reads(value, data)
    return found


def _expressions(flow: CompiledFlow) -> Iterator[Expression]:
    """Every expression of the flow evaluated against its context (values aside)."""
    for expression in (flow.filter, flow.idempotency_key, flow.ordering_key, flow.output):
        if expression is not None:
            yield expression
    for step in flow.steps:
        if step.when is not None:
            yield step.when
        action = step.action
        if isinstance(action, ValidateAction):
            if action.schema is not None:  # validating against a Schema reads all of it
                yield action.input
            yield from (rule.check for rule in action.rules)
        elif isinstance(action, EmitAction) and action.subject is not None:
            yield action.subject


def _values(step: Any) -> Iterator[Value]:
    """Every value a step evaluates (call params, query, headers, body; set values)."""
    action = step.action
    calls = [c for c in (action if isinstance(action, CallAction) else None, step.compensate)
             if c is not None]
    for call in calls:
        for case in (call, *(call.route.cases.values() if call.route else ())):
            yield from case.params.values()
            yield from case.query.values()
            yield from case.headers.values()
            if case.body is not None:
                yield case.body
    if isinstance(action, SetAction):
        yield from action.values.values()
    if isinstance(action, MapAction):
        yield MapValue(action.mapping, action.input, frozenset())


def _value_reads(value: Value, data: _Shape) -> set[FieldPath]:
    if isinstance(value, ExprValue):
        return _through(_leaves(value.expression.paths), data)
    if isinstance(value, TemplateValue):
        whole = {("data",)} if "data" in value.template.whole else set()
        return _through(_leaves(value.template.paths) | whole, data)
    if isinstance(value, MapValue):
        base = _plain_path(value.input)
        if base is None:
            return _through(_leaves(value.input.paths), data)
        if value.mapping.reads is None:
            return _through({base}, data)  # the mapping reads its input whole
        return _through({(*base, *p) for p in _leaves(value.mapping.reads)}, data)
    return set()


def _emit_shape(value: Value, data: _Shape, found: set[FieldPath]) -> _Shape:
    """What the emitted event's `data` stands for, for the flows it triggers: a path or a hash
    of paths is followed into them; any other value reads what it reads here, whole."""
    if isinstance(value, ExprValue):
        shape = _shape(value.expression.ast)
        if shape is not None:
            return _compose(shape, data)
    found |= _value_reads(value, data)
    return None


def _shape(node: Any) -> _Shape:
    """A field chain as its path, a `{key: chain}` hash as a dict of them, else None."""
    if node["type"] == "field":
        return (str(node["value"]),)
    if node["type"] == "subexpression":
        parts = [_shape(child) for child in node["children"]]
        if all(isinstance(p, tuple) for p in parts):
            return tuple(x for p in parts for x in p)
        return None
    if node["type"] == "multi_select_dict":
        pairs = {pair["value"]: _shape(pair["children"][0]) for pair in node["children"]}
        return pairs if all(s is not None for s in pairs.values()) else None
    return None


def _compose(shape: _Shape, data: _Shape) -> _Shape:
    """`shape` (over this flow's context) in terms of the delivery."""
    if isinstance(shape, dict):
        return {key: _compose(sub, data) for key, sub in shape.items()}
    if shape[:1] != ("data",):
        return {}  # a step's output or the like: its reads were counted at its step
    return _resolve(shape, data)


def _resolve(path: FieldPath, data: _Shape) -> _Shape:
    """A context path rooted at `data` in terms of the delivery: a path, a hash of them, or
    None where `data` is a value whose reads were counted where it was made."""
    node, rest = data, path[1:]
    while isinstance(node, dict) and rest:
        node, rest = node.get(str(rest[0]), {}), rest[1:]
    if node is None or isinstance(node, dict):
        return node
    return (*node, *rest)


def _through(paths: Iterable[FieldPath], data: _Shape) -> set[FieldPath]:
    """Context paths rooted at `data`, as paths of the delivery."""
    found: set[FieldPath] = set()
    for path in paths:
        if path[:1] == ("data",):
            found |= _all_paths(_resolve(path, data))
    return found


def _all_paths(shape: _Shape) -> set[FieldPath]:
    if shape is None:
        return set()
    if isinstance(shape, tuple):
        return {shape}
    return {p for sub in shape.values() for p in _all_paths(sub)}


def _leaves(paths: frozenset[FieldPath]) -> set[FieldPath]:
    """The paths no other one extends (what is used), cut at the first index or projection."""
    cut = {path[: path.index(ITEM)] if ITEM in path else path for path in paths}
    return {p for p in cut if not any(len(q) > len(p) and q[: len(p)] == p for q in cut)}


def _plain_path(expression: Expression) -> FieldPath | None:
    shape = _shape(expression.ast)
    return shape if isinstance(shape, tuple) else None
