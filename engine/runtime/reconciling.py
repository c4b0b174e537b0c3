"""Running a Reconciliation: read both sides page by page, pair items by key, compare fields.

    report = await reconcile(recon, calls)         # the report (a JSON object), never raises
    report.mismatches   # [{kind, key, field?, left?, right?}], kind one of KINDS

Pairing: each side's `key` expression is evaluated on each of its items; keys compare as text
(`123` pairs with `"123"`). An item without a key is reported (`unkeyed`) and not paired; a key
that a side lists twice is a `duplicate-left`/`duplicate-right` mismatch (the first one is
paired). Field values compare as JSON values, except numbers: a number compares as a decimal
with a number or a numeric string on the other side (`100`, `100.0` and `"100.00"` agree; two
strings compare as strings, so ids like `"00123"` and `"123"` differ).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from engine.compiler.plan import Plan
from engine.compiler.reconciliation import CompiledReconciliation, CompiledSide
from engine.runtime.calls import Calls
from engine.runtime.pages import ReadProblem, Sleep, read_pages
from engine.runtime.schedules import BUSY
from engine.store.base import Store

log = logging.getLogger("syncline.reconciliations")

LEASE = 300.0  # seconds a tick's `running` result holds it against other processes
KINDS = ("missing-left", "missing-right", "field", "duplicate-left", "duplicate-right")
MAX_LISTED = 1000  # mismatches kept in a report (all are counted)


async def reconcile(
    recon: CompiledReconciliation, calls: Calls, *, sleep: Sleep = asyncio.sleep,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """Run `recon` once and answer its report (a JSON object; see the module docstring):
    `{name, started_at, finished_at, state: ok|mismatch|error, counts: {kind: n}, left, right,
    matched, mismatches, unkeyed, error}`."""
    started = clock()
    report: dict[str, Any] = {
        "name": recon.name, "version": recon.version, "started_at": started,
        "counts": dict.fromkeys(KINDS, 0), "mismatches": [], "unkeyed": [], "error": None,
    }
    try:
        left = await _collect(recon.left, "left", calls, sleep, report)
        right = await _collect(recon.right, "right", calls, sleep, report)
    except ReadProblem as problem:
        report.update(state="error", error=problem.as_dict(), finished_at=clock())
        return report
    matched = 0
    for key, item in left.items():
        other = right.get(key)
        if other is None:
            _add(report, {"kind": "missing-right", "key": key})
            continue
        matched += 1
        for name, on_left, on_right in recon.compare:
            a, b = on_left.search(item), on_right.search(other)
            if not same(a, b):
                _add(report, {"kind": "field", "key": key, "field": name, "left": a, "right": b})
    for key in right.keys() - left.keys():
        _add(report, {"kind": "missing-left", "key": key})
    report.update(
        left=len(left), right=len(right), matched=matched, finished_at=clock(),
        state="mismatch" if any(report["counts"].values()) else "ok",
    )
    return report


async def _collect(
    side: CompiledSide, which: str, calls: Calls, sleep: Sleep, report: dict[str, Any]
) -> dict[str, Any]:
    items: dict[str, Any] = {}

    async def on_page(page: list[Any], response: dict[str, Any]) -> None:
        for item in page:
            key = side.key.search(item) if isinstance(item, dict) else None
            if key is None:
                report["unkeyed"].append({"side": which, "item": item})
                continue
            text = key if isinstance(key, str) else json.dumps(key, sort_keys=True)
            if text in items:
                _add(report, {"kind": f"duplicate-{which}", "key": text})
            else:
                items[text] = item

    await read_pages(calls, side.read, dict(side.query), on_page, sleep=sleep)
    return items


def _add(report: dict[str, Any], mismatch: dict[str, Any]) -> None:
    report["counts"][mismatch["kind"]] += 1
    if len(report["mismatches"]) < MAX_LISTED:
        report["mismatches"].append(mismatch)


def same(left: Any, right: Any) -> bool:
    """Whether two values agree (numbers as decimals; see the module docstring)."""
    a, b = _decimal(left), _decimal(right)
    if a is not None and b is not None and (_is_number(left) or _is_number(right)):
        return a == b
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(same(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(same(x, y) for x, y in zip(left, right, strict=True))
    return bool(type(left) is type(right) and left == right)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _decimal(value: Any) -> Decimal | None:
    if _is_number(value) or isinstance(value, str):
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


class Reconciler:
    """Runs the active plan's Reconciliations (now, or for a schedule tick), stores each result
    and does what `onMismatch` says: emit a CloudEvent (its flows start as for any emitted
    event; the event id names the tick, so a tick emits once), or store the result `parked` with
    the reason code, for a human.

    A tick is claimed in the store before it runs (`Store.claim_reconciliation`): of replicas
    firing the same tick one runs it, and a tick whose process died mid-run (its row `running`
    for longer than `lease` seconds) is claimed again. `emit(type, event_id, data)` publishes an
    event into the runtime."""

    def __init__(
        self,
        store: Store,
        plan: Callable[[], Plan],
        calls: Callable[[Plan], Calls],
        emit: Callable[[str, str, Any], Awaitable[Any]],
        *,
        clock: Callable[[], float],
        lease: float = LEASE,
    ) -> None:
        self._store, self._plan, self._calls, self._emit = store, plan, calls, emit
        self._clock, self.lease = clock, lease

    async def run(
        self, name: str, tick: str | None = None, actor: str = "syncline",
        reason: str | None = None,
    ) -> Any:  # fmt: skip
        """Run `name` now (or for schedule `tick`): its report; None when the tick has a result
        already; BUSY while another process runs it. KeyError: no such Reconciliation. `actor`
        is who the audit entry names (the caller of a run on demand), with its `reason`."""
        plan = self._plan()
        recon = plan.reconciliations[name]
        tick = tick or f"manual:{self._clock():.6f}"
        claim = await self._store.claim_reconciliation(name, tick, self._clock(), self.lease)
        if claim != "claimed":
            return BUSY if claim == "running" else None
        report = await reconcile(recon, self._calls(plan), clock=self._clock)
        report["tick"] = tick
        state = report["state"]
        if state == "mismatch" and recon.emit is not None:
            event_id = f"reconciliation:{name}:{tick}"
            data = {k: report[k] for k in ("name", "tick", "counts", "left", "right", "matched")}
            data["mismatches"] = report["mismatches"][:100]
            await self._emit(recon.emit, event_id, data)
            report["action"] = {"emit": recon.emit, "event_id": event_id}
        elif state == "mismatch" and recon.park is not None:
            state = "parked"
            report["action"] = {"park": recon.park}
        report["state"] = state
        await self._store.finish_reconciliation(name, tick, state, report)
        detail = {"name": name, "tick": tick, "state": state, "counts": report["counts"]}
        if reason:
            detail["note"] = reason  # as an operator action's reason (the audit API's `reason`)
        await self._store.audit(actor, "reconcile", None, detail)
        log.log(logging.INFO if state == "ok" else logging.WARNING,
                "reconciliation %s (%s): %s %s", name, tick, state, report["counts"],
                extra={"event": f"reconciliation.{state}"})
        return report
