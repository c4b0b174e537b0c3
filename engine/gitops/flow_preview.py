"""Flow preview: run the base's and the head's version of each changed flow on recorded payloads
through the real runtime, with every System answered by stubs, and compare what each would do:
the final state and reason, the requests its call steps would send (method, path, body), the
events it would emit and its steps' outputs.

Nothing real is called. An operation is answered by the first stub the flow's tests (head, then
base) give it in `responses`, else by the response recorded for it in the sample's own run
lineage (`--samples store`); a sample that reaches an operation with neither is reported "not
previewed", naming the operation. Each sample runs alone: the preview ingests it with the flow's
idempotency and ordering keys left out (so samples never deduplicate or wait for each other), no
other flow subscribes to what it emits, and no schedule, poll or reconciliation runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import httpx

from engine.commands.harness import local_runtime
from engine.compiler.compiled import CompiledFlow, CompiledSystem, MapAction
from engine.compiler.plan import Plan
from engine.compiler.records import StubResponse
from engine.gitops.compare import (
    Change,
    definition_documents,
    diff_fields,
    mapping_documents,
    mapping_fingerprint,
)
from engine.gitops.samples import Redactor, Sample
from engine.runtime.runtime import EventMeta, Runtime
from engine.runtime.stubs import StubTransport, placeholder_secrets
from engine.store.base import StepRecord

FLOW_KINDS = ("unchanged", "changed", "newly_failing", "newly_passing", "still_failing",
              "not_previewed")
SETTLED = frozenset({"succeeded", "failed", "parked", "dead-lettered", "compensated",
                     "cancelled", "waiting"})
PASSING = frozenset({"succeeded"})
SAMPLE_TIMEOUT = 30.0  # seconds a flow's sample runs may take to settle


@dataclass
class FlowPreview:
    flow: str
    old: str | None                            # the flow's ident in the base (None: new flow)
    new: str
    changes: list[Change] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(1 for c in self.changes if c.kind == kind)

    def as_dict(self) -> dict[str, Any]:
        return {"flow": self.flow, "old": self.old, "new": self.new,
                "counts": {k: self.count(k) for k in FLOW_KINDS},
                "samples": [{"sample": c.sample, "kind": c.kind, "fields": c.fields,
                             "error": c.error} for c in self.changes if c.kind != "unchanged"]}


def changed_flows(base: Plan | None, head: Plan) -> list[tuple[CompiledFlow | None, CompiledFlow]]:
    """(base version, head version) of each active flow of the head whose behaviour may differ:
    its definition, a mapping it runs or a System it calls changed."""
    old_docs, new_docs = definition_documents(base), definition_documents(head)
    changed = []
    for name, flow in sorted(head.flows.items()):
        old = base.flows.get(name) if base else None
        if old is None or _fingerprint(old, old_docs) != _fingerprint(flow, new_docs):
            changed.append((old, flow))
    return changed


def preview_flows(base: Plan | None, head: Plan, samples: Mapping[str, Sequence[Sample]],
                  redactor: Redactor) -> list[FlowPreview]:
    """Each changed flow run old and new on its samples (`samples` by flow name)."""
    work = [(old, new, samples[new.name]) for old, new in changed_flows(base, head)
            if samples.get(new.name)]
    if not work:
        return []
    return asyncio.run(_preview_all(base, head, work, redactor))


async def _preview_all(base: Plan | None, head: Plan,
                       work: list[tuple[CompiledFlow | None, CompiledFlow, Sequence[Sample]]],
                       redactor: Redactor) -> list[FlowPreview]:
    new_side, old_side = _Sandbox(head), _Sandbox(base if any(w[0] for w in work) else None)
    await asyncio.gather(new_side.start(), old_side.start())  # a writer process each: in parallel
    try:
        previews = []
        for old, new, flow_samples in work:
            stubs = _stubs(new, old)
            answers = [{**_recorded(sample), **stubs} for sample in flow_samples]
            after, before = await asyncio.gather(
                new_side.outcomes(new, flow_samples, answers),
                old_side.outcomes(old, flow_samples, answers) if old else _nothing(),
            )
            result = FlowPreview(new.name, old.ident if old else None, new.ident)
            result.changes = [_compare(sample.source, before[i] if before else None, after[i],
                                       redactor) for i, sample in enumerate(flow_samples)]
            previews.append(result)
        return previews
    finally:
        await asyncio.gather(new_side.stop(), old_side.stop())


async def _nothing() -> list[dict[str, Any]]:
    return []


Answers = Mapping[str, StubResponse | tuple[StubResponse, ...]]


class _Sandbox:
    """A local runtime on a copy of `plan` that starts nothing by itself (no flow subscribes, no
    schedule, poll or reconciliation). Samples run concurrently; each run's calls carry its own
    correlation id, which picks the stubs answering that sample."""

    def __init__(self, plan: Plan | None) -> None:
        self.plan = plan
        self.runtime: Runtime | None = None
        self._stubs: dict[str, StubTransport] = {}
        self._context: Any = None

    async def start(self) -> None:
        if self.plan is not None:
            quiet = dataclasses.replace(
                self.plan, flows=MappingProxyType({}), subscriptions=MappingProxyType({}),
                webhooks=MappingProxyType({}), apis=MappingProxyType({}),
                reconciliations=MappingProxyType({}))
            transport = httpx.MockTransport(self._handle)
            self._context = local_runtime(quiet, secrets=placeholder_secrets(quiet),
                                          transport=transport, grace=0.1)
            self.runtime = await self._context.__aenter__()

    async def stop(self) -> None:
        if self._context is not None:
            await self._context.__aexit__(None, None, None)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        stubs = self._stubs.get(request.headers.get("x-correlation-id", ""))
        if stubs is None:  # not a sample's call (none is expected)
            return httpx.Response(501, json={"error": "not a previewed run"})
        return stubs.handle(request)

    async def outcomes(self, flow: CompiledFlow, samples: Sequence[Sample],
                       answers: Sequence[Answers]) -> list[dict[str, Any]]:
        """What `flow` does with each sample: {state, reason, calls, emits, steps}, or
        {"not_previewed": why}."""
        assert self.plan is not None and self.runtime is not None
        alone = dataclasses.replace(flow, idempotency_key=None, ordering_key=None)
        runs: list[tuple[str, StubTransport, str | None]] = []
        for sample, responses in zip(samples, answers, strict=True):
            correlation = f"preview-{len(self._stubs)}"
            stubs = self._stubs[correlation] = StubTransport(self.plan, responses)
            meta = EventMeta(id=None, type=f"preview:{flow.name}", source="syncline-preview",
                             correlation_id=correlation)
            acceptance = await self.runtime.ingest(alone, sample.data, meta)
            filtered = acceptance.status == "filtered"
            runs.append((correlation, stubs, None if filtered else acceptance.run_id))
        settled = await self._settle([run_id for _, _, run_id in runs if run_id])
        results: list[dict[str, Any]] = []
        for _, stubs, run_id in runs:
            if run_id is None:
                results.append({"state": "filtered", "reason": None, "calls": {}, "emits": {},
                                "steps": {}})
            elif stubs.unstubbed:
                results.append({"not_previewed": "; ".join(dict.fromkeys(stubs.unstubbed))})
            else:
                steps = await self.runtime.store.get_steps(run_id)
                results.append(_described(flow, settled[run_id], steps, stubs))
        return results

    async def _settle(self, run_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Each run once it is final, parked or waiting to retry (or as it is at the timeout)."""
        assert self.runtime is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SAMPLE_TIMEOUT
        settled: dict[str, dict[str, Any]] = {}
        pending = list(run_ids)
        while pending:
            late = loop.time() > deadline
            for run_id in list(pending):
                record = await self.runtime.store.get_run(run_id)
                assert record is not None
                if record.state in SETTLED or late:
                    settled[run_id] = {"state": record.state,
                                       "reason": record.reason.code if record.reason else None}
                    pending.remove(run_id)
            if pending:
                await asyncio.sleep(0.01)
        return settled


