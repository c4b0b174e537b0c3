"""Compile a Flow: resolve its references, compile its expressions, and build its step graph.

Dependencies are explicit (`needs`) and implicit: every `steps.<id>` a step's expressions or
templates reference, found by walking their ASTs. The parts: flow_scope.py (errors, expressions,
values, references), flow_graph.py (the step graph), this module (trigger, steps, field checks).
"""

from __future__ import annotations

from typing import Any

from engine.compiler.backbone import compile_publish, compile_stream
from engine.compiler.calls import compile_call, compile_shadow
from engine.compiler.compiled import (
    CallAction,
    CompiledFlow,
    CompiledStep,
    CompiledSystem,
    CompiledTrigger,
    EmitAction,
    MapAction,
    ParkAction,
    PublishAction,
    RuleCheck,
    SetAction,
    ValidateAction,
)
from engine.compiler.echo import check_test_writes, trigger_echo
from engine.compiler.expressions import Expression
from engine.compiler.fields import unknown_reads
from engine.compiler.flow_graph import FlowGraph
from engine.compiler.flow_scope import Loc
from engine.compiler.records import flow_test_record
from engine.compiler.refs import ITEM, FieldPath, path_offset
from engine.compiler.triggers import TICK_KEY, compile_timed_trigger
from engine.model import flow as m
from engine.model.base import suggest
from engine.source import Diagnostic


class FlowCompiler(FlowGraph):
    """Compiles one Flow against the already compiled schemas, mappings, systems and policies:
    its trigger and steps here, the shared parts in `FlowScope`, its graph in `FlowGraph`."""

    # the flow ------------------------------------------------------------------------------
    def compile(self) -> CompiledFlow | None:
        spec = self.flow.spec
        trigger = self.trigger(spec.trigger)
        filt = self.expr(spec.filter, ("filter",)) if spec.filter else None
        key = self.expr(spec.idempotency_key, ("idempotencyKey",)) if spec.idempotency_key else None
        if spec.trigger.schedule is not None:
            key = TICK_KEY  # one run per tick, whichever replica fires it
        order, while_parked = self.ordering(spec.ordering_key)
        steps = self.steps(spec.steps)
        ids = {s.id for s in spec.steps}
        output = self.expr(spec.output, ("output",), "__output__") if spec.output else None
        self._check_refs("__output__", ids, ("output",))
        check_test_writes(self, spec.tests)
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
            while_parked=while_parked,
            steps=ordered, on_failure=spec.on_failure, output=output,
            allow_loop=spec.allow_loop, emits=emits,
            tests=tuple(flow_test_record(t) for t in spec.tests),
            location=self.doc.locate(),
            test_locations=tuple(
                self.doc.locate(("spec", "tests", i)) for i in range(len(spec.tests))
            ),
        )

    def ordering(self, spec: m.OrderingKey | None) -> tuple[Expression | None, str]:
        """The ordering key's expression and what a parked run does with its key."""
        if spec is None:
            return None, "block"
        written_long = ("spec", "orderingKey", "key") in self.doc.locations
        loc = ("orderingKey", "key") if written_long else ("orderingKey",)
        return self.expr(spec.key, loc), spec.while_parked

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
            record = trigger.webhook.record
            echo = trigger_echo(self, record, system) if record is not None else None
            return CompiledTrigger("webhook", path=trigger.webhook.path, system=system, echo=echo)
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



def _with_needs(step: CompiledStep, needs: frozenset[str]) -> CompiledStep:
    return CompiledStep(step.id, step.kind, step.action, needs, step.when, step.retry,
                        step.compensate, step.index, step.location)


def _dotted(path: FieldPath) -> str:
    """`steps.order.lines[].sku` for ("steps", "order", "lines", ITEM, "sku")."""
    return "".join("[]" if p == ITEM else f".{p}" for p in path).lstrip(".")


RESERVED_PATHS = ("/api/v1/", "/healthz", "/readyz", "/metrics", "/events", "/console")
UNTIMED_SCHEMES = frozenset({"github", "shopify", "hmac-sha256"})


def _reserved(path: str) -> bool:
    """A trigger path that would shadow one of the server's own endpoints."""
    trimmed = path.rstrip("/") or "/"
    return trimmed == "/api/v1" or any(
        trimmed == p.rstrip("/") or path.startswith(p.rstrip("/") + "/") for p in RESERVED_PATHS)
