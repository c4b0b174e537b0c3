"""Change preview: run the base's and the head's definitions on recorded payloads and say which
samples come out unchanged, changed (field by field), newly failing or newly passing.

Two levels: every changed map step runs old and new mapping on its samples in-process (the
compiled mapping path: fast, so every sample), and every changed flow runs old and new through
the runtime with stubbed Systems (`engine.gitops.flow_preview`), which shows the requests its
calls would send. Nothing is called: a map step is previewed on its own only when everything it
reads comes from the sample or from earlier map steps."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.compiler.compiled import CompiledFlow, CompiledMapping, MapAction
from engine.compiler.plan import Plan
from engine.gitops.compare import (
    ABSENT,
    Change,
    definition_documents,
    diff_fields,
    mapping_documents,
    mapping_fingerprint,
)
from engine.gitops.flow_preview import FlowPreview, preview_flows
from engine.gitops.samples import Redactor, Sample

KINDS = ("unchanged", "changed", "newly_failing", "newly_passing", "still_failing")


@dataclass
class StepPreview:
    flow: str
    step: str
    old: str | None                            # mapping ident in the base (None: new step)
    new: str
    changes: list[Change] = field(default_factory=list)
    not_previewed: str | None = None           # why the step could not be run offline

    def count(self, kind: str) -> int:
        return sum(1 for c in self.changes if c.kind == kind)

    def as_dict(self) -> dict[str, Any]:
        return {"flow": self.flow, "step": self.step, "old": self.old, "new": self.new,
                "not_previewed": self.not_previewed,
                "counts": {k: self.count(k) for k in KINDS},
                "samples": [{"sample": c.sample, "kind": c.kind, "fields": c.fields,
                             "error": c.error} for c in self.changes if c.kind != "unchanged"]}


@dataclass
class Preview:
    steps: list[StepPreview]
    unmatched: list[str]                       # samples that belong to no flow of the head
    sample_count: int
    flows: list[FlowPreview] = field(default_factory=list)

    def total(self, kind: str) -> int:
        """Samples of that kind over every step and flow preview."""
        return sum(s.count(kind) for s in self.steps) + sum(f.count(kind) for f in self.flows)

    def as_dict(self) -> dict[str, Any]:
        return {"samples": self.sample_count, "unmatched": self.unmatched,
                "totals": {k: self.total(k) for k in (*KINDS, "not_previewed")},
                "steps": [s.as_dict() for s in self.steps],
                "flows": [f.as_dict() for f in self.flows]}


def preview(base: Plan | None, head: Plan, samples: Iterable[Sample], redactor: Redactor,
            *, flows: bool = True) -> Preview:
    """Every changed map step of the head's active flows, run old and new on its samples; with
    `flows`, every changed flow too (through the runtime, its Systems stubbed)."""
    by_flow: dict[str, list[Sample]] = {}
    unmatched: list[str] = []
    count = 0
    for sample in samples:
        count += 1
        names = _flows_for(head, sample.target)
        if not names:
            unmatched.append(f"{sample.source}: '{sample.target}' is no flow, event type or "
                             "trigger path of the head")
        for name in names:
            by_flow.setdefault(name, []).append(sample)
    old_docs = mapping_documents(definition_documents(base))
    new_docs = mapping_documents(definition_documents(head))
    steps: list[StepPreview] = []
    for name, flow in sorted(head.flows.items()):
        old_flow = base.flows.get(name) if base else None
        for step in flow.steps:
            if not isinstance(step.action, MapAction):
                continue
            old = _old_mapping(old_flow, step.id)
            if old is not None and (mapping_fingerprint(old, old_docs)
                                    == mapping_fingerprint(step.action.mapping, new_docs)):
                continue
            result = StepPreview(name, step.id, old.ident if old else None,
                                 step.action.mapping.ident)
            reason = _offline(flow, step.id) or (
                _offline(old_flow, step.id) if old is not None and old_flow else None)
            if reason:
                result.not_previewed = reason
            else:
                for sample in by_flow.get(name, []):
                    result.changes.append(_compare(sample, old_flow, flow, step.id, redactor))
            steps.append(result)
    flow_previews = preview_flows(base, head, by_flow, redactor) if flows else []
    return Preview(steps, unmatched, count, flow_previews)


def _flows_for(plan: Plan, target: str) -> list[str]:
    if target in plan.flows:
        return [target]
    if target in plan.subscriptions:
        return [f.name for f in plan.subscriptions[target]]
    flow = plan.webhooks.get(target) or plan.apis.get(target)
    return [flow.name] if flow else []


def _old_mapping(flow: CompiledFlow | None, step_id: str) -> CompiledMapping | None:
    for step in flow.steps if flow else ():
        if step.id == step_id and isinstance(step.action, MapAction):
            return step.action.mapping
    return None


def _offline(flow: CompiledFlow, step_id: str) -> str | None:
    """Why `step_id` cannot run without calls (it reads a non-map step), or None."""
    steps = {s.id: s for s in flow.steps}
    todo, seen = [step_id], set[str]()
    while todo:
        current = steps[todo.pop()]
        for need in current.needs - seen:
            seen.add(need)
            if need in steps and not isinstance(steps[need].action, MapAction):
                return f"reads step '{need}' ({steps[need].kind}), which preview does not run"
            todo.append(need)
    return None


def _run(flow: CompiledFlow | None, step_id: str, data: Any, cache: dict[str, Any]) -> Any:
    """The output of map step `step_id` of `flow` for `data` (earlier map steps run first)."""
    steps = {s.id: s for s in flow.steps} if flow else {}
    if step_id in cache:
        return cache[step_id]
    step = steps[step_id]
    assert isinstance(step.action, MapAction)
    for need in sorted(step.needs, key=lambda n: steps[n].index):
        _run(flow, need, data, cache)
    context = {"data": data, "steps": cache, "event": {"data": data}, "env": {}}
    cache[step_id] = step.action.mapping.apply(step.action.input.search(context))
    return cache[step_id]


def _compare(sample: Sample, old_flow: CompiledFlow | None, flow: CompiledFlow, step_id: str,
             redactor: Redactor) -> Change:
    old_out, old_error = _outcome(old_flow if _old_mapping(old_flow, step_id) else None,
                                  step_id, sample.data)
    new_out, new_error = _outcome(flow, step_id, sample.data)
    if new_error is not None:
        kind = "still_failing" if old_error is not None else "newly_failing"
        return Change(sample.source, kind, error=redactor.text(new_error))
    if old_error is not None:
        return Change(sample.source, "newly_passing", error=redactor.text(old_error))
    fields = diff_fields(old_out, new_out, redactor)
    return Change(sample.source, "changed" if fields else "unchanged", fields)


def _outcome(flow: CompiledFlow | None, step_id: str, data: Any) -> tuple[Any, str | None]:
    if flow is None:
        return ABSENT, None
    try:
        return _run(flow, step_id, data, {}), None
    except Exception as exc:  # noqa: BLE001 - a generated mapping may fail in any way
        return None, str(exc) or type(exc).__name__