def _described(flow: CompiledFlow, run: Mapping[str, Any], steps: Mapping[str, StepRecord],
               stubs: StubTransport) -> dict[str, Any]:
    """The comparable part of a run: state, reason, requests, emits and map/set outputs (in the
    flow's step order)."""
    steps = {step.id: steps[step.id] for step in flow.steps if step.id in steps}
    calls = {}
    for number, call in enumerate(stubs.logical_calls(), 1):
        path = httpx.URL(call.url).raw_path.decode()
        calls[f"#{number} {call.system}.{call.operation}"] = {
            "request": f"{call.method} {path}", "body": call.body}
    emits = {step_id: _event(s.output) for step_id, s in steps.items()
             if flow.step(step_id).kind == "emit" and s.state == "succeeded"}
    outputs = {step_id: s.output for step_id, s in steps.items()
               if flow.step(step_id).kind in ("map", "set")}
    return {"state": run["state"], "reason": run["reason"], "calls": calls, "emits": emits,
            "steps": outputs}


def _event(emitted: Any) -> Any:
    """An emitted event without what differs on every run (its id and time)."""
    if not isinstance(emitted, dict):
        return emitted
    return {k: v for k, v in emitted.items() if k not in ("id", "time")}


def _compare(source: str, before: dict[str, Any] | None, after: dict[str, Any],
             redactor: Redactor) -> Change:
    for side in (after, before):
        if side is not None and "not_previewed" in side:
            return Change(source, "not_previewed", error=redactor.text(side["not_previewed"]))
    passes = after["state"] in PASSING
    passed = before is None or before["state"] in PASSING
    fields = diff_fields(before if before is not None else {}, after, redactor)
    if not passes:
        kind = "newly_failing" if passed else "still_failing"
        if kind == "still_failing" and not fields:
            kind = "unchanged"
        return Change(source, kind, fields, error=_failure(after))
    if not passed:
        assert before is not None
        return Change(source, "newly_passing", fields, error=_failure(before))
    return Change(source, "changed" if fields else "unchanged", fields)


