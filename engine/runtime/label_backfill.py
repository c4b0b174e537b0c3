"""The open runs counted under a label set new to the store, when a plan that has it becomes
active (the store side, and why it is safe to run twice at once: engine/store/label_backfill.py).

Without it a data label would count only the runs written after its Metric was deployed: a run
parked the day before stays out of the gauge until an operator acts on it.
"""

from __future__ import annotations

import logging

from engine.compiler.plan import Plan
from engine.errors import StoreError
from engine.store.base import Store
from engine.store.label_backfill import PAGE

log = logging.getLogger("syncline.metrics")


async def backfill_labels(store: Store, plan: Plan, page: int = PAGE) -> int:
    """Resolve and write the labels of the open runs of each set still to backfill, a page at a
    time; the number of runs written. A set `plan` does not have (another replica's newer
    plan) is left to a process that has it. A store error stops a set where it is (its cursor
    is stored: the next start or reload goes on from there), never the start or reload."""
    written = 0
    for name, after in await store.label_backfills():
        flows = sorted(flow for flow, labels in plan.run_labels.items()
                       if any(s.name == name for s in labels.sets))
        try:
            written += await _backfill(store, plan, name, flows, after, page)
        except StoreError:
            log.exception("metric labels: backfilling label set %s stopped; the next start or "
                          "reload goes on", name, extra={"event": "metrics.backfill-failed"})
    if written:
        log.info("metric labels: %d open runs counted under new labels", written,
                 extra={"event": "metrics.backfill", "runs": written})
    return written


async def _backfill(store: Store, plan: Plan, name: str, flows: list[str], after: int,
                    page: int) -> int:
    written, done = 0, not flows
    while not done:
        runs = await store.open_runs(flows, after, page)
        found = [(run_id, seen, plan.run_labels[flow].resolve(flow, data, outputs))
                 for run_id, _, flow, seen, data, outputs in runs]
        after, done = (runs[-1][1] if runs else after), len(runs) < page
        written += await store.relabel(name, found, after, done)
    return written
