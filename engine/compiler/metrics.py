"""Compile Metric definitions: names checked against the flows, steps, states and event types of
the plan (located errors with suggestions), label expressions compiled, points resolved.

What a metric may read is what the store aggregates as runs change state (engine/store/
aggregates.py): runs by flow, state and reason, operator actions, completed steps named by a
`beforeStep`, and duration marks. A scrape reads those aggregates, never the runs: a label that
reads `flow`, `state`, `reason` (`code`, `step`) or `action` is evaluated on the aggregate rows;
one that reads a run's `data` or `steps` is resolved by the runtime when they are written and
kept with the run (engine/compiler/metric_labels.py says how, and what makes it a bad label).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.compiler.compiled import CompiledFlow
from engine.compiler.expressions import Expression, compile_expression
from engine.compiler.metric_labels import (
    ROW_FIELDS,
    RUN_FIELDS,
    every_flow_label_errors,
    label_set,
    run_label_errors,
)
from engine.compiler.refs import path_offset
from engine.compiler.resolve import Registry
from engine.errors import ExpressionSyntaxError
from engine.loader import Document
from engine.model.base import suggest
from engine.model.metric import Metric, Point
from engine.source import Diagnostic

# A run's states (SPEC section 4); `failed` is the executor's own end state.
RUN_STATES = ("pending", "running", "waiting", "succeeded", "filtered", "parked",
              "dead-lettered", "compensated", "cancelled", "failed")
LABEL_FIELDS = ROW_FIELDS | RUN_FIELDS


@dataclass(frozen=True)
class CompiledMetric:
    """One Metric, ready to be computed from the store's aggregates."""

    name: str
    kind: Literal["gauge", "duration", "counter"]
    help: str
    owner: str | None
    flows: frozenset[str] | None             # None: every flow ("*")
    states: frozenset[str] = frozenset()     # gauge: counted states; counter: the `to` state
    before_step: str | None = None           # gauge: only runs that have not completed it
    actions: frozenset[str] = frozenset()    # counter of operator actions
    labels: tuple[tuple[str, Expression], ...] = ()
    run_labels: frozenset[str] = frozenset()  # labels resolved per run (they read data, steps)
    buckets: tuple[float, ...] = ()          # duration: upper bounds in seconds, ascending
    objective: tuple[float, float] | None = None  # (percentile, under seconds)
    points: tuple[str, str] = ("", "")       # duration: (from, to) as the store names points
    location: Any = field(default=None, compare=False, repr=False)

    @property
    def family(self) -> str:
        """The Prometheus name: syncline_business_<name>, `-` and `.` as `_`."""
        return "syncline_business_" + self.name.replace("-", "_").replace(".", "_")

    @property
    def run_expressions(self) -> tuple[Expression, ...]:
        """The expressions of the labels resolved per run, in the order of `labels`."""
        return tuple(e for name, e in self.labels if name in self.run_labels)

    @property
    def label_set(self) -> str:
        """The label set the store counts this metric's runs under ('' without run labels)."""
        if not self.run_labels:
            return ""
        return label_set(self.flows, self.before_step, self.run_expressions)


Report = Callable[[Diagnostic], None]


def compile_metrics(registry: Registry, flows: Mapping[str, CompiledFlow],
                    report: Report) -> dict[str, CompiledMetric]:
    """The active version of every Metric, checked against the active flows."""
    compiled = {}
    for name in sorted({resource.name for resource, _ in registry.all("Metric")}):
        found = registry.active("Metric", name)
        if found is None:
            continue
        resource, doc = found
        assert isinstance(resource, Metric)
        metric = _MetricCompiler(resource, doc, flows, report).compile()
        if metric is not None:
            compiled[name] = metric
    return compiled


