"""Operating switches kept in the store: paused flows and Systems, and open circuit breakers.

Every replica reads them from the store (`Controls.snapshot`), so a pause or an open circuit
holds for all of them and survives a restart. The state is two small tables, the same on SQLite
and PostgreSQL (MIGRATION, appended to each store's migrations):

    switches (kind, name) -> reason, actor, at     a row: that flow or System is paused
    circuits (system)     -> state, until, opened_at
                             open:      no calls until `until`, then one probe may go
                             half-open: a probe is out; `until` ends its lease (another may go)
                             no row:    closed

Each operation is a few statements run in one transaction through `Store.transact`, so the
decisions that must be made once among replicas (who opens a circuit, who sends the probe,
whether a run is still held when a flow resumes) are settled by the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from engine.store.base import Reason, Store
from engine.store.rows import reason_json

Kind = Literal["flow", "system"]
# Reason codes of runs held back by a switch (state `waiting`, no attempt spent).
FLOW_PAUSED = "FLOW_PAUSED"
SYSTEM_PAUSED = "SYSTEM_PAUSED"
CIRCUIT_OPEN = "CIRCUIT_OPEN"
QUOTA = "QUOTA"  # a budget of the System is used up (engine/runtime/quota.py)
HELD = frozenset({FLOW_PAUSED, SYSTEM_PAUSED, CIRCUIT_OPEN, QUOTA})

MIGRATION = """
CREATE TABLE switches (
    kind    text NOT NULL,
    name    text NOT NULL,
    reason  text NOT NULL,
    actor   text NOT NULL,
    at      double precision NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE circuits (
    system      text PRIMARY KEY,
    state       text NOT NULL,
    until       double precision NOT NULL,
    opened_at   double precision NOT NULL
);
"""

Statement = tuple[str, tuple[Any, ...]]


@dataclass(frozen=True)
class Switch:
    """A paused flow or System."""

    kind: Kind
    name: str
    reason: str  # the operator's words
    actor: str  # who paused it
    at: float  # when (unix seconds)

    def as_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "actor": self.actor, "at": self.at}


@dataclass(frozen=True)
class Circuit:
    """A System's breaker that is not closed."""

    system: str
    state: Literal["open", "half-open"]
    until: float  # open: when a probe may go; half-open: when the probe's lease ends
    opened_at: float


def _held_pattern(code: str) -> str:
    """A LIKE pattern for a stored reason (engine.store.rows.reason_json) with this code."""
    text = reason_json(Reason(code, None, ""))
    assert text is not None
    return text.split(",", 1)[0] + ",%"


class Controls:
    """The switch and circuit operations on a store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def snapshot(self) -> tuple[list[Switch], list[Circuit]]:
        """Every paused flow and System, and every circuit that is not closed."""
        (switches, _), (circuits, _) = await self.store.transact(
            [
                ("SELECT kind, name, reason, actor, at FROM switches ORDER BY kind, name", ()),
                ("SELECT system, state, until, opened_at FROM circuits ORDER BY system", ()),
            ],
            read_only=True,
        )
        return [Switch(*row) for row in switches], [Circuit(*row) for row in circuits]

    async def pause(self, switch: Switch) -> Switch | None:
        """Pause; None if done, else the switch already in place (then nothing changed)."""
        (_, inserted), (rows, _) = await self.store.transact(
            [
                (
                    "INSERT INTO switches (kind, name, reason, actor, at) VALUES (%s, %s, %s, %s, "
                    "%s) ON CONFLICT (kind, name) DO NOTHING",
                    (switch.kind, switch.name, switch.reason, switch.actor, switch.at),
                ),
                (
                    "SELECT kind, name, reason, actor, at FROM switches WHERE kind = %s AND "
                    "name = %s",
                    (switch.kind, switch.name),
                ),
            ]
        )
        return None if inserted == 1 else Switch(*rows[0])

    async def resume(self, kind: Kind, name: str, now: float) -> Switch | None:
        """Lift a pause and make the runs it held due now (they are claimed in arrival order);
        the switch that was lifted, or None if it was not paused (then nothing changed)."""
        if kind == "flow":
            wake: Statement = (
                "UPDATE runs SET next_attempt_at = %s WHERE state = 'waiting' AND flow = %s "
                "AND reason LIKE %s",
                (now, name, _held_pattern(FLOW_PAUSED)),
            )
        else:  # runs held for another System still paused are held again when claimed
            wake = (
                "UPDATE runs SET next_attempt_at = %s WHERE state = 'waiting' AND reason LIKE %s",
                (now, _held_pattern(SYSTEM_PAUSED)),
            )
        (rows, _), _woken = await self.store.transact(
            [
                (
                    "DELETE FROM switches WHERE kind = %s AND name = %s "
                    "RETURNING kind, name, reason, actor, at",
                    (kind, name),
                ),
                wake,
            ],
            only_if_first=True,
        )
        return Switch(*rows[0]) if rows else None

    async def wake(self, run_id: str, now: float) -> None:
        """Make a run held for a paused System due now: the pause was lifted while the run was
        being held (still `running`, so the resume's own wake did not reach it)."""
        await self.store.transact([(
            "UPDATE runs SET next_attempt_at = %s WHERE id = %s AND state = 'waiting' "
            "AND reason LIKE %s",
            (now, run_id, _held_pattern(SYSTEM_PAUSED)),
        )])

    async def hold(self, run_id: str, reason: Reason, until: float, now: float) -> bool:
        """Put a claimed run of a paused flow back to `waiting` with `reason` until `until`, if
        its flow is still paused: False if the pause was lifted meanwhile (then run it). Checked
        and written in one transaction, so a resume never misses a run held at that moment."""
        [(_, held)] = await self.store.transact(
            [
                (
                    "UPDATE runs SET state = 'waiting', reason = %s, next_attempt_at = %s, "
                    "updated_at = %s, lease_owner = NULL, lease_until = NULL "
                    "WHERE id = %s AND state = 'running' AND EXISTS (SELECT 1 FROM switches "
                    "WHERE kind = 'flow' AND name = runs.flow)",
                    (reason_json(reason), until, now, run_id),
                )
            ]
        )
        return held == 1

    # circuits --------------------------------------------------------------------------------
    async def open_circuit(self, system: str, until: float, now: float) -> bool:
        """Open a closed circuit until `until`: True if this call opened it."""
        [(_, opened)] = await self.store.transact(
            [
                (
                    "INSERT INTO circuits (system, state, until, opened_at) "
                    "VALUES (%s, 'open', %s, %s) ON CONFLICT (system) DO NOTHING",
                    (system, until, now),
                )
            ]
        )
        return opened == 1

    async def claim_probe(self, system: str, lease_until: float, now: float) -> bool:
        """Take the one probe of an open circuit whose time has come (or whose last probe's
        lease ended): True if this caller sends it."""
        [(_, claimed)] = await self.store.transact(
            [
                (
                    "UPDATE circuits SET state = 'half-open', until = %s "
                    "WHERE system = %s AND until <= %s",
                    (lease_until, system, now),
                )
            ]
        )
        return claimed == 1

    async def probe_done(self, system: str, ok: bool, until: float, now: float) -> None:
        """The probe's outcome: success closes the circuit, failure opens it until `until`."""
        if ok:
            statement: Statement = ("DELETE FROM circuits WHERE system = %s", (system,))
        else:
            statement = (
                "UPDATE circuits SET state = 'open', until = %s, opened_at = %s WHERE system = %s",
                (until, now, system),
            )
        await self.store.transact([statement])


def run_statements(
    conn: Any, statements: Sequence[Statement], only_if_first: bool
) -> list[tuple[list[tuple[Any, ...]], int]]:
    """SQLite's side of `Store.transact` (a writer job): each statement's rows and rowcount;
    with `only_if_first`, the rest run only if the first changed or returned something."""
    results: list[tuple[list[tuple[Any, ...]], int]] = []
    for n, (sql, params) in enumerate(statements):
        if n and only_if_first and not (results[0][0] or results[0][1] > 0):
            results.append(([], 0))
            continue
        cursor = conn.execute(sql.replace("%s", "?"), params)
        rows = [tuple(row) for row in cursor.fetchall()] if cursor.description else []
        results.append((rows, cursor.rowcount))
    return results


async def run_statements_async(
    conn: Any, statements: Sequence[Statement], only_if_first: bool
) -> list[tuple[list[tuple[Any, ...]], int]]:
    """PostgreSQL's side of `Store.transact` (inside its transaction), as `run_statements`."""
    results: list[tuple[list[tuple[Any, ...]], int]] = []
    for n, (sql, params) in enumerate(statements):
        if n and only_if_first and not (results[0][0] or results[0][1] > 0):
            results.append(([], 0))
            continue
        cursor = await conn.execute(sql, params)
        rows = [tuple(row) for row in await cursor.fetchall()] if cursor.description else []
        results.append((rows, cursor.rowcount))
    return results
