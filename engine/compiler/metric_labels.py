"""Metric labels that read a run's `data` or `steps`: checked against the flow's schemas, bounded
by rule, and compiled per flow into what the runtime resolves when a run's data or steps change.

A scrape never reads runs (engine/store/aggregates.py), so such a label cannot be evaluated at
scrape time the way `flow`, `state` and `reason` are (from the few aggregate rows). Instead the
runtime resolves it when the run is accepted, when a step the label reads (or the metric's
`beforeStep`) is written, and when an operator resumes the run with corrected data; the store
keeps the resolved values on the run and counts the run under them.

Rules, each a located compile error:

- a run label reads `data`, `steps` and `flow` only; `state`, `reason` and `action` change
  without the runtime resolving labels again (a worker claiming a run), so they go in labels of
  their own;
- `data.<path>` and `steps.<id>.<path>` must be fields the value can have (as E_FIELD checks a
  flow's own expressions), and `<id>` a step of the flow;
- a metric of every flow (`flow: "*"`) is checked against each flow: a field or step no flow
  has is an error, one only some flows have a warning (`W_METRIC`) naming the others, whose
  runs read '';
- a label must be bounded: not an object or an array by schema, and not a per-run identifier
  (a last field named `id`, `uuid`, `key`, `email` or ending in `Id`, `_id` or `ID`), whose
  values would all read `other` past the first 50.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from engine.compiler.compiled import CompiledFlow
from engine.compiler.expressions import Expression
from engine.compiler.fields import Shape, StepShapes, deref, input_shape, unknown_reads
from engine.compiler.refs import ITEM, FieldPath
from engine.errors import SynclineError
from engine.model.base import suggest

ROW_FIELDS = frozenset({"flow", "state", "reason", "action"})  # evaluated on aggregate rows
RUN_FIELDS = frozenset({"flow", "data", "steps"})               # resolved per run when written
_PER_RUN = re.compile(r"^(id|uuid|key|email)$|(Id|_id|ID)$")
Severity = Literal["error", "warning"]
RunLabels = tuple[tuple[str, tuple[str, ...]], ...]  # (label set, its values) as the store keeps


def label_value(expression: Expression, document: Mapping[str, Any]) -> str:
    """One label's value: a string as it is, null as '', anything else as JSON, `unknown` when
    the expression fails on this document."""
    try:
        value = expression.search(document)
    except SynclineError:
        return "unknown"
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def label_set(flows: frozenset[str] | None, before_step: str | None,
              expressions: tuple[Expression, ...]) -> str:
    """The name of what a metric's run labels depend on (its flows, beforeStep and run label
    expressions, in order): metrics alike share one set, resolved once per write and counted
    once by the store (one tally row per state change, however many metrics read it)."""
    signature = json.dumps([sorted(flows) if flows is not None else "*", before_step,
                            [e.text for e in expressions]], separators=(",", ":"))
    return hashlib.sha256(signature.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LabelSet:
    """Run labels resolved together: those of every metric with the same `label_set`."""

    name: str                        # its `label_set`, as the store keys the set's counts
    before_step: str | None          # a gauge's beforeStep: not counted once it is done
    expressions: tuple[Expression, ...]


@dataclass(frozen=True)
class FlowLabels:
    """What the runtime resolves for the runs of one flow."""

    sets: tuple[LabelSet, ...]
    reads: frozenset[str]            # steps whose record changes what `resolve` answers

    def resolve(self, flow: str, data: Any, outputs: Mapping[str, Any]) -> RunLabels:
        """The values of every label set that counts the run now (`outputs`: the outputs of
        the steps done, succeeded or skipped)."""
        document = {"flow": flow, "data": data, "steps": outputs}
        found = []  # loops, not generators: this runs on every write that resolves labels
        for s in self.sets:
            if s.before_step is None or s.before_step not in outputs:
                found.append((s.name, tuple([label_value(e, document) for e in s.expressions])))
        return tuple(found)


def flow_labels(metrics: Mapping[str, Any], flows: Mapping[str, CompiledFlow]
                ) -> dict[str, FlowLabels]:
    """flow name -> its FlowLabels, for the flows some metric with run labels counts."""
    found: dict[str, dict[str, LabelSet]] = {}
    for metric in metrics.values():
        if not metric.run_labels:
            continue
        run = LabelSet(metric.label_set, metric.before_step, metric.run_expressions)
        for flow in sorted(flows if metric.flows is None else metric.flows & flows.keys()):
            found.setdefault(flow, {}).setdefault(run.name, run)
    return {
        flow: FlowLabels(tuple(sets.values()), frozenset(
            {ref for s in sets.values() for e in s.expressions for ref in e.step_refs}
            | {s.before_step for s in sets.values() if s.before_step}))
        for flow, sets in found.items()
    }


def run_label_errors(expression: Expression, fields: set[str], flow: CompiledFlow | None
                     ) -> Iterator[tuple[str, str, FieldPath | None]]:
    """(code, message, the path it is about) for each reason a label reading data or steps cannot
    be one; `flow` is None for a metric of every flow (its schemas are not one)."""
    other = sorted(fields - RUN_FIELDS)
    if other:
        yield "E_METRIC", (
            f"reads '{other[0]}' and a run's data or steps: a label reading data or steps is "
            "resolved when they are written, so it may read flow, data and steps only (put "
            f"'{other[0]}' in a label of its own)"), None
        return
    paths = sorted(expression.paths, key=len)
    for path in paths:
        if _per_run(path, paths):
            yield "E_METRIC", (f"reads '{_dotted(path)}', a per-run identifier: its values "
                               "are not bounded (a label has at most 50 values, then 'other')"
                               ), path
            return
    if flow is None:
        return
    ids = [step.id for step in flow.steps]
    for step in sorted(expression.step_refs - set(ids)):
        yield "E_REF", (f"reads step '{step}', which flow '{flow.name}' does not have"
                        f"{suggest(step, ids)}"), ("steps", step)
        return
    for _, _, path, known in unknown_reads([((), expression)], flow.steps):
        name = str(path[-1])
        yield "E_FIELD", (f"reads {_dotted(path)}, but {_dotted(path[:-1])} has no field "
                          f"'{name}'{suggest(name, known)}: it would always be null"), path
        return
    kind = _kind(expression, flow)
    if kind in ("object", "array"):
        yield "E_METRIC", (f"is an {kind} by its schema: a label must be a bounded value "
                           "(a string, number or boolean)"), None


def every_flow_label_errors(expression: Expression, fields: set[str],
                            flows: Mapping[str, CompiledFlow]
                            ) -> Iterator[tuple[Severity, str, str, FieldPath | None]]:
    """(severity, code, message, the path it is about) for a label of a metric of every flow
    (`flow: "*"`): the rules that hold whatever the flow, then each flow's schemas and steps. A
    field or step no flow has, or one that is an object or array in some flow, is an error; one
    that only some flows have is a warning naming the others (their runs read '')."""
    for code, message, path in run_label_errors(expression, fields, None):
        yield "error", code, message, path
        return
    failing = {name: found for name in sorted(flows)
               if (found := next(run_label_errors(expression, fields, flows[name]), None))}
    unbounded = [(name, found) for name, found in failing.items() if found[0] == "E_METRIC"]
    if unbounded:
        name, (code, message, path) = unbounded[0]
        yield "error", code, f"{message} (in flow '{name}')", path
    elif failing and len(failing) == len(flows):
        code, message, path = next(iter(failing.values()))
        yield "error", code, f"{message}; no flow it counts has it", path
    elif failing:
        _, _, path = next(iter(failing.values()))
        names = ", ".join(f"'{name}'" for name in failing)
        what = _dotted(path) if path else "a field"
        flows_have = ("flow", "its") if len(failing) == 1 else ("flows", "their")
        yield "warning", "W_METRIC", (
            f"reads {what}, which {flows_have[0]} {names} cannot have (by {flows_have[1]} "
            f"steps and schemas): {flows_have[1]} runs read ''"), path


def _per_run(path: FieldPath, paths: list[FieldPath]) -> bool:
    """Whether `path` is a leaf read (no longer path extends it) of an identifier's field."""
    if len(path) < 2 or not isinstance(path[-1], str) or path[0] not in ("data", "steps"):
        return False
    if any(len(p) > len(path) and p[:len(path)] == path for p in paths):
        return False
    return bool(_PER_RUN.search(path[-1]))


