"""`orderingKey: {key, whileParked: continue}`: a parked run lets its key go, so the flow's later
runs of the key go on; a resumed run then waits for the run of its key that started meanwhile
and goes next. `block` (the default) keeps a parked run holding its key. In both stores'
claims and `blocked_by`, and from the definition through the compiler to the runs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.compiler import compile_project
from engine.errors import DefinitionErrors
from engine.store import Checkpoint, EventRecord, NewRun, StateChange, Store
from tests.serverkit import LiveServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def add(store: Store, run_id: str, key: str, holds: bool) -> None:
    run = NewRun(id=run_id, flow="f", flow_version=1, plan_digest="sha256:p", key=run_id,
                 ordering_key=key, correlation_id=run_id, parked_holds_key=holds)
    await store.accept(EventRecord(id=f"ev-{run_id}", type="t", source="s", data={}), [run])


async def claim(store: Store) -> list[str]:
    return [r.id for r in await store.claim("w", 10, 10**10, 30)]


async def blocker(store: Store, run_id: str) -> str | None:
    run = await store.get_run(run_id)
    assert run is not None
    return await store.blocked_by(run)


async def test_a_parked_run_that_continues_lets_later_runs_of_its_key_go(
        any_store: Store) -> None:
    store = any_store
    for run_id in ("c1", "c2", "c3"):
        await add(store, run_id, "acct-1", holds=False)
    assert await claim(store) == ["c1"]
    assert await blocker(store, "c2") == "c1"  # running: it holds its key
    await store.checkpoint(Checkpoint("c1", None, "parked"))
    assert await blocker(store, "c2") is None
    assert await claim(store) == ["c2"]  # c1 parked: c2 goes on
    assert await blocker(store, "c3") == "c2"
    # c1 resumed while c2 runs: c1 is older, but c2 started; c1 waits for it, then goes next
    await store.set_run_state("c1", StateChange("pending", expect=("parked",), action="resume"))
    assert await blocker(store, "c1") == "c2"
    assert await claim(store) == []
    await store.checkpoint(Checkpoint("c2", None, "succeeded"))
    assert await blocker(store, "c3") == "c1"
    assert await claim(store) == ["c1"]
    await store.checkpoint(Checkpoint("c1", None, "succeeded"))
    assert await claim(store) == ["c3"]


async def test_a_parked_run_that_blocks_holds_its_key(any_store: Store) -> None:
    store = any_store
    for run_id in ("b1", "b2"):
        await add(store, run_id, "acct-2", holds=True)
    await add(store, "other", "acct-3", holds=False)
    assert await claim(store) == ["b1", "other"]
    await store.checkpoint(Checkpoint("b1", None, "parked"))
    await store.checkpoint(Checkpoint("other", None, "parked"))
    assert await claim(store) == []
    assert await blocker(store, "b2") == "b1"


FLOW = """\
apiVersion: syncline/v1
kind: Flow
metadata: {{name: account-sync, owner: qa}}
spec:
  trigger: {{event: com.acme.account.changed}}
  idempotencyKey: data.id
  orderingKey: {ordering}
  steps:
    - id: hold
      when: "data.hold"
      park: {{code: NEEDS_REVIEW, message: a person must look}}
"""

PROJECT = """\
apiVersion: syncline/v1
kind: Project
metadata: {name: ordering-test}
spec:
  paths: [flows]
  environments: {dev: {}}
"""


def test_the_compiler_reads_both_forms_and_locates_a_bad_while_parked(
        project: Callable[[dict[str, str]], Path]) -> None:
    short = compile_project(project({"syncline.yaml": PROJECT,
                                     "flows/f.yaml": FLOW.format(ordering="data.account")}))
    assert short.flows["account-sync"].while_parked == "block"
    long = "{key: data.account, whileParked: continue}"
    plan = compile_project(project({"syncline.yaml": PROJECT,
                                    "flows/f.yaml": FLOW.format(ordering=long)}))
    flow = plan.flows["account-sync"]
    assert flow.while_parked == "continue" and flow.ordering_key is not None
    assert flow.ordering_key.search({"data": {"account": "a-1"}}) == "a-1"
    bad = "{key: data.account, whileParked: skip}"
    with pytest.raises(DefinitionErrors) as caught:
        compile_project(project({"syncline.yaml": PROJECT,
                                 "flows/f.yaml": FLOW.format(ordering=bad)}))
    text = str(caught.value)
    assert "flows/f.yaml:7" in text and "whileParked" in text and "'continue'" in text


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_later_deliveries_of_a_key_run_while_an_earlier_one_is_parked(
        project: Callable[[dict[str, str]], Path], request: pytest.FixtureRequest,
        backend: str) -> None:
    ordering = "{key: data.account, whileParked: continue}"
    root = project({"syncline.yaml": PROJECT, "flows/f.yaml": FLOW.format(ordering=ordering)})
    database = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    with LiveServer(root, database=database) as live, live.client() as http:
        ids = []
        for n, hold in ((1, True), (2, False)):
            event = {"specversion": "1.0", "id": f"ev-{n}", "type": "com.acme.account.changed",
                     "source": "tests", "data": {"id": f"c{n}", "account": "acct-9",
                                                 "hold": hold}}
            answer = http.post("/events", content=json.dumps(event),
                               headers={"content-type": "application/cloudevents+json"})
            ids.append(answer.json()["runs"][0]["run_id"])
        deadline = time.monotonic() + 10
        while http.get(f"/api/v1/runs/{ids[1]}").json()["state"] != "succeeded":
            assert time.monotonic() < deadline, "the later run waited behind the parked one"
            time.sleep(0.05)
        first = http.get(f"/api/v1/runs/{ids[0]}").json()
        assert first["state"] == "parked" and first["ordering_key"] == "acct-9"
