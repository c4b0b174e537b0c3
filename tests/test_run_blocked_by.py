"""A run waiting behind another run of its ordering key says which (`blocked_by`), and a run's
detail lists the audit entries of the actions taken on it: in both stores, and through the
admin API of a real server."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.store import Checkpoint, EventRecord, NewRun, Store
from tests.serverkit import LiveServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(any_store: Store) -> Store:
    return any_store


async def add(store: Store, run_id: str, ordering: str | None) -> None:
    run = NewRun(id=run_id, flow="orders", flow_version=1, plan_digest="sha256:p", key=run_id,
                 ordering_key=ordering, correlation_id=run_id)
    await store.accept(EventRecord(id=f"ev-{run_id}", type="t", source="s", data={}), [run])


async def blocker(store: Store, run_id: str) -> str | None:
    run = await store.get_run(run_id)
    assert run is not None
    return await store.blocked_by(run)


async def test_a_queued_run_names_the_oldest_unfinished_run_of_its_key(store: Store) -> None:
    for run_id, key in (("a1", "acct-1"), ("a2", "acct-1"), ("a3", "acct-1"), ("b1", None)):
        await add(store, run_id, key)
    assert [r.id for r in await store.claim("w", 10, 10**10, 30)] == ["a1", "b1"]
    assert await blocker(store, "a1") is None  # running: it waits for nothing
    assert await blocker(store, "a2") == "a1"
    assert await blocker(store, "a3") == "a1"  # the head of the key, not the one just before
    assert await blocker(store, "b1") is None
    await store.checkpoint(Checkpoint("a1", None, "parked"))
    assert await blocker(store, "a2") == "a1"  # a parked run holds its key
    await store.checkpoint(Checkpoint("a1", None, "cancelled"))
    assert await blocker(store, "a2") is None
    assert await blocker(store, "a3") == "a2"


FLOW = """\
apiVersion: syncline/v1
kind: Flow
metadata: {name: account-sync, owner: qa}
spec:
  trigger: {event: com.acme.account.changed}
  idempotencyKey: data.id
  orderingKey: data.account
  steps:
    - id: hold
      when: "data.hold"
      park: {code: NEEDS_REVIEW, message: a person must look}
"""

PROJECT = """\
apiVersion: syncline/v1
kind: Project
metadata: {name: blocked-test}
spec:
  paths: [flows]
  environments: {dev: {}}
"""


def test_run_detail_shows_blocked_by_and_its_audit_entries(
        project: Callable[[dict[str, str]], Path]) -> None:
    root = project({"syncline.yaml": PROJECT, "flows/sync.yaml": FLOW})
    with LiveServer(root) as live, live.client() as http:
        ids = []
        for n, hold in ((1, True), (2, False)):
            event = {"specversion": "1.0", "id": f"ev-{n}", "type": "com.acme.account.changed",
                     "source": "tests", "data": {"id": f"c{n}", "account": "acct-9",
                                                 "hold": hold}}
            answer = http.post("/events", content=json.dumps(event),
                               headers={"content-type": "application/cloudevents+json"})
            ids.append(answer.json()["runs"][0]["run_id"])
        deadline = time.monotonic() + 10
        while http.get(f"/api/v1/runs/{ids[0]}").json()["state"] != "parked":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = http.get(f"/api/v1/runs/{ids[1]}").json()
        assert (second["state"], second["blocked_by"]) == ("pending", ids[0])
        http.post(f"/api/v1/runs/{ids[0]}/cancel").raise_for_status()
        first = http.get(f"/api/v1/runs/{ids[0]}").json()
        actions = [entry["action"] for entry in first["audit"]]
        assert actions == ["cancelled", "cancel"]  # newest first
        assert first["blocked_by"] is None