def _kind(expression: Expression, flow: CompiledFlow) -> str | None:
    """The schema type of a label that is a plain path (`data.a.b`, `steps.x.y`), if known."""
    names = _names(expression.ast)
    if names is None:
        return None
    if names[0] == "data":
        shape, rest = input_shape(min(flow.steps, key=lambda s: s.index, default=None)), names[1:]
    elif names[0] == "steps" and len(names) > 1:
        shape, rest = StepShapes(flow.steps, None).get(names[1]), names[2:]
    else:
        return None
    node = _node(shape, rest) if shape is not None else None
    kind = node.get("type") if node is not None else None
    return kind if isinstance(kind, str) else None


def _names(ast: Mapping[str, Any]) -> list[str] | None:
    """The fields of a plain dotted path, or None for any other expression."""
    if ast["type"] == "field":
        return [str(ast["value"])]
    if ast["type"] != "subexpression":
        return None
    names: list[str] = []
    for child in ast["children"]:
        found = _names(child)
        if found is None:
            return None
        names += found
    return names


def _node(shape: Shape, names: list[str]) -> Mapping[str, Any] | None:
    node: Any = deref(shape.node, shape.root)
    for name in names:
        properties = node.get("properties") if isinstance(node, Mapping) else None
        if not isinstance(properties, Mapping) or name not in properties:
            return None
        node = deref(properties[name], shape.root)
    return node if isinstance(node, Mapping) else None


def _dotted(path: FieldPath) -> str:
    return "".join("[]" if p == ITEM else f".{p}" for p in path).lstrip(".")
