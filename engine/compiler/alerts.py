"""Compile Alert definitions: the condition checked against the plan (flows, reason codes,
metrics and their objectives, Systems; located errors with suggestions) and the notify call's
System, operation and values compiled once (JMESPath expressions, templates or constants over
the alert's context).

What a condition may name: flows by name or glob (a glob must match one); reason codes a flow
can park with (its validate rules and park steps, the runtime's own codes, `HTTP_<status>`);
a gauge or counter Metric for `metric`, a duration Metric with an objective for `objective`; a
System (or `*`) for `circuit`.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.compiler.calls import PLACEHOLDER
from engine.compiler.compiled import (
    CompiledFlow,
    CompiledRetry,
    CompiledSystem,
    ConstValue,
    ExprValue,
    ParkAction,
    TemplateValue,
    ValidateAction,
    Value,
)
from engine.compiler.expressions import compile_expression
from engine.compiler.metrics import CompiledMetric, root_fields
from engine.compiler.resolve import Registry
from engine.compiler.templates import compile_template
from engine.errors import ExpressionSyntaxError
from engine.loader import Document
from engine.model import flow as m
from engine.model.alert import Alert, Notify
from engine.model.base import suggest
from engine.source import Diagnostic, SourceLocation

Loc = tuple[Any, ...]
Report = Callable[[Diagnostic], None]
CONTEXT = ("alert", "subject", "run", "runs", "count", "reason", "metric", "system", "env")
# Reason codes the runtime itself parks or fails runs with (engine/runtime/steps.py, executor)
RUNTIME_CODES = frozenset({
    "CALL_FAILED", "CALL_TIMEOUT", "CALL_NETWORK", "MAPPING_FAILED", "EXPRESSION_FAILED",
    "STEP_FAILED", "RETRIES_EXHAUSTED", "INTERNAL_ERROR", "EVENT_MISSING", "CANCELLED",
})
HTTP_CODE = re.compile(r"^HTTP_[1-5][0-9][0-9]$")


@dataclass(frozen=True)
class CompiledNotify:
    """The notification call, its values compiled over the alert's context."""

    system: CompiledSystem
    operation: str
    method: str
    path: str
    params: tuple[tuple[str, Value], ...]
    query: tuple[tuple[str, Value], ...]
    headers: tuple[tuple[str, Value], ...]
    body: Value | None
    is_write: bool
    retry: CompiledRetry | None  # the System's RetryPolicy, else the project default


@dataclass(frozen=True)
class CompiledAlert:
    """One Alert: what it watches (`kind` and its fields) and how it tells."""

    name: str
    owner: str | None
    kind: Literal["parked", "metric", "objective", "circuit"]
    notify: CompiledNotify
    repeat: float                          # seconds: one notification per subject per repeat
    hold: float = 0.0                      # seconds the condition must hold before it fires
    flows: tuple[str, ...] = ()            # parked: the flows (globs expanded)
    reasons: frozenset[str] = frozenset()  # parked: reason codes (empty: any)
    per: str = "alert"                     # parked: a subject per alert, flow, reason or run
    metric: str | None = None              # metric, objective
    above: float | None = None             # metric: fires above this ...
    below: float | None = None             # ... or below this
    labels: tuple[tuple[str, str], ...] = ()  # metric: the series it sums
    system: str | None = None              # circuit: the System ("*": any)
    location: SourceLocation | None = field(default=None, compare=False)

    def describe(self) -> str:
        """The condition in words (the API and the console show it)."""
        if self.kind == "parked":
            reasons = ", ".join(sorted(self.reasons)) or "any reason"
            wait = f" for {self.hold:g}s" if self.hold else ""
            return f"runs of {', '.join(self.flows)} parked{wait} ({reasons})"
        if self.kind == "metric":
            side = f"above {self.above:g}" if self.above is not None else f"below {self.below:g}"
            return f"metric {self.metric} {side} for {self.hold:g}s"
        if self.kind == "objective":
            return f"the objective of {self.metric} missed for {self.hold:g}s"
        return f"the circuit of {'any System' if self.system == '*' else self.system} open"


