"""Echo fingerprints kept in the store: the writes Syncline made to each record, and what it
last knew of the record, shared by every replica (see engine/runtime/echo.py for the rules).

Two tables, the same on SQLite and PostgreSQL (MIGRATION, appended to each store's migrations):

    echo_writes   (system, record_type, record_id, run_id, step_id, written_at) -> expires_at,
                  fields              one row per write sent (stored before the request goes
                                      out: a write whose answer was lost still counts)
    echo_records  (system, record_type, record_id) -> fields, seen_at, expires_at
                                      the record as the last delivery about it showed it, while
                                      a fingerprint of it lives

`fields` is JSON: a list of [path, value] pairs, a path being the list of field names. Expired
rows are deleted whenever a write is fingerprinted.

A write whose fingerprint is completed from its answer (`record` reading `response`) is stored
with `answer_by` (ANSWERS_MIGRATION): until then its answer is awaited, and a delivery about the
record waits for it rather than being compared with the request alone. Its row then takes the
answer's fields (and, for a create, the record id: until the answer it has none, `''`), and
`answer_by` goes back to NULL.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.store.base import Store

MIGRATION = """
CREATE TABLE echo_writes (
    system       text NOT NULL,
    record_type  text NOT NULL,
    record_id    text NOT NULL,
    run_id       text NOT NULL,
    step_id      text NOT NULL,
    written_at   double precision NOT NULL,
    expires_at   double precision NOT NULL,
    fields       text NOT NULL
);
CREATE INDEX echo_writes_record ON echo_writes (system, record_type, record_id, expires_at);
CREATE INDEX echo_writes_expiry ON echo_writes (expires_at);
CREATE TABLE echo_records (
    system       text NOT NULL,
    record_type  text NOT NULL,
    record_id    text NOT NULL,
    fields       text NOT NULL,
    seen_at      double precision NOT NULL,
    expires_at   double precision NOT NULL,
    PRIMARY KEY (system, record_type, record_id)
);
CREATE INDEX echo_records_expiry ON echo_records (expires_at);
"""

ANSWERS_MIGRATION = "ALTER TABLE echo_writes ADD COLUMN answer_by double precision"

CREATING = ""  # the record id of a create's write until its answer names the record

Path = tuple[str, ...]
Fields = dict[Path, Any]  # a record flattened: field path -> value (objects are followed)


@dataclass(frozen=True)
class RecordKey:
    """A record in a System."""

    system: str
    type: str
    id: str


@dataclass(frozen=True)
class Write:
    """One write Syncline sent to a record (its fingerprint)."""

    run_id: str
    step_id: str
    written_at: float
    expires_at: float
    fields: Fields  # the values it wrote
    answer_by: float | None = None  # its answer completes it, awaited until then (else None)


@dataclass(frozen=True)
class Known:
    """What Syncline knows of a record: its live writes, oldest first, and the record as the
    last delivery showed it (None: no delivery since a fingerprint lived)."""

    writes: tuple[Write, ...]
    seen: Fields | None
    seen_at: float
    awaiting: float | None = None  # an answer that may complete what is known is due by then


def encode(fields: Fields) -> str:
    return json.dumps([[list(path), value] for path, value in fields.items()],
                      separators=(",", ":"), default=str)


def decode(text: str) -> Fields:
    return {tuple(path): value for path, value in json.loads(text)}


_CHUNK = 500  # record ids per IN list


class Echoes:
    """The fingerprint operations on a store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def fingerprint(self, key: RecordKey, write: Write) -> None:
        """Store a write before it is sent; drop the fingerprints that have expired."""
        await self.store.transact([
            ("DELETE FROM echo_writes WHERE expires_at <= %s", (write.written_at,)),
            ("DELETE FROM echo_records WHERE expires_at <= %s", (write.written_at,)),
            ("INSERT INTO echo_writes (system, record_type, record_id, run_id, step_id, "
             "written_at, expires_at, fields, answer_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, "
             "%s)", (key.system, key.type, key.id, write.run_id, write.step_id,
                     write.written_at, write.expires_at, encode(write.fields), write.answer_by)),
        ])

    async def answered(self, key: RecordKey, write: Write, record_id: str | None,
                       fields: Fields | None) -> None:
        """Complete a write stored awaiting its answer: the record's id (a create's) and the
        fields as the System holds them; with no id for a create, the write is forgotten (it
        names no record). None keeps what is stored and stops awaiting."""
        row = ("system = %s AND record_type = %s AND record_id = %s AND run_id = %s AND "
               "step_id = %s AND written_at = %s")
        where = (key.system, key.type, key.id, write.run_id, write.step_id, write.written_at)
        if key.id == CREATING and record_id is None:
            await self.store.transact([(f"DELETE FROM echo_writes WHERE {row}", where)])
            return
        text = encode(fields) if fields is not None else encode(write.fields)
        await self.store.transact([
            (f"UPDATE echo_writes SET record_id = %s, fields = %s, answer_by = NULL WHERE {row}",
             (record_id or key.id, text, *where)),
        ])

    async def lookup(self, keys: Sequence[RecordKey], now: float) -> dict[RecordKey, Known]:
        """What is known of those of `keys` that have a live fingerprint or may get one from an
        awaited answer (the others, the common case, are absent): one read for all of them,
        nothing written. A create of the type awaiting its answer may be any of its records."""
        groups: dict[tuple[str, str], list[str]] = {}
        for key in keys:
            groups.setdefault((key.system, key.type), [CREATING]).append(key.id)
        chunks = [(system, kind, ids[i:i + _CHUNK]) for (system, kind), ids in groups.items()
                  for i in range(0, len(ids), _CHUNK)]
        statements = []
        for system, kind, chunk in chunks:
            where = (f"system = %s AND record_type = %s AND expires_at > %s AND record_id IN "
                     f"({', '.join(['%s'] * len(chunk))})")
            params = (system, kind, now, *chunk)
            statements += [
                ("SELECT record_id, run_id, step_id, written_at, expires_at, fields, answer_by "
                 f"FROM echo_writes WHERE {where} ORDER BY written_at", params),
                (f"SELECT record_id, fields, seen_at FROM echo_records WHERE {where}", params),
            ]
        results = await self.store.transact(statements, read_only=True)
        by_key: dict[RecordKey, list[Write]] = {}
        states: dict[RecordKey, tuple[Fields, float]] = {}
        creating: dict[tuple[str, str], float] = {}  # (system, type) -> a create's answer due
        for n, (system, kind, _) in enumerate(chunks):
            (writes, _), (seen, _) = results[2 * n], results[2 * n + 1]
            for ident, run, step, written, expires, fields, answer_by in writes:
                due = None if answer_by is None or answer_by <= now else float(answer_by)
                if ident == CREATING:
                    if due is not None:
                        creating[system, kind] = max(due, creating.get((system, kind), due))
                    continue
                by_key.setdefault(RecordKey(system, kind, ident), []).append(
                    Write(run, step, written, expires, decode(fields), due))
            for ident, fields, at in seen:
                states[RecordKey(system, kind, ident)] = (decode(fields), float(at))
        if creating:  # rare: any record of the type may be the one a create is writing
            by_key.update({k: [] for k in keys if (k.system, k.type) in creating
                           and k not in by_key})
        found: dict[RecordKey, Known] = {}
        for key, live in by_key.items():
            dues = [w.answer_by for w in live if w.answer_by is not None]
            if (key.system, key.type) in creating:
                dues.append(creating[key.system, key.type])
            state, at = states.get(key, (None, 0.0))
            found[key] = Known(tuple(live), state, at, max(dues) if dues else None)
        return found

    async def seen(self, key: RecordKey, fields: Fields, now: float, expires_at: float) -> None:
        """Remember the record as a delivery showed it (while its fingerprints live)."""
        await self.store.transact([
            ("INSERT INTO echo_records (system, record_type, record_id, fields, seen_at, "
             "expires_at) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (system, record_type, "
             "record_id) DO UPDATE SET fields = excluded.fields, seen_at = excluded.seen_at, "
             "expires_at = excluded.expires_at",
             (key.system, key.type, key.id, encode(fields), now, expires_at)),
        ])
