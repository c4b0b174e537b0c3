"""The Runs page's search: the store's filters (flow, state, key, correlation id) plus the reason
code and a time window, which the console applies to the store's pages, newest first.

Runs arrive in time order, so `since` ends the scan at the first older run; `reason` and
`until` look at most BUDGET runs per page of results (the page then says how far it looked,
and "Older runs" goes on from there)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.errors import UsageError
from engine.server.audit import parse_since
from engine.server.console.views import STATE_WORDS
from engine.server.console.web import Refused
from engine.server.http import Problem
from engine.store.base import RunQuery

PAGE = 50  # runs a page of results shows (at least, when it can)
BATCH = 100  # runs read from the store at a time while filtering
BUDGET = 5000  # runs looked at for one page of results


@dataclass(frozen=True)
class RunSearch:
    flow: str | None = None
    state: str | None = None
    key: str | None = None
    correlation_id: str | None = None
    reason: str | None = None  # a reason code, as the run's `reason.code`
    since: float | None = None  # created at or after (unix seconds)
    until: float | None = None  # created before
    cursor: str | None = None

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> RunSearch:
        """The search of a query string; Refused (400) naming what is wrong."""
        names = ("flow", "state", "key", "correlation_id", "reason", "cursor")
        given = {k: (params.get(k) or "").strip() or None for k in names}
        state = given["state"]
        if state is not None and state not in STATE_WORDS:
            states = ", ".join(STATE_WORDS)
            raise Refused(400, "That search was not understood",
                          f"There is no state '{state}' (one of {states}).")  # fmt: skip
        cursor = given["cursor"]
        if cursor is not None and not (cursor.isdigit() and len(cursor) < 19):
            raise Refused(400, "That search was not understood",
                          "That 'Older runs' link is broken: start the search again.")  # fmt: skip
        times: dict[str, float | None] = {}
        for name in ("since", "until"):
            text = (params.get(name) or "").strip()
            try:
                times[name] = parse_since(text) if text else None
            except Problem:
                raise Refused(400, "That search was not understood",
                              f"'{text}' is not a time: write it as 2026-12-04T09:30 "
                              "(UTC) or 2026-12-04.") from None  # fmt: skip
        return cls(given["flow"], state, given["key"], given["correlation_id"], given["reason"],
                   times["since"], times["until"], cursor)  # fmt: skip

    @property
    def filtering(self) -> bool:
        """Whether the console filters beyond the store."""
        return bool(self.reason or self.since is not None or self.until is not None)

    def matches(self, run: Any) -> bool:
        if self.reason and (run.reason is None or run.reason.code != self.reason):
            return False
        return self.until is None or run.created_at < self.until

    def form(self, text: Mapping[str, str]) -> dict[str, str]:
        """The filters as the form shows them again (the times as they were typed)."""
        fields = {k: getattr(self, k) or "" for k in ("flow", "state", "key", "correlation_id",
                                                      "reason")}  # fmt: skip
        fields.update({k: (text.get(k) or "").strip() for k in ("since", "until")})
        return fields


async def search(store: Any, s: RunSearch) -> tuple[list[Any], str | None, int]:
    """(run records found newest first, the cursor of older runs or None, runs looked at)."""
    found: list[Any] = []
    cursor, looked = s.cursor, 0
    while True:
        query = RunQuery(flow=s.flow, state=s.state, key=s.key, cursor=cursor,
                         limit=BATCH if s.filtering else PAGE,
                         correlation_id=s.correlation_id)  # fmt: skip
        try:
            batch = await store.list_runs(query)
        except UsageError as exc:
            raise Refused(400, "That search was not understood", str(exc)) from None
        cursor = query.next_cursor(batch)
        looked += len(batch)
        for run in batch:
            if s.since is not None and run.created_at < s.since:
                return found, None, looked  # older runs only from here on
            if s.matches(run):
                found.append(run)
        if not s.filtering or cursor is None or len(found) >= PAGE or looked >= BUDGET:
            return found, cursor, looked