class _MetricCompiler:
    def __init__(self, metric: Metric, doc: Document, flows: Mapping[str, CompiledFlow],
                 report: Report) -> None:
        self.metric, self.doc, self.flows = metric, doc, flows
        self._report = report
        self.ok = True

    def error(self, path: Sequence[Any], message: str, code: str = "E_METRIC") -> None:
        self.ok = False
        self._report(Diagnostic(self.doc.locate(("spec", *path)), code, message))

    def compile(self) -> CompiledMetric | None:
        spec = self.metric.spec
        labels, run_labels = self._labels()
        base: dict[str, Any] = {
            "name": self.metric.name, "help": spec.help, "owner": self.metric.metadata.owner,
            "labels": labels, "run_labels": run_labels, "location": self.doc.locate(),
        }
        if spec.gauge is not None:
            gauge = spec.gauge
            flows = self._flows(gauge.flow, ("gauge", "flow"))
            states = self._states(gauge.states, ("gauge", "states"))
            step = self._step(gauge.before_step, gauge.flow, ("gauge", "beforeStep"))
            metric = CompiledMetric(kind="gauge", flows=flows, states=states, before_step=step,
                                    **base)
        elif spec.counter is not None:
            counter = spec.counter
            flows = self._flows(counter.flow, ("counter", "flow"))
            to = self._states([counter.to], ("counter", "to")) if counter.to else frozenset()
            metric = CompiledMetric(kind="counter", flows=flows, states=to,
                                    actions=frozenset(counter.actions or ()), **base)
        else:
            metric = self._duration(base)
        if spec.objective is not None and spec.duration is None:
            self.error(("objective",), "an objective needs a duration metric")
        return metric if self.ok else None

    def _duration(self, base: dict[str, Any]) -> CompiledMetric:
        spec = self.metric.spec
        assert spec.duration is not None
        if spec.labels:
            self.error(("labels",), "a duration has no labels (it is one histogram)")
        start = self._point(spec.duration.from_, ("duration", "from"))
        end = self._point(spec.duration.to, ("duration", "to"))
        if self.ok and not self._can_follow(spec.duration.from_, spec.duration.to):
            self._report(Diagnostic(
                self.doc.locate(("spec", "duration", "to")), "W_METRIC",
                f"'{end}' never follows '{start}' in the event graph: no flow reachable from "
                "the start leads to the end, so this duration will have no observations",
                "warning"))
        buckets = sorted(set(spec.buckets))
        objective = None
        if spec.objective is not None:
            objective = (spec.objective.percentile, spec.objective.under)
            if objective[1] not in buckets:  # the ratio is read off the bucket at `under`
                bisect.insort(buckets, objective[1])
        return CompiledMetric(kind="duration", flows=None, buckets=tuple(buckets),
                              objective=objective, points=(start, end), **base)

    def _labels(self) -> tuple[tuple[tuple[str, Expression], ...], frozenset[str]]:
        """Every label compiled, and the names of those resolved per run."""
        labels, run = [], set()
        for label, text in self.metric.spec.labels.items():
            where = ("labels", label)
            if not label.isidentifier() or label.startswith("__"):
                self.error(where, f"'{label}' is not a Prometheus label name")
                continue
            try:
                expression = compile_expression(text)
            except ExpressionSyntaxError as exc:
                self.error(where, f"label '{label}': {exc}", "E_JMESPATH")
                continue
            fields = root_fields(expression.ast)
            extra = sorted(fields - LABEL_FIELDS)
            if extra:
                hint = suggest(extra[0], sorted(LABEL_FIELDS))
                self.error(where, f"label '{label}' reads '{extra[0]}'{hint}: a label reads "
                           "flow, state, reason (code, step), action, data or steps")
                continue
            if fields & {"data", "steps"} and not self._run_label(label, expression, fields):
                continue
            labels.append((label, expression))
            if fields & {"data", "steps"}:
                run.add(label)
        return tuple(labels), frozenset(run)

    def _run_label(self, label: str, expression: Expression, fields: set[str]) -> bool:
        """Check a label that reads a run's data or steps (engine/compiler/metric_labels.py)."""
        spec = self.metric.spec
        if spec.duration is not None:
            return True  # a duration has no labels: reported once, in `_duration`
        if spec.counter is not None and spec.counter.actions:
            self.error(("labels", label), f"label '{label}' reads a run's data or steps: an "
                       "action counter's labels read flow and action")
            return False
        counted = spec.gauge or spec.counter
        name = counted.flow if counted is not None else "*"
        if name == "*":  # checked against every flow's schemas
            found = list(every_flow_label_errors(expression, fields, self.flows))
        elif (flow := self.flows.get(name)) is not None:
            found = [("error", *error) for error in run_label_errors(expression, fields, flow)]
        else:
            return False  # an unknown flow: reported by `_flows`
        for severity, code, message, path in found:
            offset = path_offset(expression.text, path) if path else None
            self._report(Diagnostic(self.doc.locate_in(("spec", "labels", label), offset),
                                    code, f"label '{label}' {message}", severity))
        ok = all(severity != "error" for severity, *_ in found)
        self.ok = self.ok and ok
        return ok

    def _flows(self, name: str, where: tuple[str, ...]) -> frozenset[str] | None:
        if name == "*":
            return None
        if name not in self.flows:
            self.error(where, f"unknown flow '{name}'{suggest(name, sorted(self.flows))}",
                       "E_REF")
        return frozenset({name})

    def _states(self, states: Sequence[str], where: tuple[str, ...]) -> frozenset[str]:
        for i, state in enumerate(states):
            if state not in RUN_STATES:
                path = where if where[-1] == "to" else (*where, i)
                self.error(path, f"unknown state '{state}'{suggest(state, list(RUN_STATES))}")
        return frozenset(states)

    def _step(self, step: str | None, flow: str, where: tuple[str, ...]) -> str | None:
        if step is None:
            return None
        compiled = self.flows.get(flow)
        if flow == "*":
            self.error(where, "beforeStep needs one flow, not '*'")
        elif compiled is not None:
            ids = [s.id for s in compiled.steps]
            if step not in ids:
                self.error(where, f"flow '{flow}' has no step '{step}'{suggest(step, ids)}",
                           "E_REF")
        return step

    def _point(self, point: Point, where: tuple[str, ...]) -> str:
        if point.event is not None:
            known = self._event_types()
            if point.event not in known:
                hint = suggest(point.event, sorted(known))
                self.error((*where, "event"), f"no flow emits or is triggered by event type "
                           f"'{point.event}'{hint}", "E_REF")
            return f"event:{point.event}"
        assert point.flow is not None and point.state is not None
        if point.flow not in self.flows:
            self.error((*where, "flow"), f"unknown flow '{point.flow}'"
                       f"{suggest(point.flow, sorted(self.flows))}", "E_REF")
        self._states([point.state], (*where, "state"))
        return f"run:{point.flow}:{point.state}"

    def _event_types(self) -> set[str]:
        types = {t for flow in self.flows.values() for t in flow.emits}
        return types | {f.trigger.event for f in self.flows.values() if f.trigger.event}

    def _can_follow(self, start: Point, end: Point) -> bool:
        """Whether `end` can happen after `start` within one correlation: a flow reachable from
        the start's flows through emitted events emits the end's event or is the end's flow.
        Unknown for an end event no flow emits (it comes from outside): then yes."""
        subscribers: dict[str, set[str]] = {}
        for flow in self.flows.values():
            if flow.trigger.event:
                subscribers.setdefault(flow.trigger.event, set()).add(flow.name)
        if end.event is not None:
            targets = {f.name for f in self.flows.values() if end.event in f.emits}
            if not targets:
                return True
        else:
            targets = {str(end.flow)}
        todo = list(subscribers.get(start.event, ())) if start.event else [str(start.flow)]
        reached = set(todo)
        while todo:
            for event_type in self.flows[todo.pop()].emits:
                for name in subscribers.get(event_type, set()) - reached:
                    reached.add(name)
                    todo.append(name)
        return bool(targets & reached)


def root_fields(node: dict[str, Any]) -> set[str]:
    """The fields a JMESPath AST reads from its input document (`reason` in `reason.code`)."""
    kind = node["type"]
    if kind == "field":
        return {str(node["value"])}
    children = [c for c in node.get("children", ()) if isinstance(c, dict)]
    if kind in ("subexpression", "index_expression", "pipe", "projection", "value_projection",
                "filter_projection", "flatten"):
        return root_fields(children[0]) if children else set()
    if kind in ("literal", "current", "identity", "expref"):
        return set()
    found: set[str] = set()
    for child in children:
        found |= root_fields(child)
    return found
