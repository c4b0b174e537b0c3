"""`syncline samples export DIR`: the last N accepted events of each flow, from a store, written
as a sample directory (`DIR/<flow>/<event id>.json`) with the redaction list applied, so a
sample set can be committed and `syncline plan --samples DIR` run on it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from engine.gitops.samples import Redactor
from engine.store import RunQuery, Store


async def export_samples(store: Store, flows: Iterable[str], directory: Path, limit: int,
                         redactor: Redactor) -> dict[str, int]:
    """Write each flow's newest `limit` distinct events (newest first); how many per flow."""
    written: dict[str, int] = {}
    for flow in sorted(flows):
        seen: set[str] = set()
        query = RunQuery(flow=flow, limit=min(limit, 500))
        while len(seen) < limit:
            page = await store.list_runs(query)
            for run in page:
                if run.event_id in seen or len(seen) >= limit:
                    continue
                event = await store.get_event(run.event_id)
                if event is None:
                    continue
                seen.add(run.event_id)
                path = directory / flow / f"{_safe(run.event_id)}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(redactor.value(event.data), indent=2,
                                           sort_keys=True, default=str) + "\n")
            cursor = query.next_cursor(page)
            if cursor is None:
                break
            query = RunQuery(flow=flow, limit=query.limit, cursor=cursor)
        written[flow] = len(seen)
    return written


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:120] or "event"