def _failure(outcome: Mapping[str, Any]) -> str:
    return f"{outcome['state']}" + (f" ({outcome['reason']})" if outcome["reason"] else "")


# -- what answers a sample's calls ------------------------------------------------------------
def _stubs(*flows: CompiledFlow | None) -> dict[str, StubResponse | tuple[StubResponse, ...]]:
    """Per operation, the first stub any test of `flows` (in that order) gives it."""
    stubs: dict[str, StubResponse | tuple[StubResponse, ...]] = {}
    for flow in flows:
        for test in flow.tests if flow else ():
            for operation, stub in test.responses.items():
                stubs.setdefault(operation, stub)
    return stubs


def _recorded(sample: Sample) -> dict[str, StubResponse | tuple[StubResponse, ...]]:
    """The responses recorded in the sample's own run (samples read from a store)."""
    return {operation: tuple(StubResponse(r.get("status", 200), r.get("body"),
                                          MappingProxyType(dict(r.get("headers") or {})))
                             for r in answers)
            for operation, answers in (sample.responses or {}).items() if answers}


# -- what decides a flow's behaviour ----------------------------------------------------------
def _fingerprint(flow: CompiledFlow, documents: Mapping[tuple[str, str, int], Any]) -> str:
    """What decides a flow's behaviour: its definition, its mappings', its Systems'."""
    mapping_docs = mapping_documents(documents)
    mappings = {step.action.mapping.ident: mapping_fingerprint(step.action.mapping, mapping_docs)
                for step in flow.steps if isinstance(step.action, MapAction)}
    systems = {(s.name, s.version): documents.get(("System", s.name, s.version))
               for s in _systems(flow)}
    return json.dumps([documents.get(("Flow", flow.name, flow.version)), mappings,
                       sorted(systems.items())], sort_keys=True, default=str)


def _systems(flow: CompiledFlow) -> Iterable[CompiledSystem]:
    """Every System a step of `flow` may call (its call, route cases, shadow, compensation)."""
    pending: list[Any] = [step.action for step in flow.steps]
    pending += [step.compensate for step in flow.steps if step.compensate is not None]
    while pending:
        item = pending.pop()
        if isinstance(item, CompiledSystem):
            yield item
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            pending += [getattr(item, f.name) for f in dataclasses.fields(item)
                        if f.name in ("system", "route", "shadow", "call", "default", "cases")]
        elif isinstance(item, Mapping):
            pending += list(item.values())
