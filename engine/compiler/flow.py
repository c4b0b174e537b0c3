"""Compile a Flow: resolve its references, compile its expressions, and build its step graph.

Dependencies are explicit (`needs`) and implicit: every `steps.<id>` a step's expressions or
templates reference, found by walking their ASTs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.compiler.backbone import compile_publish, compile_stream
from engine.compiler.calls import compile_call, compile_shadow
from engine.compiler.compiled import (
    CallAction,
    CompiledFlow,
    CompiledMapping,
    CompiledRetry,
    CompiledSchema,
    CompiledStep,
    CompiledSystem,
    CompiledTrigger,
    ConstValue,
    EmitAction,
    ExprValue,
    MapAction,
    MapValue,
    ParkAction,
    PublishAction,
    RuleCheck,
    SetAction,
    TemplateValue,
    ValidateAction,
    Value,
)
from engine.compiler.expressions import Expression, compile_expression
from engine.compiler.fields import unknown_reads
from engine.compiler.graph import DependencyGraph
from engine.compiler.records import flow_test_record
from engine.compiler.refs import ITEM, FieldPath, path_offset
from engine.compiler.resolve import Registry
from engine.compiler.templates import Template, compile_template
from engine.compiler.triggers import TICK_KEY, compile_timed_trigger
from engine.errors import ExpressionSyntaxError
from engine.loader import Document
from engine.model import flow as m
from engine.model.base import suggest
from engine.source import Diagnostic, SourceLocation

Loc = tuple[Any, ...]


@dataclass
class FlowCompiler:
    """Compiles one Flow against the already compiled schemas, mappings, systems and policies."""

    flow: m.Flow
    doc: Document
    registry: Registry
    schemas: dict[tuple[str, int], CompiledSchema]
    mappings: dict[tuple[str, int], CompiledMapping]
    systems: dict[tuple[str, int], CompiledSystem]
    retries: dict[tuple[str, int], CompiledRetry]
    default_retry: CompiledRetry | None
    report: Callable[[Diagnostic], None]
    failed: bool = False
    _refs: dict[str, set[str]] = field(default_factory=dict)
    _ref_locs: dict[str, dict[str, tuple[Loc, str]]] = field(default_factory=dict)
    _reads: list[tuple[Loc, Expression | Template]] = field(default_factory=list)  # E_FIELD

    def error(self, loc: Loc, code: str, message: str) -> None:
        self.failed = True
        self.report(Diagnostic(self.where(loc), code, message))

    def syntax_error(self, exc: ExpressionSyntaxError, loc: Loc, message: str) -> None:
        """Report an expression that does not compile, at the column its parser stopped at."""
        self.failed = True
        self.report(exc.at(self.doc.locate_in(("spec", *loc), exc.offset), message))

    def where(self, loc: Loc) -> SourceLocation:
        return self.doc.locate(("spec", *loc))

    # expressions ---------------------------------------------------------------------------
    def expr(self, text: str, loc: Loc, step: str | None = None) -> Expression | None:
        try:
            compiled = compile_expression(text)
        except ExpressionSyntaxError as exc:
            self.syntax_error(exc, loc, f"invalid JMESPath '{text}': {exc.message}")
            return None
        self._note_refs(compiled.step_refs, loc, step, text)
        self._reads.append((loc, compiled))
        return compiled

    def value(self, raw: Any, loc: Loc, step: str | None) -> Value | None:
        if isinstance(raw, str):
            compiled = self.expr(raw, loc, step)
            return ExprValue(compiled, compiled.step_refs) if compiled else None
        if isinstance(raw, m.TemplateValue):
            try:
                template = compile_template(raw.template)
            except ExpressionSyntaxError as exc:
                self.syntax_error(exc, loc + ("template",), f"invalid template: {exc.message}")
                return None
            self._note_refs(template.step_refs, loc, step, "")
            self._reads.append((loc + ("template",), template))
            return TemplateValue(template, template.step_refs)
        if isinstance(raw, m.ConstValue):
            return ConstValue(raw.const)
        mapping = self.mapping(raw.map, loc + ("map",))
        source = self.expr(raw.input, loc + ("input",), step)
        if mapping is None or source is None:
            return None
        return MapValue(mapping, source, source.step_refs)

    def values(self, raw: dict[str, Any], loc: Loc, step: str) -> dict[str, Value]:
        out = {k: self.value(v, loc + (k,), step) for k, v in raw.items()}
        return {k: v for k, v in out.items() if v is not None}

    def _note_refs(self, refs: frozenset[str], loc: Loc, step: str | None, text: str) -> None:
        if step is None:
            if refs:
                self.error(loc, "E_REF", f"steps.{sorted(refs)[0]} is not available here "
                           "(only data, event, run and env are)")
            return
        self._refs.setdefault(step, set()).update(refs)
        self._ref_locs.setdefault(step, {}).update({r: (loc, text) for r in refs})

    # references ----------------------------------------------------------------------------
    def mapping(self, ref: str, loc: Loc) -> CompiledMapping | None:
        found = self.registry.lookup("Mapping", ref, self.where(loc), "step")
        if found is None:
            self.failed = True
            return None
        compiled = self.mappings.get((found.name, found.version))
        self.failed = self.failed or compiled is None
        return compiled

    def schema(self, ref: str, loc: Loc) -> CompiledSchema | None:
        found = self.registry.lookup("Schema", ref, self.where(loc), "step")
        compiled = self.schemas.get((found.name, found.version)) if found else None
        self.failed = self.failed or compiled is None
        return compiled

    def system(self, ref: str, loc: Loc) -> CompiledSystem | None:
        found = self.registry.lookup("System", ref, self.where(loc), "flow")
        compiled = self.systems.get((found.name, found.version)) if found else None
        self.failed = self.failed or compiled is None
        return compiled

    def retry(self, ref: str, loc: Loc) -> CompiledRetry | None:
        found = self.registry.lookup("RetryPolicy", ref, self.where(loc), "step")
        compiled = self.retries.get((found.name, found.version)) if found else None
        self.failed = self.failed or compiled is None
        return compiled

    # the flow ------------------------------------------------------------------------------
    def compile(self) -> CompiledFlow | None:
        spec = self.flow.spec
        trigger = self.trigger(spec.trigger)
        filt = self.expr(spec.filter, ("filter",)) if spec.filter else None
        key = self.expr(spec.idempotency_key, ("idempotencyKey",)) if spec.idempotency_key else None
        if spec.trigger.schedule is not None:
            key = TICK_KEY  # one run per tick, whichever replica fires it
        order = self.expr(spec.ordering_key, ("orderingKey",)) if spec.ordering_key else None
        steps = self.steps(spec.steps)
        ids = {s.id for s in spec.steps}
        output = self.expr(spec.output, ("output",), "__output__") if spec.output else None
        self._check_refs("__output__", ids, ("output",))
        if self.failed or trigger is None:
            return None
        graph = self.graph(spec.steps, steps)
        if graph is None:
            return None
        self.check_fields(steps)
        if self.failed:
            return None
        order_rank = {s.id: s.index for s in steps.values()}
        ordered = tuple(
            _with_needs(steps[i], graph.dependencies(i)) for i in graph.order(order_rank)
        )
        emits = tuple(sorted({s.action.type for s in ordered if isinstance(s.action, EmitAction)}))
        return CompiledFlow(
            name=self.flow.name, version=self.flow.version, owner=self.flow.metadata.owner,
            trigger=trigger, filter=filt, idempotency_key=key, ordering_key=order,
            steps=ordered, on_failure=spec.on_failure, output=output,
            allow_loop=spec.allow_loop, emits=emits,
            tests=tuple(flow_test_record(t) for t in spec.tests),
            location=self.doc.locate(),
            test_locations=tuple(
                self.doc.locate(("spec", "tests", i)) for i in range(len(spec.tests))
            ),
        )

    def trigger(self, trigger: m.Trigger) -> CompiledTrigger | None:
        for kind, route in (("webhook", trigger.webhook), ("api", trigger.api)):
            if route is not None and _reserved(route.path):
                self.error(("trigger", kind, "path"), "E_TRIGGER",
                           f"path '{route.path}' is reserved for the server's own endpoints "
                           f"({', '.join(RESERVED_PATHS)})")
        if trigger.webhook is not None:
            system = self.system(trigger.webhook.system, ("trigger", "webhook", "system"))
            if system is not None and system.webhooks is None:
                self.error(
                    ("trigger", "webhook", "system"), "E_TRIGGER",
                    f"system '{system.name}' has no webhooks block to verify deliveries with",
                )
            self._warn_replayable(system)
            return CompiledTrigger("webhook", path=trigger.webhook.path, system=system)
        if trigger.api is not None:
            return CompiledTrigger("api", path=trigger.api.path, timeout=trigger.api.timeout)
        if trigger.schedule is not None or trigger.poll is not None:
            return compile_timed_trigger(self, trigger)
        if trigger.stream is not None:
            return compile_stream(self, trigger.stream)
        return CompiledTrigger("event", event=trigger.event)

    def _warn_replayable(self, system: CompiledSystem | None) -> None:
        """Senders that sign no timestamp (and not their delivery id) can be replayed with a new
        delivery id: only an idempotencyKey read from the signed body recognises the replay."""
        scheme = system.webhooks.scheme if system and system.webhooks else None
        if scheme in UNTIMED_SCHEMES and self.flow.spec.idempotency_key is None:
            self.report(Diagnostic(
                self.where(("trigger", "webhook", "system")), "W_REPLAY",
                f"'{scheme}' deliveries carry no signed timestamp: a captured delivery resent "
                "with a new delivery id starts a new run unless the flow sets idempotencyKey "
                "from the body (e.g. idempotencyKey: data.id)", severity="warning"))

    def steps(self, steps: list[m.Step]) -> dict[str, CompiledStep]:
        compiled: dict[str, CompiledStep] = {}
        for index, step in enumerate(steps):
            loc: Loc = ("steps", index)
            if step.id in compiled:
                self.error(loc + ("id",), "E_DUPLICATE", f"step id '{step.id}' is used twice")
                continue
            previous = steps[index - 1].id if index else None
            built = self.step(step, index, loc, previous)
            if built is not None:
                compiled[step.id] = built
        return compiled

    def step(self, step: m.Step, index: int, loc: Loc, previous: str | None) -> CompiledStep | None:
        when = self.expr(step.when, loc + ("when",), step.id) if step.when else None
        action = self.action(step, loc, previous)
        compensate = (self.call(step.compensate, loc + ("compensate",), f"{step.id}#compensate")
                      if step.compensate else None)  # runs after the step: references, no edges
        retry = self.retry(step.retry, loc + ("retry",)) if step.retry else None
        if isinstance(action, (CallAction, PublishAction)) and retry is None:
            retry = action.system.retry or self.default_retry
        if step.shadow is not None:
            action = compile_shadow(self, step, action, loc)
        if action is None:
            return None
        return CompiledStep(step.id, step.kind, action, frozenset(step.needs), when, retry,
                            compensate, index, self.where(loc))

    def action(self, step: m.Step, loc: Loc, previous: str | None) -> Any:
        sid = step.id
        if step.map is not None:
            mapping = self.mapping(step.map, loc + ("map",))
            source = self.expr(step.input or "data", loc + ("input",), sid)
            return MapAction(mapping, source) if mapping and source else None
        if step.validate_ is not None:
            return self.validate(step.validate_, loc + ("validate",), sid, previous)
        if step.call is not None:
            return self.call(step.call, loc + ("call",), sid)
        if step.emit is not None:
            return self.emit(step.emit, loc + ("emit",), sid)
        if step.set is not None:
            return SetAction(self.values(step.set, loc + ("set",), sid))
        if step.publish is not None:
            return compile_publish(self, step.publish, loc + ("publish",), sid)
        assert step.park is not None
        return ParkAction(step.park.code, step.park.message)

    def validate(self, spec: m.ValidateSpec, loc: Loc, sid: str, previous: str | None) -> Any:
        schema = self.schema(spec.schema_, loc + ("schema",)) if spec.schema_ else None
        default_input = f"steps.{previous}" if previous else "data"
        source = self.expr(spec.input or default_input, loc + ("input",), sid)
        rules = []
        for i, rule in enumerate(spec.rules):
            check = self.expr(rule.assert_, loc + ("rules", i, "assert"), sid)
            if check is not None:
                rules.append(RuleCheck(check, rule.code, rule.message))
        if source is None or (spec.schema_ and schema is None):
            return None
        return ValidateAction(schema, source, tuple(rules), spec.code)

    def call(self, spec: m.CallSpec, loc: Loc, sid: str) -> CallAction | None:
        return compile_call(self, spec, loc, sid)

    def emit(self, spec: m.EmitSpec, loc: Loc, sid: str) -> EmitAction | None:
        data = self.value(spec.data, loc + ("data",), sid)
        subject = self.expr(spec.subject, loc + ("subject",), sid) if spec.subject else None
        return EmitAction(spec.type, data, subject) if data is not None else None

    # field references ----------------------------------------------------------------------
    def check_fields(self, steps: dict[str, CompiledStep]) -> None:
        """E_FIELD for `steps.<id>.<path>` and `data.<path>` reading a field the value cannot
        have (it would always be null), where the value's shape is known (see fields.py)."""
        for loc, text, path, known in unknown_reads(self._reads, steps.values()):
            name = str(path[-1])
            where = self.doc.locate_in(("spec", *loc), path_offset(text, path))
            self.failed = True
            self.report(Diagnostic(where, "E_FIELD", f"{_dotted(path[:-1])} has no field "
                                   f"'{name}'{suggest(name, known)}, so this is always null"))

    # graph ---------------------------------------------------------------------------------
    def graph(self, raw: list[m.Step], steps: dict[str, CompiledStep]) -> DependencyGraph | None:
        ids = set(steps)
        graph = DependencyGraph(s.id for s in raw if s.id in ids)
        written: dict[tuple[str, str], Callable[[], SourceLocation]] = {}  # -> where it is said
        for index, step in enumerate(raw):
            for j, need in enumerate(step.needs):
                if need not in ids:
                    self.error(("steps", index, "needs", j), "E_REF", f"step '{step.id}' needs "
                               f"unknown step '{need}'{suggest(need, sorted(ids))}")
                else:
                    graph.add_dependency(step.id, need)
                    at = ("steps", index, "needs", j)
                    written.setdefault((step.id, need), functools.partial(self.where, at))
            for ref in self._check_refs(step.id, ids, ("steps", index)):
                graph.add_dependency(step.id, ref)
                written.setdefault((step.id, ref),
                                   functools.partial(self._ref_location, step.id, ref))
            self._check_refs(f"{step.id}#compensate", ids, ("steps", index, "compensate"))
        cycle = graph.find_cycle()
        if cycle:
            self._report_cycle(cycle, written, {s.id: i for i, s in enumerate(raw)})
        return None if self.failed else graph

    def _report_cycle(self, cycle: list[str],
                      written: dict[tuple[str, str], Callable[[], SourceLocation]],
                      rank: dict[str, int]) -> None:
        """At the dependency that closes the cycle (see `_closing`)."""
        chain = _closing(cycle, rank)
        closing, needed = chain[0], chain[1 % len(chain)]
        self.failed = True
        self.report(Diagnostic(
            written[(closing, needed)](), "E_CYCLE",
            f"steps form a cycle: {' -> '.join([*chain, closing])} (each needs the next; step "
            f"'{closing}' needing '{needed}' closes it)",
        ))

    def _ref_location(self, step: str, ref: str) -> SourceLocation:
        """Where a step's expression reads `steps.<ref>`: at `ref` inside the expression."""
        loc, text = self._ref_locs[step][ref]
        return self.doc.locate_in(("spec", *loc), path_offset(text, ("steps", ref)))

    def _check_refs(self, step: str, ids: set[str], loc: Loc) -> list[str]:
        good = []
        for ref in sorted(self._refs.get(step, ())):
            if ref in ids:
                good.append(ref)
                continue
            where = self._ref_locs.get(step, {}).get(ref, (loc, ""))[0]
            name = "output" if step == "__output__" else f"step '{step.split('#')[0]}'"
            self.error(where, "E_REF", f"{name} refers to unknown step "
                       f"'{ref}'{suggest(ref, sorted(ids))}")
        return good


