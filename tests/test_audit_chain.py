"""The audit trail's hash chain on both stores: intact, altered, removed, and appended to by
replicas at once. Tampering goes through the database directly, as an intruder would (dropping
the append-only triggers first)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import psycopg
import pytest

from engine.store import SQLiteStore
from engine.store.audit import GENESIS, AuditQuery, verify
from engine.store.postgres import PostgresStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "syncline.db")
    return "postgres", request.getfixturevalue("postgres_url")


def open_target(target: tuple[str, str]) -> SQLiteStore | PostgresStore:
    kind, where = target
    return SQLiteStore(where) if kind == "sqlite" else PostgresStore(where)


def tamper(target: tuple[str, str], *statements: str) -> None:
    """Run SQL on the store's database with the append-only triggers dropped."""
    kind, where = target
    if kind == "sqlite":
        conn = sqlite3.connect(where, isolation_level=None)
        try:
            conn.execute("DROP TRIGGER audit_no_update")
            conn.execute("DROP TRIGGER audit_no_delete")
            for sql in statements:
                conn.execute(sql)
        finally:
            conn.close()
        return
    with psycopg.connect(where, autocommit=True) as conn:
        conn.execute("DROP TRIGGER audit_append_only ON audit")
        for sql in statements:
            conn.execute(sql)  # type: ignore[arg-type]


async def fill(target: tuple[str, str], n: int = 5) -> None:
    async with open_target(target) as store:
        for i in range(n):
            await store.audit("alice", "resume", f"r{i}", {"note": f"fix {i}", "i": i})


async def test_an_intact_chain_verifies_and_each_entry_links_to_the_one_before(target) -> None:
    await fill(target)
    async with open_target(target) as store:
        verdict = await verify(store, page=2)  # pages join up
        entries = await store.audit_log(AuditQuery())
    assert (verdict.checked, verdict.broken) == (5, None)
    assert verdict.head == entries[0]["hash"] != GENESIS
    assert len({e["hash"] for e in entries}) == 5


@pytest.mark.parametrize(
    ("tampering", "broken", "words"),
    [
        ("UPDATE audit SET actor = 'mallory' WHERE seq = 3", 3, "altered"),
        ("DELETE FROM audit WHERE seq = 2", 3, "removed"),  # the next entry no longer links
        ("UPDATE audit SET hash = NULL WHERE seq = 4", 4, "it has no hash"),
    ],
)
async def test_tampering_names_the_first_broken_entry(target, tampering, broken, words) -> None:
    await fill(target)
    tamper(target, tampering)
    async with open_target(target) as store:
        verdict = await verify(store)
    assert verdict.broken == broken and words in (verdict.problem or "")


async def test_filters_newest_first(target) -> None:
    await fill(target)
    async with open_target(target) as store:
        await store.audit("bob", "cancel", "r1", {})
        by_bob = await store.audit_log(AuditQuery(actor="bob"))
        of_r1 = await store.audit_log(AuditQuery(run_id="r1"))
        resumes = await store.audit_log(AuditQuery(action="resume", limit=2))
        older = await store.audit_log(AuditQuery(before_seq=3))
        later = await store.audit_log(AuditQuery(since=by_bob[0]["at"]))
    assert [e["actor"] for e in by_bob] == ["bob"]
    assert [(e["actor"], e["action"]) for e in of_r1] == [("bob", "cancel"), ("alice", "resume")]
    assert [e["run_id"] for e in resumes] == ["r4", "r3"]
    assert [e["seq"] for e in older] == [2, 1]
    assert [e["actor"] for e in later] == ["bob"]


async def test_replicas_appending_at_once_keep_one_chain(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as a, PostgresStore(postgres_url) as b:
        await asyncio.gather(
            *(
                store.audit(name, "note", None, {"i": i})
                for i in range(40)
                for store, name in ((a, "a"), (b, "b"))
            )
        )
        verdict = await verify(a)
    assert (verdict.checked, verdict.broken) == (80, None)
