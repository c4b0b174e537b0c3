"""The executor against a real SQLite store and a real local HTTP target: every step kind,
concurrency of independent steps, checkpoints before dependents, `when`, parking before writes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from runtime_kit import LiveTarget, Target, detail_json, flow, meta, running, write_project

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def target() -> Iterator[tuple[Target, str]]:
    live = LiveTarget()
    with live as target:
        yield target, live.url


MAP_SCHEMA = """\
apiVersion: syncline/v1
kind: Schema
metadata: {name: order, owner: qa}
spec:
  jsonSchema:
    type: object
    required: [order_id, lines]
    properties:
      order_id: {type: string}
      lines: {type: array}
      currency: {type: string}
---
apiVersion: syncline/v1
kind: Mapping
metadata: {name: to-order, owner: qa}
spec:
  target: order
  fields:
    order_id: Id
    lines: Lines
    currency: {expr: Currency, default: USD}
"""

ALL_KINDS = flow(
    "all-kinds",
    """
    - id: order
      map: to-order
    - id: check
      validate:
        schema: order
        rules:
          - {assert: "length(steps.order.lines) > `0`", code: NO_LINES, message: order has no lines}
    - id: erp
      needs: [check]
      call: {system: erp, operation: create, body: steps.order}
    - id: extra
      set: {erp_id: steps.erp.body.id, n: "length(steps.order.lines)"}
    - id: never
      when: "data.Currency == 'XXX'"
      set: {x: "`1`"}
    - id: after
      set: {saw: steps.never}
    - id: done
      emit: {type: com.acme.order.created, data: "{id: steps.extra.erp_id}"}
""",
    extra="  idempotencyKey: data.Id\n  orderingKey: data.Account\n",
)


async def test_every_step_kind_runs_and_checkpoints(tmp_path: Path, target: tuple[Target, str]):
    tgt, url = target
    root = write_project(tmp_path, url, ALL_KINDS, {"flows/mapping.yaml": MAP_SCHEMA})
    async with running(root) as (runtime, plan):
        acceptance = await runtime.ingest(
            plan.flows["all-kinds"], {"Id": "O1", "Lines": [1, 2], "Account": "A"}, meta(1)
        )
        run = await runtime.wait(acceptance.run_id, 10)
        detail = await detail_json(runtime, run.id)
    assert run.state == "succeeded", detail
    steps = {s["id"]: s for s in detail["steps"]}
    assert steps["order"]["output"] == {"order_id": "O1", "lines": [1, 2], "currency": "USD"}
    assert steps["erp"]["output"]["status"] == 201
    assert steps["extra"]["output"] == {"erp_id": "X1", "n": 2}
    assert steps["never"]["state"] == "skipped" and steps["never"]["output"] is None
    assert steps["after"]["output"] == {"saw": None}  # dependents of a skipped step see null
    assert steps["done"]["output"]["data"] == {"id": "X1"}
    assert steps["done"]["output"]["subject"] == "A"  # default subject: the ordering key
    assert steps["done"]["output"]["source"] == "syncline/all-kinds"
    assert all(
        s["input_digest"]
        for s in detail["steps"]
        if s["state"] == "succeeded" and s["id"] != "never"
    )
    [write] = tgt.to("/orders")
    assert write.body == {"order_id": "O1", "lines": [1, 2], "currency": "USD"}
    assert write.headers["x-correlation-id"] == run.correlation_id
    assert write.headers["traceparent"].startswith("00-")
    assert len(write.key or "") == 64


async def test_failed_validate_parks_before_any_write(tmp_path: Path, target: tuple[Target, str]):
    tgt, url = target
    root = write_project(tmp_path, url, ALL_KINDS, {"flows/mapping.yaml": MAP_SCHEMA})
    async with running(root) as (runtime, plan):
        acceptance = await runtime.ingest(
            plan.flows["all-kinds"], {"Id": "O2", "Lines": [], "Account": "A"}, meta(2)
        )
        run = await runtime.wait(acceptance.run_id, 10)
    assert run.state == "parked"
    assert (run.reason.code, run.reason.step) == ("NO_LINES", "check")
    assert "order has no lines" in run.reason.message
    assert tgt.requests == []


async def test_mapping_failure_parks_with_mapping_failed(
    tmp_path: Path, target: tuple[Target, str]
):
    _, url = target
    root = write_project(tmp_path, url, ALL_KINDS, {"flows/mapping.yaml": MAP_SCHEMA})
    async with running(root) as (runtime, plan):
        acceptance = await runtime.ingest(plan.flows["all-kinds"], {"Lines": [1]}, meta(3))
        run = await runtime.wait(acceptance.run_id, 10)
    assert run.state == "parked" and run.reason.code == "MAPPING_FAILED"
    assert run.reason.step == "order"


PARALLEL = flow(
    "parallel",
    """
    - id: a
      call: {system: erp, operation: slow, body: "{n: `1`}"}
    - id: b
      call: {system: erp, operation: slow2, body: "{n: `2`}"}
    - id: both
      set: {a: steps.a.status, b: steps.b.status}
