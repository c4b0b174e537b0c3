"""The PostgreSQL store's own guarantees, with several replicas (stores, processes) on one real
database: deduplication and leases across replicas, migrations applied once, and a replica killed
with SIGKILL whose runs another replica finishes with every write applied exactly once.

The Store contract itself (dedup, ordering, checkpoints, operator actions) runs against both
stores in test_store.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from runtime_kit import LiveTarget, Target, write_project
from test_runtime_crash import CRASH_FLOW, PATIENT

from engine.errors import StoreError
from engine.store import Acceptance, Checkpoint, EventRecord, NewRun
from engine.store.postgres import PostgresStore
from engine.store.postgres_schema import MIGRATIONS
from engine.store.postgres_sql import PLAN_ONCE_PAST, AcceptItem, accept_many
from engine.store.rows import event_row

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def new_run(run_id: str, key: str, ordering: str | None = None) -> NewRun:
    return NewRun(run_id, "sync", 1, "sha256:plan", key, ordering, f"corr-{run_id}")


def event(name: str) -> EventRecord:
    return EventRecord(f"ev-{name}", "com.acme.test", "tests", {"n": name})


async def test_replicas_opening_together_migrate_once(postgres_url: str) -> None:
    stores = [PostgresStore(postgres_url, pool_size=2) for _ in range(4)]
    await asyncio.gather(*(store.open() for store in stores))
    try:
        applied = sorted(store.migrations_applied for store in stores)
        assert applied == [[], [], [], list(range(1, len(MIGRATIONS) + 1))]
    finally:
        await asyncio.gather(*(store.close() for store in stores))


async def test_a_key_another_replica_commits_while_a_batch_inserts_is_a_duplicate(
    postgres_url: str,
) -> None:
    # The other replica's accept of key "006" is in flight (inserted, not committed) when this
    # store's batch looks the key up, so the batch does not see it and inserts its own run; that
    # insert waits for the other transaction, loses, and every accept of the key in the batch
    # must then name the other replica's run.
    async with PostgresStore(postgres_url) as store:
        await store.accept(event("warm"), [new_run("r0", key="other")])  # tables exist
        with psycopg.connect(postgres_url) as other:
            other.execute(
                "INSERT INTO events (id, type, source, data, attributes, received_at) "
                "VALUES ('ev-x', 't', 's', '{}', '{}', 0)"
            )
            other.execute(
                "INSERT INTO runs (id, flow, flow_version, plan_digest, event_id, state, key, "
                "correlation_id, created_at, updated_at) "
                "VALUES ('theirs', 'sync', 1, 'p', 'ev-x', 'pending', '006', 'corr-theirs', 0, 0)"
            )
            batch = asyncio.gather(
                store.accept(event("a"), [new_run("ours", key="006")]),
                store.accept(event("b"), [new_run("ours-too", key="006")]),
                store.accept(event("c"), [new_run("fresh", key="007")]),
            )
            await asyncio.sleep(0.3)  # the batch is now waiting on the other's uncommitted key
            other.commit()
        first, second, fresh = await batch
    assert first == [Acceptance("theirs", "duplicate", "corr-theirs")]
    assert second == [Acceptance("theirs", "duplicate", "corr-theirs")]
    assert fresh == [Acceptance("fresh", "accepted", "corr-fresh")]


async def test_a_batch_of_accepts_answers_and_stores_what_one_by_one_would(
    postgres_url: str,
) -> None:
    # Accepts that queue together go in one transaction, each column an array (unnest): the
    # same event twice, a key repeated in the batch, filtered runs, NULL columns.
    from test_store_accept_batch import ITEMS

    async with PostgresStore(postgres_url) as store:
        await store.accept(event("before"), [new_run("r0", key="held")])
        answers = await asyncio.gather(*(store.accept(ev, runs) for ev, runs in ITEMS))
        stored = await store.get_run("r8")
        stored_event = await store.get_event("ev-a")
    assert [[(a.run_id, a.status) for a in group] for group in answers] == [
        [("r1", "accepted")],
        [("r1", "duplicate")],
        [("r3", "filtered")],
        [("r4", "accepted")],
        [("r4", "duplicate")],
        [("r6", "accepted")],
        [("r7", "accepted"), ("r8", "accepted")],
        [("r0", "duplicate")],
    ]
    assert all(isinstance(a, Acceptance) for group in answers for a in group)
    assert stored is not None and (stored.key, stored.ordering_key, stored.traceparent) == (
        "M", None, None,
    )  # fmt: skip
    assert stored_event is not None and stored_event.data == {"n": "a"}


def _items(start: int, count: int) -> list[AcceptItem]:
    return [
        (event_row(event(f"e{n}"), 0.0),
         (new_run(f"r{n}", f"opportunity-{n:024}", f"acct{n % 97}"),))
        for n in range(start, start + count)
    ]  # fmt: skip


async def _probes(postgres_url: str, sizes: range, prepare: bool | None) -> list[list[str]]:
    """The index each of len(sizes) connections' accepts look keys up with once `runs` is
    large, each connection having accepted 12 batches (`prepare` as given) at one of `sizes`."""
    plans: list[str] = []
    async with PostgresStore(postgres_url), contextlib.AsyncExitStack() as stack:
        connections = [
            await stack.enter_async_context(
                await psycopg.AsyncConnection.connect(postgres_url, autocommit=True)
            )
            for _ in range(len(sizes) + 1)
        ]
        grower, planners = connections[0], connections[1:]
        at = 0
        for size, conn in zip(sizes, planners, strict=True):
            if size > at:
                await accept_many(grower, _items(at, size - at))
                at = size
            for _ in range(12):  # past psycopg's and PostgreSQL's thresholds for plan caching
                await accept_many(conn, _items(at, 8), prepare)
                at += 8
        await accept_many(grower, _items(at, 3000))
        at += 3000
        for conn in planners:
            conn.add_notice_handler(lambda diagnostic: plans.append(diagnostic.message_primary))
            for setting in ("LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 0",
                            "SET auto_explain.log_nested_statements = on",
                            "SET client_min_messages = log"):  # fmt: skip
                await conn.execute(setting)
            [[answer]] = await accept_many(conn, _items(at, 1), prepare)
            at += 1
            assert answer.status == "accepted"
    return [re.findall(r"Scan using (\w+) on runs ", text) for text in plans
            if "INSERT INTO runs" in text]  # fmt: skip


async def test_accepts_look_keys_up_by_the_dedup_index_however_small_the_table_was(
    postgres_url: str,
) -> None:
    # Without statistics (a new database, or a server without autovacuum, like this machine's)
    # a plan made while `runs` held a hundred rows may find a key's holder through runs_flow: a
    # walk over every run of the flow, per key of every batch. Cached for the connection's life,
    # it made one replica's accepts five times slower than the others'. Each connection here
    # makes its accepts' plans at another size of the table; all must probe runs_dedup later.
    sizes = range(0, 800, 100)
    assert await _probes(postgres_url, sizes, prepare=False) == [["runs_dedup"]] * len(sizes)


async def test_a_plan_cached_once_the_table_is_large_looks_keys_up_by_the_dedup_index(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past PLAN_ONCE_PAST runs the store lets psycopg prepare the accept (planning each batch
    # cost the server 0.45 ms): a plan PostgreSQL caches then must still probe runs_dedup.
    sizes = range(PLAN_ONCE_PAST, PLAN_ONCE_PAST + 400, 100)
    assert await _probes(postgres_url, sizes, prepare=None) == [["runs_dedup"]] * len(sizes)
    # and the store prepares only once it has inserted that many runs
    passed: list[bool | None] = []

    async def recording(conn: Any, items: Any, prepare: bool | None = False) -> Any:
        passed.append(prepare)
        return await accept_many(conn, items, prepare)

    monkeypatch.setattr("engine.store.postgres.execution.accept_many", recording)
    monkeypatch.setattr("engine.store.postgres.execution.PLAN_ONCE_PAST", 3)
    async with PostgresStore(postgres_url) as store:
        await store.accept(event("p0"), [new_run("p0", "key-0")])
        await store.accept(event("p0"), [new_run("dup", "key-0")])  # a duplicate inserts nothing
        for n in range(1, 5):
            await store.accept(event(f"p{n}"), [new_run(f"p{n}", f"key-{n}")])
    assert passed == [False, False, False, False, None, None]


async def test_a_newer_schema_is_refused(postgres_url: str) -> None:
    async with PostgresStore(postgres_url):
        pass
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("INSERT INTO syncline_schema (version) VALUES (99)")
    with pytest.raises(StoreError, match="schema is version 99, newer"):
        await PostgresStore(postgres_url).open()


async def test_an_unreachable_server_is_a_store_error_without_the_password() -> None:
    url = "postgresql://syncline:s3cret@127.0.0.1:9/none?connect_timeout=1"
    store = PostgresStore(url, connect_timeout=0.2)
    with pytest.raises(StoreError, match="cannot connect to the PostgreSQL store") as info:
        await store.open()
    assert "s3cret" not in str(info.value) and "s3cret" not in repr(store)


async def test_same_delivery_on_two_replicas_makes_one_run(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as a, PostgresStore(postgres_url) as b:
        results = await asyncio.gather(
            *(
                (a if n % 2 else b).accept(event(f"d{n}"), [new_run(f"r{n}", key="006")])
                for n in range(40)
            )
        )
        acceptances = [result[0] for result in results]
        assert [x.status for x in acceptances].count("accepted") == 1
        winner = next(x.run_id for x in acceptances if x.status == "accepted")
        assert {x.run_id for x in acceptances} == {winner}  # the others name the winner
        assert await a.count_runs() == {("sync", "pending"): 1}


async def test_replicas_never_claim_a_run_twice_and_keep_ordering_keys(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as a, PostgresStore(postgres_url) as b:
        runs = [new_run(f"r{n:03}", f"k{n}", ordering=f"acct-{n % 10}") for n in range(200)]
        await a.accept(event("bulk"), runs)
        order = {run.id: n for n, run in enumerate(runs)}
        done: list[str] = []
        claimed_by: dict[str, str] = {}

        async def replica(store: PostgresStore, name: str) -> None:
            while len(done) < len(runs):
                batch = await store.claim(name, 7, time.time(), 30.0)
                for run in batch:
                    assert run.id not in claimed_by, f"{run.id} claimed twice"
                    claimed_by[run.id] = name
                    # no other run of this ordering key is executing right now
                    running = [r for r in claimed_by if r not in done]
                    same_key = [r for r in running if runs[order[r]].ordering_key
                                == run.ordering_key]  # fmt: skip
                    assert same_key == [run.id]
                for run in batch:
                    await store.checkpoint(Checkpoint(run.id, None, "succeeded"))
                    done.append(run.id)
                await asyncio.sleep(0)

        await asyncio.gather(replica(a, "a"), replica(b, "b"), replica(a, "a2"))
        assert sorted(done) == sorted(order)
        assert set(claimed_by.values()) >= {"a", "b"}  # they shared the work
        for key in {run.ordering_key for run in runs}:  # each key's runs ran in arrival order
            ran = [r for r in done if runs[order[r]].ordering_key == key]
            assert ran == sorted(ran, key=order.__getitem__)


async def test_the_audit_log_is_append_only(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as store:
        await store.audit("bob", "deploy", None, {"digest": "sha256:x"})
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for sql in ("UPDATE audit SET actor = 'mallory'", "DELETE FROM audit"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(sql)


# -- replicas as real processes --------------------------------------------------------------------
EVENTS = 300


async def migrate(url: str) -> None:
    async with PostgresStore(url):
        pass


def start_replica(root: Path, url: str) -> subprocess.Popen[str]:
    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent), str(here)])}
    return subprocess.Popen(
        [sys.executable, str(here / "crash_worker.py"), str(root), str(EVENTS), url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.slow
def test_a_killed_replica_s_runs_are_finished_by_the_other(tmp_path: Path, postgres_url: str):
    """Two replicas receive the same deliveries and share the work; one is killed with SIGKILL
    mid-work; the survivor finishes every run, the dead one's included once its leases expire,
    and the target receives every logical write exactly once by idempotency key."""
    live = LiveTarget(Target(flaky=0.1, lost=0.05))
    owners: set[str] = set()
    with live as target:
        root = write_project(tmp_path, live.url, CRASH_FLOW, {"flows/policy.yaml": PATIENT})
        asyncio.run(migrate(postgres_url))  # the schema exists before we look at it
        doomed, survivor = start_replica(root, postgres_url), start_replica(root, postgres_url)
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            deadline = time.monotonic() + 30
            while len(owners) < 2 and time.monotonic() < deadline:
                owners |= {
                    owner
                    for (owner,) in conn.execute(
                        "SELECT DISTINCT lease_owner FROM runs WHERE state = 'running'"
                    )
                }
                time.sleep(0.02)
            time.sleep(0.3)
            doomed.send_signal(signal.SIGKILL)
            doomed.communicate(timeout=10)
            orphaned = conn.execute("SELECT count(*) FROM runs WHERE state = 'running'").fetchone()
            out, err = survivor.communicate(timeout=120)
            assert survivor.returncode == 0, err
            assert "idle" in out
            states = dict(conn.execute("SELECT state, count(*) FROM runs GROUP BY state"))
    assert len(owners) == 2  # both replicas were executing runs
    assert orphaned is not None and orphaned[0] > 0  # the kill left leased runs behind
    assert states == {"succeeded": EVENTS}
    keys_per_step: dict[tuple[int, str], set[str]] = {}
    for request in target.to("/orders"):
        keys_per_step.setdefault((request.body["i"], request.body["step"]), set()).add(request.key)
    assert len(keys_per_step) == 2 * EVENTS
    assert all(len(keys) == 1 for keys in keys_per_step.values())  # one key per logical write
    assert all(len(bodies) == 1 for bodies in target.writes.values())  # applied once per key
