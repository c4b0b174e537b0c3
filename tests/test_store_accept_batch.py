"""Accepts that queue together are written as one bulk write: same answers as one by one."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from engine.errors import StoreError
from engine.store import EventRecord, NewRun, SQLiteStore
from engine.store.base import Acceptance, ReceivedJSON
from engine.store.rows import event_row, run_rows
from engine.store.sqlite_writes import close_writer, open_writer, tx_accept, tx_accept_many

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def run(run_id: str, key: str, state: str = "pending", flow: str = "sync") -> NewRun:
    return NewRun(run_id, flow, 1, "sha256:plan", key, None, f"corr-{run_id}", state=state)  # type: ignore[arg-type]


def event(name: str) -> EventRecord:
    return EventRecord(id=f"ev-{name}", type="t", source="tests", data={"n": name})


# Every case the one-by-one path distinguishes, in one batch: a key held before the batch, a key
# repeated inside the batch, a filtered run before and after the accepted one of its key, the same
# event id twice, another flow with the same key, an event with two runs.
ITEMS = [
    (event("a"), [run("r1", "K")]),
    (event("b"), [run("r2", "K")]),
    (event("c"), [run("r3", "F", state="filtered")]),
    (event("d"), [run("r4", "F")]),
    (event("e"), [run("r5", "F", state="filtered")]),
    (event("a"), [run("r6", "L")]),
    (event("f"), [run("r7", "K", flow="other"), run("r8", "M")]),
    (event("g"), [run("r9", "held")]),
]


def apply(path: Path, batched: bool) -> tuple[list[object], list[tuple[object, ...]]]:
    conn, _ = open_writer(path)
    conn.execute("BEGIN IMMEDIATE")
    [(before, held)] = run_rows([(event_row(event("before"), 1.0), [run("r0", "held")])])
    tx_accept(conn, before, held)
    items = run_rows([(event_row(ev, 2.0), runs) for ev, runs in ITEMS])
    if batched:
        answers: list[object] = list(tx_accept_many(conn, items))
    else:
        answers = [tx_accept(conn, row, runs) for row, runs in items]
    conn.execute("COMMIT")
    rows = conn.execute("SELECT id, flow, key, state, event_id FROM runs ORDER BY seq").fetchall()
    rows += conn.execute("SELECT id, data FROM events ORDER BY rowid").fetchall()
    close_writer(conn)
    return answers, rows


def test_a_batch_answers_and_writes_what_one_by_one_would(tmp_path: Path) -> None:
    one_by_one = apply(tmp_path / "a.db", batched=False)
    batched = apply(tmp_path / "b.db", batched=True)
    assert batched == one_by_one
    # The writer answers plain (run id, status, correlation id) tuples (see rows.accept_rows).
    answers = [[(a[0], a[1]) for a in group] for group in batched[0]]  # type: ignore[attr-defined]
    assert answers == [
        [("r1", "accepted")],
        [("r1", "duplicate")],
        [("r3", "filtered")],
        [("r4", "accepted")],
        [("r4", "duplicate")],
        [("r6", "accepted")],
        [("r7", "accepted"), ("r8", "accepted")],
        [("r0", "duplicate")],
    ]


async def test_queued_accepts_share_one_commit_and_a_bad_one_fails_alone(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "s.db") as store:
        await store.accept(event("x"), [run("taken", "x")])
        # Another connection holds the write lock: the writer's first commit waits, and the
        # accepts sent meanwhile queue.
        blocker = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        commits = store.commits
        gathered = asyncio.gather(
            *(store.accept(event(f"e{i}"), [run(f"r{i}", f"k{i % 30}")]) for i in range(60)),
            store.accept(event("bad"), [run("taken", "y")]),  # a run id that exists: refused
            return_exceptions=True,
        )
        await asyncio.sleep(0.3)
        blocker.execute("COMMIT")
        blocker.close()
        results = await gathered
        assert store.commits - commits <= 2  # the first batch sent, then everything queued
        *good, bad = results
        assert isinstance(bad, StoreError) and isinstance(bad.__cause__, sqlite3.IntegrityError)
        statuses = [r[0].status for r in good]  # type: ignore[index]
        assert statuses.count("accepted") == 30 and statuses.count("duplicate") == 30
        assert await store.get_event("ev-bad") is None  # nothing of the refused accept stayed
        assert (await store.count_runs())[("sync", "pending")] == 31


async def test_a_received_json_payload_is_stored_as_its_own_text(tmp_path: Path) -> None:
    text = '{"b": 1,  "a": [1.50, "\\u00e9"]}'
    data = ReceivedJSON(json.loads(text), text)
    async with SQLiteStore(tmp_path / "s.db") as store:
        await store.accept(
            EventRecord(id="ev", type="t", source="tests", data=data), [run("r", "k")]
        )
        stored = await store.get_event("ev")
        assert stored is not None and stored.data == {"b": 1, "a": [1.5, "é"]}
    conn = sqlite3.connect(tmp_path / "s.db")
    assert conn.execute("SELECT data FROM events").fetchone()[0] == text
    conn.close()


async def test_the_writer_answers_tuples_and_callers_get_acceptances(tmp_path: Path) -> None:
    """Plain tuples cross from the writer process (see rows.accept_rows); callers still get
    Acceptance records."""
    async with SQLiteStore(tmp_path / "s.db") as store:
        [first] = await store.accept(event("a"), [run("r1", "k")])
        [again] = await store.accept(event("b"), [run("r2", "k")])
        assert isinstance(first, Acceptance) and isinstance(again, Acceptance)
        assert (first.run_id, first.status, again.run_id, again.status) == (
            "r1", "accepted", "r1", "duplicate",
        )  # fmt: skip
