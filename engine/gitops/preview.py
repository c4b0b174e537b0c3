"""Change preview: run the base's and the head's compiled mappings on recorded payloads and say,
per changed mapping step, which samples come out unchanged, changed (field by field), newly
failing or newly passing. Nothing is called: a map step is previewed only when everything it
reads comes from the sample or from earlier map steps."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.compiler.compiled import CompiledFlow, CompiledMapping, MapAction
from engine.compiler.plan import Plan
from engine.gitops.samples import REDACTED, Redactor, Sample

_ABSENT = object()
KINDS = ("unchanged", "changed", "newly_failing", "newly_passing", "still_failing")


@dataclass
class Change:
    sample: str
    kind: str                                  # one of KINDS
    fields: list[dict[str, Any]] = field(default_factory=list)   # {path, old?, new?}
    error: str | None = None                   # the failure (old for newly passing)


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

    def total(self, kind: str) -> int:
        return sum(s.count(kind) for s in self.steps)

    def as_dict(self) -> dict[str, Any]:
        return {"samples": self.sample_count, "unmatched": self.unmatched,
                "totals": {k: self.total(k) for k in KINDS},
                "steps": [s.as_dict() for s in self.steps]}


def preview(base: Plan | None, head: Plan, samples: Iterable[Sample],
            redactor: Redactor) -> Preview:
    """Every changed map step of the head's active flows, run old and new on its samples."""
    by_flow: dict[str, list[Sample]] = {}
    unmatched: list[str] = []
    count = 0
    for sample in samples:
        count += 1
        flows = _flows_for(head, sample.target)
        if not flows:
            unmatched.append(f"{sample.source}: '{sample.target}' is no flow, event type or "
                             "trigger path of the head")
        for name in flows:
            by_flow.setdefault(name, []).append(sample)
    old_docs, new_docs = _mapping_documents(base), _mapping_documents(head)
    steps: list[StepPreview] = []
    for name, flow in sorted(head.flows.items()):
        old_flow = base.flows.get(name) if base else None
        for step in flow.steps:
            if not isinstance(step.action, MapAction):
                continue
            old = _old_mapping(old_flow, step.id)
            if old is not None and (_fingerprint(old, old_docs)
                                    == _fingerprint(step.action.mapping, new_docs)):
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
    return Preview(steps, unmatched, count)


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


def _mapping_documents(plan: Plan | None) -> dict[str, Any]:
    """Each Mapping's source spec in `plan`, by ident."""
    documents = plan.bundle["documents"] if plan else []
    return {f"{d['metadata']['name']}@{d['metadata'].get('version', 1)}":
            {k: v for k, v in (d.get("spec") or {}).items() if k != "tests"}
            for d in documents if d.get("kind") == "Mapping"}


def _fingerprint(mapping: CompiledMapping, documents: Mapping[str, Any]) -> str:
    """What decides a mapping's output: its definition and its schemas."""
    schemas = [s.json_schema if s else None for s in (mapping.source, mapping.target)]
    return json.dumps([documents.get(mapping.ident), schemas], sort_keys=True, default=str)


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
        return _ABSENT, None
    try:
        return _run(flow, step_id, data, {}), None
    except Exception as exc:  # noqa: BLE001 - a generated mapping may fail in any way
        return None, str(exc) or type(exc).__name__


def diff_fields(old: Any, new: Any, redactor: Redactor) -> list[dict[str, Any]]:
    """Leaf paths whose values differ: {path, old, new}; a missing side has no key."""
    before, after = _flatten(old), _flatten(new)
    changes = []
    for path in sorted(set(before) | set(after), key=lambda p: (p not in before, p)):
        a, b = before.get(path, _ABSENT), after.get(path, _ABSENT)
        if a == b and type(a) is type(b):
            continue
        entry: dict[str, Any] = {"path": path}
        hidden = redactor.hides(path)
        if a is not _ABSENT:
            entry["old"] = REDACTED if hidden else redactor.value(a)
        if b is not _ABSENT:
            entry["new"] = REDACTED if hidden else redactor.value(b)
        changes.append(entry)
    return changes


def _flatten(value: Any, prefix: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {} if out is None else out
    if value is _ABSENT:
        return out
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            _flatten(item, f"{prefix}[{index}]", out)
    else:
        out[prefix or "."] = value
    return out
