"""The audit trail's hash chain, and its SQL for SQLite and PostgreSQL.

Every entry holds `hash = sha256(previous entry's hash + canonical content)` (hex), the first
one chaining from GENESIS. The canonical content is the JSON array `[at, actor, action, run_id,
detail]`, with `detail` as the JSON text stored. Changing an entry breaks its own hash;
removing one breaks the next entry's (it was computed from the removed hash). `verify` names the
first entry that does not hold. Removing the newest entries leaves a shorter valid chain: record
the head hash (`syncline audit verify` prints it) where the database's users cannot write, and
compare.

Appends serialize on the chain's head: on SQLite every write transaction holds the database's
write lock already; on PostgreSQL an append locks the audit table against other appends
(SHARE ROW EXCLUSIVE conflicts with itself, not with readers) until its transaction ends, so
replicas appending at once still make one chain.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64
COLUMNS = "seq, at, actor, action, run_id, detail, hash"
INSERT = (
    "INSERT INTO audit (at, actor, action, run_id, detail, hash) "
    "VALUES ({0}, {0}, {0}, {0}, {0}, {0})"
)
LAST_HASH = "SELECT hash FROM audit ORDER BY seq DESC LIMIT 1"
# Schema migrations appending to each store's MIGRATIONS.
SQLITE_MIGRATION = "ALTER TABLE audit ADD COLUMN hash TEXT;"
POSTGRES_MIGRATION = "ALTER TABLE audit ADD COLUMN hash text;"


def chain_hash(
    previous: str, at: float, actor: str, action: str, run_id: str | None, detail: str
) -> str:
    """The hash an entry with this content holds after an entry holding `previous`."""
    content = json.dumps([at, actor, action, run_id, detail], ensure_ascii=False)
    return hashlib.sha256((previous + content).encode()).hexdigest()


def append_sqlite(
    conn: sqlite3.Connection, at: float, actor: str, action: str, run_id: str | None, detail: str
) -> None:
    """Append an entry inside the caller's write transaction."""
    row = conn.execute(LAST_HASH).fetchone()
    digest = chain_hash(_head(row), at, actor, action, run_id, detail)
    conn.execute(INSERT.format("?"), (at, actor, action, run_id, detail, digest))


async def append_postgres(
    conn: Any, at: float, actor: str, action: str, run_id: str | None, detail: str
) -> None:
    """Append an entry inside the caller's transaction (which then holds the chain's lock)."""
    await conn.execute("LOCK TABLE audit IN SHARE ROW EXCLUSIVE MODE")
    row = await (await conn.execute(LAST_HASH)).fetchone()
    digest = chain_hash(_head(row), at, actor, action, run_id, detail)
    await conn.execute(INSERT.format("%s"), (at, actor, action, run_id, detail, digest))


def _head(row: Sequence[Any] | None) -> str:
    return GENESIS if row is None or row[0] is None else str(row[0])


@dataclass(frozen=True)
class AuditQuery:
    """Which audit entries a listing answers, newest first."""

    run_id: str | None = None  # only entries about this run
    actor: str | None = None  # only entries by this actor
    action: str | None = None  # only this action
    since: float | None = None  # only entries at or after this time (unix seconds)
    before_seq: int | None = None  # the cursor: entries older than this one
    limit: int = 100


def select(query: AuditQuery, mark: str) -> tuple[str, list[Any]]:
    """The SELECT of `query`'s entries (placeholders `mark`) and its parameters."""
    where, params = [], []
    for column, value in (
        ("run_id = ", query.run_id),
        ("actor = ", query.actor),
        ("action = ", query.action),
        ("at >= ", query.since),
        ("seq < ", query.before_seq),
    ):
        if value is not None:
            where.append(column + mark)
            params.append(value)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    sql = f"SELECT {COLUMNS} FROM audit {clause} ORDER BY seq DESC LIMIT {mark}"
    return sql, [*params, query.limit]


def chain_page(mark: str) -> str:
    """The SELECT of a page of entries in chain order: parameters (after_seq, limit)."""
    return f"SELECT {COLUMNS} FROM audit WHERE seq > {mark} ORDER BY seq LIMIT {mark}"


def entry(row: Sequence[Any]) -> dict[str, Any]:
    """``{seq, at, actor, action, run_id, detail, hash}`` from a row of COLUMNS."""
    seq, at, actor, action, run_id, detail, digest = row
    return {"seq": seq, "at": at, "actor": actor, "action": action, "run_id": run_id,
            "detail": json.loads(detail), "hash": digest}  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    """What `verify` found."""

    checked: int  # entries checked
    head: str  # the hash of the newest entry (GENESIS for an empty trail)
    broken: int | None = None  # seq of the first entry that does not hold
    problem: str | None = None  # why, in words


class Verifier:
    """Checks rows of COLUMNS in chain order, page after page (`feed`), then `verdict()`."""

    def __init__(self) -> None:
        self.head = GENESIS
        self.checked = 0
        self.last_seq = 0
        self.broken: tuple[int, str] | None = None

    def feed(self, rows: Iterable[Sequence[Any]]) -> None:
        for seq, at, actor, action, run_id, detail, digest in rows:
            self.last_seq = seq
            if self.broken is not None:
                continue
            self.checked += 1
            if digest is None:
                problem = "it has no hash"
            elif digest != chain_hash(self.head, at, actor, action, run_id, detail):
                problem = (
                    "its hash does not match its content and the entry before it "
                    "(this entry was altered, or one before it was removed)"
                )
            else:
                self.head = digest
                continue
            self.broken = (seq, problem)

    def verdict(self) -> Verdict:
        if self.broken is None:
            return Verdict(self.checked, self.head)
        return Verdict(self.checked, self.head, *self.broken)


async def verify(store: Any, page: int = 1000) -> Verdict:
    """Check the whole chain of `store` (a Store), reading it `page` entries at a time."""
    verifier = Verifier()
    while True:
        rows = await store.audit_chain(verifier.last_seq, page)
        verifier.feed(rows)
        if len(rows) < page:
            return verifier.verdict()
