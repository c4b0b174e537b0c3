"""Operator actions: on runs, resume a parked run (optionally with corrected data), retry a
dead-lettered or failed one, cancel one (compensating its completed steps), replay one's event
as a new run, each one `StateChange` (or accept) in the store, audited there; and the pause
switches of flows and Systems (`switch`).

    await runtime.operations.cancel(run_id, actor="alice", note="duplicate order")
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from engine.errors import StateConflict, UsageError
from engine.runtime.executor import DONE
from engine.runtime.gates import Gates
from engine.runtime.ingest import EventMeta, Ingest
from engine.runtime.logevents import operator_action
from engine.runtime.plans import Plans
from engine.runtime.waiting import require_run
from engine.store.base import CANCELLED, CorrectedData, Reason, RunRecord, StateChange, Store
from engine.store.controls import Kind

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()
CANCELLABLE = ("pending", "waiting", "parked", "dead-lettered")  # and running: a cancel request
EFFECT_KINDS = frozenset({"call", "emit", "publish"})


class Operations:
    """The operator actions of a Runtime (`runtime.operations`); `requeued` hears of every run
    queued again. `actor` is who acts (for the audit log), `note` their reason in words."""

    def __init__(
        self,
        store: Store,
        plans: Plans,
        ingest: Ingest,
        requeued: Callable[[RunRecord], RunRecord],
        gates: Gates,
    ) -> None:
        self.store, self.plans, self.ingest, self.requeued = store, plans, ingest, requeued
        self.gates = gates

    async def resume(
        self, run_id: str, data: Any = MISSING, actor: str = "operator", note: str | None = None
    ) -> RunRecord:
        """Run a parked run again from where it stopped. With corrected `data`, every step that
        wrote nothing downstream runs again on it (calls that succeeded and emits are kept), and
        the calls that run again carry new idempotency keys (a new logical write)."""
        run = await self._expect(run_id, ("parked",), "resume")
        steps = await self.store.get_steps(run_id)
        if data is MISSING:
            reset = [s for s, r in steps.items() if r.state not in DONE]
        else:
            flow = await self.plans.flow_of(run)
            reset = [
                s
                for s, r in steps.items()
                if not (r.state == "succeeded" and flow.step(s).kind in EFFECT_KINDS)
            ]
        labelling = self.plans.active.run_labels.get(run.flow)
        labels = None
        if labelling is not None and data is not MISSING:  # corrected data: labels read again
            kept = {s: r.output for s, r in steps.items() if r.state in DONE and s not in reset}
            labels = labelling.resolve(run.flow, data, kept)
        change = StateChange(
            "pending",
            expect=("parked",),
            reset_steps=tuple(reset),
            data=None if data is MISSING else CorrectedData(data),
            actor=actor,
            action="resume",
            note=note,
            labels=labels,
        )
        record = self.requeued(await self.store.set_run_state(run_id, change))
        operator_action("resume", actor, record, corrected_data=data is not MISSING, note=note)
        return record

    async def retry(
        self, run_id: str, actor: str = "operator", note: str | None = None
    ) -> RunRecord:
        """Run a dead-lettered (or failed) run again; the failed step starts a fresh retry budget
        with the same idempotency key, so a write that did land is not applied twice."""
        expect = ("dead-lettered", "failed")
        await self._expect(run_id, expect, "retry")
        steps = await self.store.get_steps(run_id)
        reset = tuple(s for s, r in steps.items() if r.state not in DONE)
        change = StateChange(
            "pending", expect, reset_steps=reset, actor=actor, action="retry", note=note
        )
        record = self.requeued(await self.store.set_run_state(run_id, change))
        operator_action("retry", actor, record, note=note)
        return record

    async def cancel(
        self, run_id: str, actor: str = "operator", note: str | None = None
    ) -> RunRecord:
        """Stop a run for good, compensating its completed steps; it ends `cancelled`.

        A run that is not executing (pending, waiting for a retry, parked, dead-lettered) is
        queued with reason CANCELLED at once, and a worker compensates it. A running run gets a
        cancel request in the store (still `running`, reason CANCELLED): its worker finishes and
        checkpoints the steps in flight, starts no other, then compensates. Answers the run as
        stored right after the request."""
        reason = Reason(CANCELLED, None, f"cancelled by {actor}")
        for _ in range(3):  # the run may change state between reading and writing it
            run = await self._expect(run_id, (*CANCELLABLE, "running"), "cancel")
            running = run.state == "running"
            change = StateChange(
                "running" if running else "pending",
                expect=("running",) if running else CANCELLABLE,
                reason=reason,
                actor=actor,
                action="cancel",
                note=note,
            )
            try:
                record = await self.store.set_run_state(run_id, change)
            except StateConflict:  # it moved between reading and writing: look again
                continue
            operator_action("cancel", actor, record, note=note)
            return record if running else self.requeued(record)
        raise UsageError(f"run '{run_id}' keeps changing state; try cancel again")

    async def replay(
        self, run_id: str, actor: str = "operator", note: str | None = None
    ) -> RunRecord:
        """A new run of the old run's event under the current plan, linked by `replay_of`."""
        old = await require_run(self.store, run_id)
        event = await self.store.get_event(old.event_id)
        flow = self.plans.active.flows.get(old.flow)
        if event is None or flow is None:
            raise UsageError(
                f"run '{run_id}' cannot be replayed: "
                f"{'its event is gone' if event is None else 'its flow is inactive'}"
            )
        meta = EventMeta(
            event.id,
            event.type,
            event.source,
            correlation_id=old.correlation_id,
            traceparent=old.traceparent,
        )
        new = self.ingest.new_run(flow, event, meta, replay_of=old.id)
        [acceptance] = await self.store.accept(event, [new])
        detail = {"new_run": acceptance.run_id, **({"note": note} if note else {})}
        await self.store.audit(actor, "replay", old.id, detail)
        self.ingest.accepted([acceptance])
        operator_action("replay", actor, old, new_run_id=acceptance.run_id, note=note)
        return await require_run(self.store, acceptance.run_id)

    async def switch(
        self, kind: str, name: str, action: str, reason: str, actor: str = "operator"
    ) -> dict[str, Any]:
        """`pause` or `resume` a `flow` (deliveries are still accepted; no run starts) or a
        `system` (no call is sent; runs needing it wait), for every replica sharing the store;
        audited. Answers `{kind, name, paused, reason, actor, at}` (of the pause lifted, for a
        resume). UsageError for an unknown name, StateConflict when nothing would change."""
        if kind not in ("flow", "system") or action not in ("pause", "resume"):
            raise UsageError(f"cannot {action} a {kind}")
        which = cast(Kind, kind)
        plan = self.plans.active
        names = set(plan.flows) if which == "flow" else {n for n, _ in plan.systems}
        if name not in names:
            raise UsageError(f"no {kind} '{name}' (the {kind}s: {', '.join(sorted(names))})")
        if action == "pause":
            found = await self.gates.pause(which, name, reason, actor)
        else:
            found = await self.gates.resume(which, name, reason, actor)
        return {"kind": kind, "name": name, "paused": action == "pause", **found.as_dict()}

    async def _expect(self, run_id: str, states: tuple[str, ...], action: str) -> RunRecord:
        run = await require_run(self.store, run_id)
        if run.state not in states:
            allowed = " or ".join(states)
            raise UsageError(f"run '{run_id}' is {run.state}; {action} needs a {allowed} run")
        return run
