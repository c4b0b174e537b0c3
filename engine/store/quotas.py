"""A System's call budgets, kept in the store so every replica draws from one budget and an hour's
or a day's count survives a restart (engine/runtime/quota.py leases slices of them).

    quota_usage (system, period, began) -> used     calls granted in that window: the period
                                                    (second | hour | day) starting at `began`

A lease is one conditional UPDATE in the store's transaction (`used + n <= limit`), so replicas
racing for the last calls of a window are settled by the database: together they never exceed it.
"""

from __future__ import annotations

from engine.store.base import Store

MIGRATION = """
CREATE TABLE quota_usage (
    system  text NOT NULL,
    period  text NOT NULL,
    began   double precision NOT NULL,
    used    bigint NOT NULL,
    PRIMARY KEY (system, period, began)
);
"""

_ENSURE = ("INSERT INTO quota_usage (system, period, began, used) VALUES (%s, %s, %s, 0) "
           "ON CONFLICT DO NOTHING")
_TAKE = ("UPDATE quota_usage SET used = used + %s "
         "WHERE system = %s AND period = %s AND began = %s AND used + %s <= %s")
_FORGET = "DELETE FROM quota_usage WHERE began < %s AND period = %s"
KEEP = {"second": 120.0, "hour": 2 * 86400.0, "day": 8 * 86400.0}  # rows kept for reading


class QuotaLedger:
    """Leases on the budgets of `store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._leases = 0

    async def lease(self, system: str, period: str, began: float, want: int, limit: int) -> int:
        """Up to `want` calls of the window (`period` from `began`) of `system`, whose budget is
        `limit`: `want`, else 1 if one is left, else 0."""
        key = (system, period, began)
        self._leases += 1
        statements = [(_ENSURE, key), (_TAKE, (want, *key, want, limit))]
        if self._leases % 200 == 0:  # now and then: forget windows nobody reads any more
            statements.append((_FORGET, (began - KEEP[period], period)))
        results = await self.store.transact(statements)
        if results[1][1] == 1:
            return want
        if want > 1:
            [(_, taken)] = await self.store.transact([(_TAKE, (1, *key, 1, limit))])
            return 1 if taken == 1 else 0
        return 0

    async def used(self, windows: list[tuple[str, str, float]]) -> dict[tuple[str, str], int]:
        """Calls granted so far in each (system, period, began) window."""
        if not windows:
            return {}
        results = await self.store.transact(
            [("SELECT used FROM quota_usage WHERE system = %s AND period = %s AND began = %s", w)
             for w in windows], read_only=True)
        return {(w[0], w[1]): int(rows[0][0]) if rows else 0
                for w, (rows, _) in zip(windows, results, strict=True)}
