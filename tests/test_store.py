"""Both stores against real databases (a SQLite file; PostgreSQL on this machine): dedup,
ordering, leases, atomicity, durability. Tests of one store's own machinery take its fixture."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.errors import StateConflict, StoreError, UsageError
from engine.store import (
    Acceptance,
    Attempt,
    Checkpoint,
    CorrectedData,
    EventRecord,
    NewRun,
    Reason,
    RunQuery,
    SQLiteStore,
    StateChange,
    StepRecord,
)
from engine.store.audit import AuditQuery
from engine.store.postgres import PostgresStore
from engine.store.sqlite import MIGRATIONS

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / ".syncline" / "syncline.db"


@pytest.fixture
async def sqlite_store(db_path: Path):
    async with SQLiteStore(db_path) as store:
        yield store


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, db_path: Path):
    if request.param == "sqlite":
        async with SQLiteStore(db_path) as store:
            yield store
    else:
        async with PostgresStore(request.getfixturevalue("postgres_url")) as store:
            yield store


def event(name: str, data: object = None) -> EventRecord:
    return EventRecord(id=f"ev-{name}", type="com.acme.test", source="tests", data=data)


def new_run(
    run_id: str,
    *,
    key: str | None = None,
    ordering: str | None = None,
    flow: str = "sync",
    state: str = "pending",
    replay_of: str | None = None,
) -> NewRun:
    return NewRun(
        id=run_id,
        flow=flow,
        flow_version=1,
        plan_digest="sha256:plan",
        key=key or run_id,
        ordering_key=ordering,
        correlation_id=f"corr-{run_id}",
        state=state,  # type: ignore[arg-type]
        replay_of=replay_of,
    )


async def add(store: SQLiteStore, run_id: str, **kw: object) -> str:
    """Accept one event carrying one run; return the run's id."""
    [acceptance] = await store.accept(event(run_id), [new_run(run_id, **kw)])  # type: ignore[arg-type]
    return acceptance.run_id


async def claimed_ids(store: SQLiteStore, now: float = 1000.0, worker: str = "w1") -> list[str]:
    return [run.id for run in await store.claim(worker, 100, now, 30.0)]


async def finish(store: SQLiteStore, run_id: str, state: str = "succeeded") -> None:
    await store.checkpoint(Checkpoint(run_id, step=None, run_state=state))