def _with_needs(step: CompiledStep, needs: frozenset[str]) -> CompiledStep:
    return CompiledStep(step.id, step.kind, step.action, needs, step.when, step.retry,
                        step.compensate, step.index, step.location)


def _dotted(path: FieldPath) -> str:
    """`steps.order.lines[].sku` for ("steps", "order", "lines", ITEM, "sku")."""
    return "".join("[]" if p == ITEM else f".{p}" for p in path).lstrip(".")


def _closing(cycle: list[str], rank: dict[str, int]) -> list[str]:
    """A cycle `[a, b, a]` of the graph (each runs after the one before) as the steps each
    needing the next, starting at the last declared one: its need of the next closes it."""
    needs = list(reversed(cycle[:-1]))
    start = max(range(len(needs)), key=lambda i: rank.get(needs[i], 0))
    return needs[start:] + needs[:start]


RESERVED_PATHS = ("/api/v1/", "/healthz", "/readyz", "/metrics", "/events", "/console")
UNTIMED_SCHEMES = frozenset({"github", "shopify", "hmac-sha256"})


def _reserved(path: str) -> bool:
    """A trigger path that would shadow one of the server's own endpoints."""
    trimmed = path.rstrip("/") or "/"
    return trimmed == "/api/v1" or any(
        trimmed == p.rstrip("/") or path.startswith(p.rstrip("/") + "/") for p in RESERVED_PATHS)
