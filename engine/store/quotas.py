"""A System's call budgets, kept in the store so every replica draws from one budget and an hour's
or a day's count survives a restart (engine/runtime/quota.py leases slices of them).

    quota_usage (system, period, began) -> used     calls granted in that window: the period
                                                    (hour | day) starting at `began`
    quota_bucket (system) -> tokens, updated        the per-second token bucket all replicas
                                                    draw from (refilled by elapsed time)

A lease is one conditional UPDATE in the store's transaction (`used + n <= limit`, or enough
tokens after the refill), so replicas racing for the last calls are settled by the database:
together they never exceed the budget.
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
CREATE TABLE quota_bucket (
    system  text PRIMARY KEY,
    tokens  double precision NOT NULL,
    updated double precision NOT NULL
);
"""

_ENSURE = ("INSERT INTO quota_usage (system, period, began, used) VALUES (%s, %s, %s, 0) "
           "ON CONFLICT DO NOTHING")
_TAKE = ("UPDATE quota_usage SET used = used + %s "
         "WHERE system = %s AND period = %s AND began = %s AND used + %s <= %s")
_FORGET = "DELETE FROM quota_usage WHERE began < %s AND period = %s"
KEEP = {"hour": 2 * 86400.0, "day": 8 * 86400.0}  # how long a window's row is kept for reading
# the bucket's balance after refilling it to `now` (%s: now, now, rate, capacity, capacity), in
# SQL both stores speak (no LEAST/GREATEST in SQLite, no scalar MIN in PostgreSQL)
_REFILLED = ("(CASE WHEN tokens + (CASE WHEN %s > updated THEN %s - updated ELSE 0 END) * %s "
             "< %s THEN tokens + (CASE WHEN %s > updated THEN %s - updated ELSE 0 END) * %s "
             "ELSE %s END)")
_BUCKET = "INSERT INTO quota_bucket (system, tokens, updated) VALUES (%s, %s, %s) " \
          "ON CONFLICT DO NOTHING"
_DRAW = (f"UPDATE quota_bucket SET tokens = {_REFILLED} - %s, "
         "updated = CASE WHEN %s > updated THEN %s ELSE updated END "
         f"WHERE system = %s AND {_REFILLED} >= %s")
_BALANCE = f"SELECT {_REFILLED} FROM quota_bucket WHERE system = %s"


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

    async def draw(self, system: str, rate: float, capacity: float, want: int,
                   now: float) -> float:
        """Take `want` tokens of `system`'s shared bucket (refilled at `rate` a second up to
        `capacity`): 0.0 if taken, else how many seconds until they will be there."""
        refill = (now, now, rate, capacity, now, now, rate, capacity)
        results = await self.store.transact([
            (_BUCKET, (system, capacity, now)),
            (_DRAW, (*refill, want, now, now, system, *refill, want)),
        ])
        if results[1][1] == 1:
            return 0.0
        [(rows, _)] = await self.store.transact([(_BALANCE, (*refill, system))], read_only=True)
        balance = float(rows[0][0]) if rows else 0.0
        return max(0.001, (want - balance) / rate)

    async def used(self, windows: list[tuple[str, str, float]]) -> dict[tuple[str, str], int]:
        """Calls granted so far in each (system, period, began) window."""
        if not windows:
            return {}
        results = await self.store.transact(
            [("SELECT used FROM quota_usage WHERE system = %s AND period = %s AND began = %s", w)
             for w in windows], read_only=True)
        return {(w[0], w[1]): int(rows[0][0]) if rows else 0
                for w, (rows, _) in zip(windows, results, strict=True)}