# -- opening and migrations ----------------------------------------------------------------------
async def test_open_creates_the_file_in_wal_mode(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        assert store.migrations_applied == list(range(1, len(MIGRATIONS) + 1))
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
    conn.close()


async def test_reopening_applies_no_migration_again(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        await add(store, "r1")
    async with SQLiteStore(db_path) as store:
        assert store.migrations_applied == []
        assert (await store.get_run("r1")) is not None


async def test_a_newer_schema_is_refused(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="schema is version 99, newer"):
        await SQLiteStore(db_path).open()


async def test_a_closed_store_refuses_work(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    with pytest.raises(StoreError, match="not open"):
        await store.get_run("r1")
    await store.open()
    await store.close()
    with pytest.raises(StoreError, match="not open"):
        await add(store, "r1")


async def test_close_commits_what_is_queued(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    await store.open()
    tasks = [asyncio.create_task(add(store, f"r{i}")) for i in range(100)]
    await asyncio.sleep(0)  # every task has queued its write
    await store.close()
    assert [t.result() for t in tasks] == [f"r{i}" for i in range(100)]
    async with SQLiteStore(db_path) as store:
        assert await store.count_runs() == {("sync", "pending"): 100}


# -- accept and dedup ----------------------------------------------------------------------------
async def test_accept_stores_event_and_run(store: SQLiteStore) -> None:
    ev = EventRecord(
        "e1",
        "com.acme.order",
        "crm",
        {"Id": "006"},
        subject="acct-1",
        attributes={"traceparent": "00-abc"},
    )
    [acceptance] = await store.accept(ev, [new_run("r1", key="006", ordering="acct-1")])
    assert acceptance == Acceptance("r1", "accepted", "corr-r1")
    assert await store.get_event("e1") == ev
    run = await store.get_run("r1")
    assert run is not None
    assert (run.flow, run.state, run.key, run.ordering_key, run.event_id) == (
        "sync",
        "pending",
        "006",
        "acct-1",
        "e1",
    )
    assert run.created_at == run.updated_at > 0
    assert await store.get_run("nope") is None


async def test_same_flow_and_key_is_a_duplicate_naming_the_first_run(store: SQLiteStore) -> None:
    await store.accept(event("a"), [new_run("r1", key="K")])
    [dup] = await store.accept(event("b"), [new_run("r2", key="K")])
    assert dup == Acceptance("r1", "duplicate", "corr-r1")
    [other_flow] = await store.accept(event("c"), [new_run("r3", key="K", flow="other")])
    assert other_flow.status == "accepted"
    assert await store.get_run("r2") is None


async def test_concurrent_accepts_deduplicate(store: SQLiteStore) -> None:
    # 200 deliveries, 50 of them repeat an earlier key: exactly 150 runs.
    keys = [f"k{i}" for i in range(150)] + [f"k{i}" for i in range(0, 150, 3)]
    results = await asyncio.gather(
        *(store.accept(event(f"e{n}"), [new_run(f"r{n}", key=k)]) for n, k in enumerate(keys))
    )
    statuses = [r[0].status for r in results]
    assert statuses.count("accepted") == 150 and statuses.count("duplicate") == 50
    assert await store.count_runs() == {("sync", "pending"): 150}
    for n, [acceptance] in enumerate(results[150:]):
        assert acceptance.run_id == f"r{3 * n}"  # names the first run of that key


async def test_the_same_event_id_is_stored_once(store: SQLiteStore) -> None:
    await store.accept(event("x", data=1), [new_run("r1")])
    await store.accept(event("x", data=2), [new_run("r2")])
    stored = await store.get_event("ev-x")
    assert stored is not None and stored.data == 1


async def test_a_filtered_run_is_recorded_but_does_not_hold_its_key(store: SQLiteStore) -> None:
    # An opportunity updated before it is won: the non-matching update must not swallow the win.
    [filtered] = await store.accept(event("a"), [new_run("r1", key="006", state="filtered")])
    assert filtered.status == "filtered"
    [won] = await store.accept(event("b"), [new_run("r2", key="006")])
    assert (won.run_id, won.status) == ("r2", "accepted")
    [later] = await store.accept(event("c"), [new_run("r3", key="006", state="filtered")])
    assert (later.run_id, later.status) == ("r2", "duplicate")
    assert await claimed_ids(store) == ["r2"]


async def test_sqlite_errors_become_store_errors(sqlite_store: SQLiteStore) -> None:
    await add(sqlite_store, "r1", key="a")
    with pytest.raises(StoreError, match="UNIQUE constraint failed: runs.id") as info:
        await add(sqlite_store, "r1", key="b")  # same run id, another key
    assert isinstance(info.value.__cause__, sqlite3.IntegrityError)


async def test_runs_survive_close_and_reopen(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        await add(store, "r1", ordering="o")
        await store.save_plan("sha256:plan", {"flows": {"sync": {"steps": []}}})
    async with SQLiteStore(db_path) as store:
        run = await store.get_run("r1")
        assert run is not None and run.ordering_key == "o"
        assert await store.load_plan("sha256:plan") == {"flows": {"sync": {"steps": []}}}
        assert await store.load_plan("sha256:other") is None


# -- claiming ------------------------------------------------------------------------------------
async def test_only_the_oldest_run_of_an_ordering_key_is_claimable(store: SQLiteStore) -> None:
    for run_id in ("a1", "a2"):
        await add(store, run_id, ordering="A")
    assert await claimed_ids(store) == ["a1"]
    assert await claimed_ids(store) == []  # a1 is running: a2 still waits
    await finish(store, "a1")
    assert await claimed_ids(store) == ["a2"]


async def test_a_parked_run_blocks_its_ordering_key(store: SQLiteStore) -> None:
    for run_id in ("a1", "a2"):
        await add(store, run_id, ordering="A")
    await finish(store, "a1", "parked")
    assert await claimed_ids(store) == []
    await store.set_run_state("a1", StateChange("cancelled", expect=("parked",)))
    assert await claimed_ids(store) == ["a2"]


async def test_different_and_absent_ordering_keys_do_not_block(store: SQLiteStore) -> None:
    for run_id, key in [("a1", "A"), ("b1", "B"), ("n1", None), ("n2", None), ("a2", "A")]:
        await add(store, run_id, ordering=key)
    assert await claimed_ids(store) == ["a1", "b1", "n1", "n2"]


async def test_claim_marks_runs_running_and_respects_limit(store: SQLiteStore) -> None:
    for n in range(5):
        await add(store, f"r{n}")
    first = await store.claim("w1", 2, 1000.0, 30.0)
    assert [(r.id, r.state) for r in first] == [("r0", "running"), ("r1", "running")]
    assert (await store.get_run("r0")).state == "running"  # type: ignore[union-attr]
    assert await claimed_ids(store) == ["r2", "r3", "r4"]


async def test_a_waiting_run_is_claimable_only_when_due(store: SQLiteStore) -> None:
    await add(store, "r1", ordering="A")
    await add(store, "r2", ordering="A")
    assert await claimed_ids(store, now=100.0) == ["r1"]
    await store.checkpoint(Checkpoint("r1", step=None, run_state="waiting", next_attempt_at=200.0))
    assert await claimed_ids(store, now=199.0) == []  # and r2 stays behind the waiting r1
    [run] = await store.claim("w1", 10, 200.0, 30.0)
    assert (run.id, run.state, run.next_attempt_at) == ("r1", "running", None)


async def test_an_expired_lease_is_reclaimable_and_renew_extends_it(store: SQLiteStore) -> None:
    await add(store, "r1")
    assert await claimed_ids(store, now=100.0, worker="w1") == ["r1"]  # leased until 130
    assert await claimed_ids(store, now=129.0, worker="w2") == []
    await store.renew("w1", ["r1"], until=200.0)
    await store.renew("w2", ["r1"], until=999.0)  # not w2's lease: no effect
    assert await claimed_ids(store, now=199.0, worker="w2") == []
    assert await claimed_ids(store, now=200.0, worker="w2") == ["r1"]  # w1 presumed dead


async def test_a_claimed_run_comes_with_its_event_and_steps(store: SQLiteStore) -> None:
    await store.accept(event("a", {"n": 1}), [new_run("r1")])
    await add(store, "r2")
    await store.checkpoint(
        Checkpoint("r1", step("r1", "erp", {"id": "SO-1"}), "waiting", next_attempt_at=5.0)
    )
    claimed = {run.id: run for run in await store.claim("w1", 10, 1000.0, 30.0)}
    assert claimed["r1"].event == event("a", {"n": 1})
    assert claimed["r1"].steps == {"erp": step("r1", "erp", {"id": "SO-1"})}
    assert claimed["r2"].event == event("r2") and claimed["r2"].steps == {}
    assert (await store.get_run("r1")).steps is None  # type: ignore[union-attr]


async def test_of_ten_thousand_pending_runs_claim_takes_only_the_heads(store: SQLiteStore) -> None:
    runs = [new_run(f"r{n}", ordering=f"acct-{n % 100}") for n in range(10_000)]
    await store.accept(event("bulk"), runs)
    first = await store.claim("w1", 1000, time.time(), 30.0)
    assert [run.id for run in first] == [f"r{n}" for n in range(100)]  # each key's oldest run
    # every key now has a running head: the worst case, a scan that finds nothing to claim
    assert await store.claim("w1", 100, time.time(), 30.0) == []


# -- checkpoints ---------------------------------------------------------------------------------
def step(run_id: str, step_id: str, output: object = None) -> StepRecord:
    attempt = Attempt(
        n=1,
        started_at=1.0,
        finished_at=2.0,
        outcome="ok",
        status=201,
        request={"body": {"a": 1}},
        response={"id": "SO-1"},
    )
    return StepRecord(
        run_id,
        step_id,
        "succeeded",
        output=output,
        input_digest="d1",
        attempts=[attempt],
        updated_at=3.0,
    )


async def test_checkpoint_writes_step_state_and_outbox(store: SQLiteStore) -> None:
    await add(store, "r1")
    await store.claim("w1", 1, 1000.0, 30.0)
    emitted = EventRecord("out-1", "com.acme.order.created", "syncline/sync", {"id": "SO-1"})
    await store.checkpoint(
        Checkpoint(
            "r1", step("r1", "erp", {"id": "SO-1"}), run_state="succeeded", emitted=[emitted]
        )
    )
    steps = await store.get_steps("r1")
    assert steps == {"erp": step("r1", "erp", {"id": "SO-1"})}
    run = await store.get_run("r1")
    assert run is not None and run.state == "succeeded"
    [item] = await store.outbox(10)
    assert (item.run_id, item.event) == ("r1", emitted)


async def test_checkpoint_replaces_a_step_record(store: SQLiteStore) -> None:
    await add(store, "r1")
    await store.checkpoint(Checkpoint("r1", step("r1", "erp", 1)))
    busy = Reason("E", "erp", "busy")
    await store.checkpoint(
        Checkpoint(
            "r1", step("r1", "erp", 2), run_state="waiting", next_attempt_at=5.0, reason=busy
        )
    )
    assert (await store.get_steps("r1"))["erp"].output == 2
    run = await store.get_run("r1")
    assert run is not None
    assert (run.state, run.next_attempt_at, run.reason) == (
        "waiting",
        5.0,
        Reason("E", "erp", "busy"),
    )


async def test_a_failed_checkpoint_writes_nothing(store: SQLiteStore) -> None:
    emitted = EventRecord("out-1", "t", "s", None)
    with pytest.raises(StoreError, match="unknown run 'ghost'"):
        await store.checkpoint(
            Checkpoint("ghost", step("ghost", "a"), "succeeded", emitted=[emitted])
        )
    assert await store.get_steps("ghost") == {}
    # Fail after the step is written: r1 may not take back key K, which r2 holds.
    await add(store, "r1", key="K", state="filtered")
    await add(store, "r2", key="K")
    with pytest.raises(StoreError, match="(?i)unique"):
        await store.checkpoint(Checkpoint("r1", step("r1", "a"), "pending", emitted=[emitted]))
    assert await store.get_steps("r1") == {}
    assert (await store.get_run("r1")).state == "filtered"  # type: ignore[union-attr]
    assert await store.outbox(10) == []


async def test_readers_never_see_half_a_checkpoint(
    sqlite_store: SQLiteStore, db_path: Path
) -> None:
    ids = [f"r{n}" for n in range(200)]
    await asyncio.gather(*(add(sqlite_store, run_id) for run_id in ids))
    seen: list[tuple[int, int, int]] = []
    stop = threading.Event()

    def watch() -> None:  # one read transaction per look: step, state and outbox must agree
        conn = sqlite3.connect(db_path, isolation_level=None)
        while not stop.is_set():
            conn.execute("BEGIN")
            steps = conn.execute("SELECT count(*) FROM steps").fetchone()[0]
            done = conn.execute("SELECT count(*) FROM runs WHERE state = 'succeeded'").fetchone()[0]
            outbox = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
            conn.execute("COMMIT")
            seen.append((steps, done, outbox))
        conn.close()

    def done(run_id: str) -> Checkpoint:
        emitted = [EventRecord(f"o-{run_id}", "t", "s", None)]
        return Checkpoint(run_id, step(run_id, "a"), "succeeded", emitted=emitted)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for n in range(0, 200, 20):
            batch = ids[n : n + 20]
            await asyncio.gather(*(sqlite_store.checkpoint(done(run_id)) for run_id in batch))
    finally:
        stop.set()
        watcher.join()
    assert seen and all(s == d == o for s, d, o in seen), [x for x in seen if len(set(x)) > 1]
    assert await sqlite_store.count_runs() == {("sync", "succeeded"): 200}


# -- operator actions ----------------------------------------------------------------------------
async def parked_run(store: SQLiteStore) -> None:
    await add(store, "r1")
    await store.checkpoint(Checkpoint("r1", step("r1", "order")))
    await store.checkpoint(
        Checkpoint(
            "r1",
            step("r1", "erp"),
            run_state="parked",
            reason=Reason("E_4XX", "erp", "422 from erp"),
        )
    )


async def test_set_run_state_resumes_with_override_and_reset(store: SQLiteStore) -> None:
    await parked_run(store)
    change = StateChange(
        "pending",
        expect=("parked",),
        data=CorrectedData({"Id": "fixed"}),
        reset_steps=("erp",),
        actor="alice",
        action="resume",
    )
    run = await store.set_run_state("r1", change)
    assert (run.state, run.reason, run.data_override, run.has_override, run.generation) == (
        "pending",
        None,
        {"Id": "fixed"},
        True,
        1,
    )
    assert list(await store.get_steps("r1")) == ["order"]
    [entry] = await store.audit_log(AuditQuery(run_id="r1"))
    assert (entry["actor"], entry["action"], entry["run_id"]) == ("alice", "resume", "r1")
    assert entry["detail"] == {
        "from": "parked",
        "to": "pending",
        "reset_steps": ["erp"],
        "data_override": True,
        # the corrected data's digest, never the data: sha256 of {"Id":"fixed"}
        "data_sha256": hashlib.sha256(b'{"Id":"fixed"}').hexdigest(),
    }


async def test_set_run_state_expect_failure_changes_nothing(store: SQLiteStore) -> None:
    await parked_run(store)
    before = await store.get_run("r1")
    with pytest.raises(StateConflict, match="run 'r1' is 'parked', not 'dead-lettered'"):
        await store.set_run_state(
            "r1",
            StateChange(
                "pending",
                expect=("dead-lettered",),
                reset_steps=("erp",),
                data=CorrectedData(1),
                action="retry",
            ),
        )
    assert await store.get_run("r1") == before
    assert set(await store.get_steps("r1")) == {"order", "erp"}
    assert await store.audit_log() == []
    with pytest.raises(StoreError, match="run 'ghost' does not exist"):
        await store.set_run_state("ghost", StateChange("cancelled"))


async def test_a_failing_write_does_not_spoil_its_batch(sqlite_store: SQLiteStore) -> None:
    await parked_run(sqlite_store)
    commits = sqlite_store.commits
    results = await asyncio.gather(
        *(add(sqlite_store, f"a{n}") for n in range(20)),
        sqlite_store.set_run_state("r1", StateChange("pending", expect=("running",))),
        *(add(sqlite_store, f"b{n}") for n in range(20)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, StoreError) for r in results) == 1
    assert (await sqlite_store.count_runs())[("sync", "pending")] == 40
    assert sqlite_store.commits - commits < 41  # they shared commits


async def test_audit_log_is_append_only(sqlite_store: SQLiteStore, db_path: Path) -> None:
    await sqlite_store.audit("bob", "deploy", None, {"digest": "sha256:x"})
    await sqlite_store.audit("bob", "note", "r1", ["a"])
    log = await sqlite_store.audit_log()
    assert [(e["action"], e["detail"]) for e in log] == [
        ("note", ["a"]),
        ("deploy", {"digest": "sha256:x"}),
    ]
    assert [e["action"] for e in await sqlite_store.audit_log(AuditQuery(run_id="r1"))] == ["note"]
    conn = sqlite3.connect(db_path)
    try:
        for sql in ("UPDATE audit SET actor = 'mallory'", "DELETE FROM audit"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(sql)
    finally:
        conn.close()


# -- listing, replay links, outbox ---------------------------------------------------------------
async def test_list_runs_newest_first_with_cursor_and_filters(store: SQLiteStore) -> None:
    for n in range(5):
        await add(store, f"r{n}", flow="a" if n % 2 else "b", key="K" if n in (1, 2) else None)
    await finish(store, "r4", "parked")
    first = RunQuery(limit=2)
    page = await store.list_runs(first)
    assert [r.id for r in page] == ["r4", "r3"]
    following = RunQuery(cursor=first.next_cursor(page))
    rest = await store.list_runs(following)
    assert [r.id for r in rest] == ["r2", "r1", "r0"]
    assert following.next_cursor(rest) is None  # fewer than the limit: the last page
    assert [r.id for r in await store.list_runs(RunQuery(flow="a"))] == ["r3", "r1"]
    assert [r.id for r in await store.list_runs(RunQuery(state="pending", key="K"))] == ["r2", "r1"]
    with pytest.raises(UsageError, match="bad cursor 'x'"):
        await store.list_runs(RunQuery(cursor="x"))
    assert await store.count_runs() == {
        ("a", "pending"): 2,
        ("b", "pending"): 2,
        ("b", "parked"): 1,
    }


async def test_replayed_by_is_derived_from_replay_of(store: SQLiteStore) -> None:
    await add(store, "r1")
    await add(store, "r2", replay_of="r1")
    await add(store, "r3", replay_of="r1")
    original = await store.get_run("r1")
    assert original is not None and original.replayed_by == ["r2", "r3"]
    assert [(r.id, r.replayed_by) for r in await store.list_runs(RunQuery())] == [
        ("r3", []),
        ("r2", []),
        ("r1", ["r2", "r3"]),
    ]


async def test_dispatch_stores_the_event_creates_runs_and_marks_the_item(
    store: SQLiteStore,
) -> None:
    await add(store, "r1")
    out = [EventRecord(f"out-{n}", "com.acme.granted", "syncline/sync", {"n": n}) for n in (1, 2)]
    await store.checkpoint(Checkpoint("r1", None, "succeeded", emitted=out))
    first, second = await store.outbox(10)
    [acceptance] = await store.dispatch(first, [new_run("d1", key="out-1", flow="grant")])
    assert acceptance.status == "accepted"
    assert await store.outbox(10) == [second]
    assert await store.get_event("out-1") == out[0]
    assert (await store.get_run("d1")).event_id == "out-1"  # type: ignore[union-attr]
    [again] = await store.dispatch(first, [new_run("d2", key="out-1", flow="grant")])
    assert (again.run_id, again.status) == ("d1", "duplicate")


# -- group commit and durability -----------------------------------------------------------------
async def test_concurrent_writes_are_group_committed(sqlite_store: SQLiteStore) -> None:
    commits, writes = sqlite_store.commits, sqlite_store.writes
    await asyncio.gather(*(add(sqlite_store, f"r{n}") for n in range(500)))
    assert sqlite_store.writes - writes == 500
    assert sqlite_store.commits - commits < 50, sqlite_store.commits - commits


CHILD = """
import asyncio, sys
from engine.store import EventRecord, NewRun, SQLiteStore

async def produce(store, worker):
    n = 0
    while True:
        n += 1
        rid = f"w{worker}-{n}"
        run = NewRun(rid, "sync", 1, "sha256:plan", rid, None, rid)
        [ack] = await store.accept(EventRecord("e-" + rid, "t", "s", {"n": n}), [run])
        print(ack.run_id, flush=True)

async def main():
    store = SQLiteStore(sys.argv[1])
    await store.open()
    await asyncio.gather(*(produce(store, w) for w in range(32)))

asyncio.run(main())
"""


@pytest.mark.slow
async def test_acknowledged_runs_survive_sigkill(db_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db_path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    acked = [child.stdout.readline() for _ in range(500)]
    os.kill(child.pid, signal.SIGKILL)  # mid-stream: writes are still queued and committing
    child.wait()
    acked += child.stdout.readlines()
    child.stdout.close()
    ids = [line[:-1] for line in acked if line.endswith("\n")]  # a torn last line was not an ack
    assert len(ids) >= 500
    async with SQLiteStore(db_path) as store:
        found = await asyncio.gather(*(store.get_run(run_id) for run_id in ids))
    assert [run_id for run_id, run in zip(ids, found, strict=True) if run is None] == []


async def claim_work(path: Path, keys: int, per_key: int) -> int:
    """SQLite VM instructions of a claim that finds nothing: every key's oldest run is running
    and `per_key - 1` more of each key wait behind it."""
    from engine.store.sqlite_claims import CLAIM_SQL

    async with SQLiteStore(path) as store:
        await asyncio.gather(
            *(
                store.accept(
                    EventRecord(f"e{n}", "t", "tests", {}),
                    [NewRun(f"r{n}", "sync", 1, "p", f"k{n}", f"acct{n % keys}", f"c{n}")],
                )
                for n in range(keys * per_key)
            )
        )
        assert len(await store.claim("w", keys + 1, 1000.0, 3600)) == keys  # the heads only
    conn = sqlite3.connect(path)
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(count, 100)
    params = {"now": 1000.0, "limit": 32, "bound": 2**62}
    assert conn.execute(CLAIM_SQL, params).fetchall() == []
    conn.close()
    return steps


async def test_a_claim_does_not_visit_the_runs_queued_behind_busy_keys(tmp_path: Path) -> None:
    # Counted in SQLite VM instructions, not seconds: ten times the backlog behind the same 50
    # busy ordering keys must not cost a claim ten times the work (it did: 4 ms at 10,000 queued
    # runs, 23 ms at 50,000, holding the store's one writer every time a run finished).
    small = await claim_work(tmp_path / "small.db", keys=50, per_key=10)
    large = await claim_work(tmp_path / "large.db", keys=50, per_key=100)
    assert large < 2 * small, (small, large)