""",
)


async def test_independent_steps_overlap_in_time(tmp_path: Path, target: tuple[Target, str]):
    tgt, url = target
    tgt.delay.update({"/slow": 0.4, "/slow2": 0.4})
    root = write_project(tmp_path, url, PARALLEL)
    async with running(root) as (runtime, plan):
        acceptance = await runtime.ingest(plan.flows["parallel"], {}, meta(4))
        run = await runtime.wait(acceptance.run_id, 10)
    assert run.state == "succeeded"
    [a], [b] = tgt.to("/slow"), tgt.to("/slow2")
    assert a.at < b.done and b.at < a.done  # both were in flight at once


CHAIN = flow(
    "chain",
    """
    - id: first
      call: {system: erp, operation: create, body: "{n: `1`}"}
    - id: second
      call: {system: erp, operation: create, body: "{prev: steps.first.body.id}"}
""",
)


async def test_step_result_is_durable_before_dependent_starts(
    tmp_path: Path, target: tuple[Target, str]
):
    tgt, url = target
    root = write_project(tmp_path, url, CHAIN)
    seen_records: list[dict] = []
    async with running(root) as (runtime, plan):
        original = tgt._apply

        def spy(key, path, body):  # runs on the target's thread when `second` arrives
            if body and "prev" in body:
                import sqlite3

                conn = sqlite3.connect(root / ".syncline" / "syncline.db")
                seen_records.extend(
                    {"step": r[0], "state": r[1]}
                    for r in conn.execute("SELECT step_id, state FROM steps")
                )
                conn.close()
            return original(key, path, body)

        tgt._apply = spy
        acceptance = await runtime.ingest(plan.flows["chain"], {}, meta(5))
        run = await runtime.wait(acceptance.run_id, 10)
    assert run.state == "succeeded"
    assert {"step": "first", "state": "succeeded"} in seen_records


PARK = flow(
    "parky",
    """
    - id: stop
      when: "data.hold"
      park: {code: NEEDS_REVIEW, message: a human must look}
    - id: write
      needs: [stop]
      call: {system: erp, operation: create, body: data}
""",
)


async def test_park_step_stops_the_run(tmp_path: Path, target: tuple[Target, str]):
    tgt, url = target
    root = write_project(tmp_path, url, PARK)
    async with running(root) as (runtime, plan):
        parked = await runtime.wait(
            (await runtime.ingest(plan.flows["parky"], {"hold": True}, meta(6))).run_id, 10
        )
        passed = await runtime.wait(
            (await runtime.ingest(plan.flows["parky"], {"hold": False}, meta(7))).run_id, 10
        )
    assert parked.state == "parked" and parked.reason.code == "NEEDS_REVIEW"
    assert parked.reason.message == "a human must look"
    assert passed.state == "succeeded"
    assert [r.body for r in tgt.to("/orders")] == [{"hold": False}]


async def test_filter_and_duplicates(tmp_path: Path, target: tuple[Target, str]):
    _, url = target
    filtered = flow(
        "filtered",
        """
        - id: s
          set: {x: data.x}
    """,
        extra="  filter: \"data.x == 'yes'\"\n  idempotencyKey: data.id\n",
    )
    root = write_project(tmp_path, url, filtered)
    async with running(root) as (runtime, plan):
        f = plan.flows["filtered"]
        first = await runtime.ingest(f, {"x": "yes", "id": 1}, meta(8))
        again = await runtime.ingest(f, {"x": "yes", "id": 1}, meta(9))
        skipped = await runtime.ingest(f, {"x": "no", "id": 2}, meta(10))
        run = await runtime.wait(first.run_id, 10)
    assert (first.status, again.status, skipped.status) == ("accepted", "duplicate", "filtered")
    assert again.run_id == first.run_id
    assert run.state == "succeeded"