def compile_alerts(registry: Registry, flows: Mapping[str, CompiledFlow],
                   metrics: Mapping[str, CompiledMetric],
                   systems: Mapping[tuple[str, int], CompiledSystem],
                   default_retry: CompiledRetry | None, report: Report) -> dict[str, CompiledAlert]:
    """The active version of every Alert, checked against the plan."""
    compiled = {}
    for name in sorted({resource.name for resource, _ in registry.all("Alert")}):
        found = registry.active("Alert", name)
        if found is None:
            continue
        resource, doc = found
        assert isinstance(resource, Alert)
        alert = _AlertCompiler(resource, doc, registry, report).compile(
            flows, metrics, systems, default_retry)
        if alert is not None:
            compiled[name] = alert
    return compiled


class _AlertCompiler:
    def __init__(self, alert: Alert, doc: Document, registry: Registry, report: Report) -> None:
        self.alert, self.doc, self.registry = alert, doc, registry
        self._report = report
        self.ok = True

    def error(self, path: Loc, message: str, code: str = "E_ALERT") -> None:
        self.ok = False
        self._report(Diagnostic(self.doc.locate(("spec", *path)), code, message))

    def compile(self, flows: Mapping[str, CompiledFlow], metrics: Mapping[str, CompiledMetric],
                systems: Mapping[tuple[str, int], CompiledSystem],
                default_retry: CompiledRetry | None) -> CompiledAlert | None:
        spec = self.alert.spec
        when = spec.when
        fields: dict[str, Any] = {}
        if when.parked is not None:
            chosen = self._flows(when.parked.flows, flows)
            fields = dict(kind="parked", flows=chosen, hold=when.parked.for_, per=when.parked.per,
                          reasons=self._reasons(when.parked.reasons, [flows[f] for f in chosen
                                                                      if f in flows]))
        elif when.metric is not None:
            cond = when.metric
            self._metric(cond.name, metrics, ("when", "metric", "name"), objective=False,
                         labels=cond.labels)
            fields = dict(kind="metric", metric=cond.name, above=cond.above, below=cond.below,
                          hold=cond.for_, labels=tuple(sorted(cond.labels.items())))
        elif when.objective is not None:
            self._metric(when.objective.metric, metrics, ("when", "objective", "metric"),
                         objective=True)
            fields = dict(kind="objective", metric=when.objective.metric,
                          hold=when.objective.for_)
        else:
            assert when.circuit is not None
            fields = dict(kind="circuit", system=self._circuit(when.circuit.system, systems))
        notify = self._notify(spec.notify, systems, default_retry)
        if not self.ok or notify is None:
            return None
        return CompiledAlert(name=self.alert.name, owner=self.alert.metadata.owner,
                             notify=notify, repeat=spec.repeat, location=self.doc.locate(),
                             **fields)

    # conditions --------------------------------------------------------------------------
    def _flows(self, patterns: Sequence[str], flows: Mapping[str, CompiledFlow]) -> tuple[str, ...]:
        chosen: list[str] = []
        for i, pattern in enumerate(patterns):
            matched = sorted(fnmatch.filter(flows, pattern))
            if not matched:
                what = "matches no flow" if any(c in pattern for c in "*?[") else "is no flow"
                self.error(("when", "parked", "flows", i), f"'{pattern}' {what}"
                           f"{suggest(pattern, sorted(flows))}", "E_REF")
            chosen += [f for f in matched if f not in chosen]
        return tuple(chosen)

    def _reasons(self, reasons: Sequence[str], flows: Iterable[CompiledFlow]) -> frozenset[str]:
        known = set(RUNTIME_CODES)
        for flow in flows:
            known |= flow_reason_codes(flow)
        for i, code in enumerate(reasons):
            if code not in known and not HTTP_CODE.match(code):
                self.error(("when", "parked", "reasons", i), f"no flow it watches parks with "
                           f"reason code '{code}'{suggest(code, sorted(known))}", "E_REF")
        return frozenset(reasons)

    def _metric(self, name: str, metrics: Mapping[str, CompiledMetric], where: Loc, *,
                objective: bool, labels: Mapping[str, str] | None = None) -> None:
        metric = metrics.get(name)
        if metric is None:
            self.error(where, f"unknown metric '{name}'{suggest(name, sorted(metrics))}", "E_REF")
        elif objective and metric.objective is None:
            self.error(where, f"metric '{name}' has no objective (an objective is a duration "
                       "metric's `objective: {percentile, under}`)")
        elif not objective and metric.kind == "duration":
            self.error(where, f"metric '{name}' is a duration: alert on its objective with "
                       f"`objective: {{metric: {name}}}`")
        elif labels:
            names = [label for label, _ in metric.labels]
            for label in labels:
                if label not in names:
                    self.error((*where[:-1], "labels", label), f"metric '{name}' has no label "
                               f"'{label}'{suggest(label, names)}", "E_REF")

    def _circuit(self, name: str, systems: Mapping[tuple[str, int], CompiledSystem]) -> str:
        names = sorted({n for n, _ in systems})
        if name != "*" and name not in names:
            self.error(("when", "circuit", "system"), f"unknown system '{name}'"
                       f"{suggest(name, names)}", "E_REF")
        elif name != "*" and all(s.circuit_breaker is None for (n, _), s in systems.items()
                                 if n == name):
            self._report(Diagnostic(self.doc.locate(("spec", "when", "circuit", "system")),
                                    "W_ALERT", f"system '{name}' has no circuitBreaker: its "
                                    "circuit never opens", "warning"))
        return name

    # the notification --------------------------------------------------------------------
    def _notify(self, spec: Notify, systems: Mapping[tuple[str, int], CompiledSystem],
                default_retry: CompiledRetry | None) -> CompiledNotify | None:
        loc: Loc = ("notify",)
        values = [self._values(getattr(spec, part), (*loc, part))
                  for part in ("params", "query", "headers")]
        body = self._value(spec.body, (*loc, "body")) if spec.body is not None else None
        found = self.registry.lookup("System", spec.system,
                                     self.doc.locate(("spec", *loc, "system")), "alert")
        system = systems.get((found.name, found.version)) if found else None
        if system is None:
            self.ok = False
            return None
        operation = system.operations.get(spec.operation)
        if operation is None:
            self.error((*loc, "operation"), f"system '{system.name}' has no operation "
                       f"'{spec.operation}'{suggest(spec.operation, sorted(system.operations))}",
                       "E_REF")
            return None
        missing = [p for p in PLACEHOLDER.findall(operation.path) if p not in spec.params]
        if missing:
            self.error((*loc, "params"), f"operation '{spec.operation}' path "
                       f"'{operation.path}' needs params: {', '.join(missing)}", "E_REF")
            return None
        params, query, headers = values
        return CompiledNotify(system, spec.operation, operation.method, operation.path, params,
                              query, headers, body, operation.is_write,
                              system.retry or default_retry)

    def _values(self, raw: Mapping[str, Any], loc: Loc) -> tuple[tuple[str, Value], ...]:
        out = []
        for key, value in raw.items():
            compiled = self._value(value, (*loc, key))
            if compiled is not None:
                out.append((key, compiled))
        return tuple(out)

    def _value(self, raw: Any, loc: Loc) -> Value | None:
        if isinstance(raw, m.ConstValue):
            return ConstValue(raw.const)
        if isinstance(raw, m.MapValue):
            self.error(loc, "an alert's values are JMESPath expressions, {template: ...} or "
                       "{const: ...}; a {map: ...} needs a run's data")
            return None
        if isinstance(raw, m.TemplateValue):
            try:
                template = compile_template(raw.template)
            except ExpressionSyntaxError as exc:
                self.error((*loc, "template"), f"invalid template: {exc.message}",
                           "E_TEMPLATE")
                return None
            roots = {str(path[0]) for path in template.paths if path}
            self._check_roots(roots, (*loc, "template"))
            return TemplateValue(template, frozenset())
        try:
            expression = compile_expression(raw)
        except ExpressionSyntaxError as exc:
            self.ok = False
            where = self.doc.locate_in(("spec", *loc), exc.offset)
            self._report(exc.at(where, f"invalid JMESPath '{raw}': {exc.message}"))
            return None
        self._check_roots(root_fields(expression.ast), loc)
        return ExprValue(expression, frozenset())

    def _check_roots(self, roots: Iterable[str], loc: Loc) -> None:
        extra = sorted(set(roots) - set(CONTEXT))
        if extra:
            self.error(loc, f"'{extra[0]}' is not in an alert's context"
                       f"{suggest(extra[0], list(CONTEXT))} (it has {', '.join(CONTEXT)})",
                       "E_REF")


def flow_reason_codes(flow: CompiledFlow) -> set[str]:
    """The reason codes a flow's own steps can park with (validate rules, park steps)."""
    codes: set[str] = set()
    for step in flow.steps:
        action = step.action
        if isinstance(action, ValidateAction):
            codes.add(action.code)
            codes.update(rule.code for rule in action.rules)
        elif isinstance(action, ParkAction):
            codes.add(action.code)
    return codes
