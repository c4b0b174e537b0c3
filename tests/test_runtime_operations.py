"""Ordering keys, compensation, operator actions (resume, retry, cancel, replay), plan versions,
emitted events and the process API, through a real store and a real local HTTP target."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from runtime_kit import LiveTarget, Target, detail_json, flow, meta, running, until, write_project

from engine.compiler import compile_project
from engine.errors import UsageError
from engine.store.audit import AuditQuery

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def live() -> Iterator[tuple[Target, str]]:
    server = LiveTarget()
    with server as target:
        yield target, server.url


ORDERED = flow(
    "ordered",
    """
    - id: erp
      call: {system: erp, operation: slow, body: data}
""",
    extra="  orderingKey: data.account\n",
)


async def test_same_ordering_key_runs_one_at_a_time_in_arrival_order(tmp_path: Path, live):
    target, url = live
    target.delay["/slow"] = 0.15
    root = write_project(tmp_path, url, ORDERED)
    async with running(root, concurrency=8) as (runtime, plan):
        f = plan.flows["ordered"]
        ids = []
        for i in range(4):
            for account in ("A", "B"):
                ids.append(
                    (
                        await runtime.ingest(f, {"account": account, "i": i}, meta(f"{account}{i}"))
                    ).run_id
                )
        for run_id in ids:
            assert (await runtime.wait(run_id, 10)).state == "succeeded"
    for account in ("A", "B"):
        seen = [r for r in target.to("/slow") if r.body["account"] == account]
        assert [r.body["i"] for r in seen] == [0, 1, 2, 3]
        assert all(a.done <= b.at for a, b in zip(seen, seen[1:], strict=False))
    a0, b0 = (next(r for r in target.to("/slow") if r.body == {"account": k, "i": 0}) for k in "AB")
    assert a0.at < b0.done and b0.at < a0.done  # different keys ran in parallel


COMPENSATING = flow(
    "saga",
    """
    - id: first
      call: {system: erp, operation: create, body: "{step: 'first'}"}
      compensate: {system: erp, operation: cancel, params: {id: steps.first.body.id}}
    - id: second
      call: {system: erp, operation: create, body: "{step: 'second', after: steps.first.body.id}"}
      compensate: {system: erp, operation: cancel, params: {id: steps.second.body.id}}
    - id: check
      validate:
        input: steps.second
        rules:
          - {assert: "data.ok", code: NOT_OK, message: the order is not ok}
""",
    extra="  onFailure: compensate\n",
)


async def test_on_failure_compensate_undoes_completed_steps_in_reverse_order(tmp_path, live):
    target, url = live
    root = write_project(tmp_path, url, COMPENSATING)
    async with running(root) as (runtime, plan):
        acceptance = await runtime.ingest(plan.flows["saga"], {"ok": False}, meta(1))
        run = await runtime.wait(acceptance.run_id, 10)
        detail = await detail_json(runtime, run.id)
    assert run.state == "compensated"
    assert (run.reason.code, run.reason.step) == ("NOT_OK", "check")
    cancels = [r.path for r in target.requests if r.path.endswith("/cancel")]
    assert cancels == ["/orders/X2/cancel", "/orders/X1/cancel"]
    states = {s["id"]: s["state"] for s in detail["steps"]}
    assert states == {"first": "compensated", "second": "compensated", "check": "failed"}


async def test_cancel_compensates_a_parked_run(tmp_path, live):
    target, url = live
    root = write_project(
        tmp_path, url, COMPENSATING.replace("onFailure: compensate", "onFailure: park")
    )
    async with running(root) as (runtime, plan):
        acceptance = await runtime.ingest(plan.flows["saga"], {"ok": False}, meta(1))
        assert (await runtime.wait(acceptance.run_id, 10)).state == "parked"
        await runtime.operations.cancel(acceptance.run_id, actor="alice")
        run = await runtime.wait(acceptance.run_id, 10)
        with pytest.raises(UsageError, match="is cancelled"):
            await runtime.operations.cancel(acceptance.run_id)
        audit = await runtime.store.audit_log(AuditQuery(run_id=acceptance.run_id))
    assert run.state == "cancelled" and run.reason.code == "CANCELLED"
    assert [r.path for r in target.requests if r.path.endswith("/cancel")] == [
        "/orders/X2/cancel",
        "/orders/X1/cancel",
    ]
    assert [(a["actor"], a["action"]) for a in audit[:2]] == [
        ("runtime", "cancelled"),
        ("alice", "cancel"),
    ]
    assert audit[0]["detail"]["compensated"] == ["second", "first"]


RESUMABLE = flow(
    "resumable",
    """
    - id: first
      call: {system: erp, operation: create, body: "{step: 'first', id: data.id}"}
    - id: check
      needs: [first]
      validate:
        input: data
        rules:
          - {assert: "data.amount > `0`", code: BAD_AMOUNT, message: amount must be positive}
    - id: second
      needs: [check]
      call: {system: erp, operation: create, body: "{step: 'second', amount: data.amount}"}
""",
)


async def test_resume_with_corrected_data_completes_without_duplicate_writes(tmp_path, live):
    target, url = live
    root = write_project(tmp_path, url, RESUMABLE)
    async with running(root) as (runtime, plan):
        acceptance = await runtime.ingest(plan.flows["resumable"], {"id": 7, "amount": 0}, meta(1))
        parked = await runtime.wait(acceptance.run_id, 10)
        assert parked.state == "parked" and parked.reason.code == "BAD_AMOUNT"
        with pytest.raises(UsageError, match="is parked; retry needs"):
            await runtime.operations.retry(parked.id)
        await runtime.operations.resume(parked.id, data={"id": 7, "amount": 5})
        run = await runtime.wait(parked.id, 10)
    assert run.state == "succeeded" and run.reason is None and run.generation == 1
    bodies = [r.body for r in target.to("/orders")]
    assert bodies == [{"step": "first", "id": 7}, {"step": "second", "amount": 5}]
    assert all(len(v) == 1 for v in target.writes.values())


async def test_resume_without_data_retries_a_rejected_call_with_the_same_key(tmp_path, live):
    target, url = live
    target.script["/orders"] = [400]
    root = write_project(
        tmp_path,
        url,
        flow(
            "one",
            """
        - id: erp
          call: {system: erp, operation: create, body: data}
    """,
        ),
    )
    async with running(root) as (runtime, plan):
        acceptance = await runtime.ingest(plan.flows["one"], {"n": 1}, meta(1))
        assert (await runtime.wait(acceptance.run_id, 10)).state == "parked"
        await runtime.operations.resume(acceptance.run_id)
        run = await runtime.wait(acceptance.run_id, 10)
    assert run.state == "succeeded"
    first, second = target.to("/orders")
    assert first.key == second.key


async def test_retry_a_dead_lettered_run(tmp_path, live):
    target, url = live
    target.script["/orders"] = [503] * 4
    root = write_project(
        tmp_path,
        url,
        flow(
            "once",
            """
        - id: erp
          call: {system: erp, operation: create, body: data}
          retry: fast
    """,
        ),
    )
    async with running(root) as (runtime, plan):
        acceptance = await runtime.ingest(plan.flows["once"], {"n": 1}, meta(1))
        assert (await runtime.wait(acceptance.run_id, 10)).state == "dead-lettered"
        await runtime.operations.retry(acceptance.run_id)
        run = await runtime.wait(acceptance.run_id, 10)
    assert run.state == "succeeded"
    assert len({r.key for r in target.to("/orders")}) == 1


async def test_replay_makes_a_linked_run_under_the_current_plan(tmp_path, live):
    target, url = live
    root = write_project(
        tmp_path,
        url,
        flow(
            "replayed",
            """
        - id: tag
          set: {v: "`1`"}
    """,
        ),
    )
    async with running(root) as (runtime, plan):
        first = await runtime.ingest(plan.flows["replayed"], {"n": 1}, meta(1))
        await runtime.wait(first.run_id, 10)
        write_project(
            tmp_path,
            url,
            flow(
                "replayed",
                """
            - id: tag
              set: {v: "`2`"}
        """,
            ),
        )
        await runtime.swap_plan(compile_project(root))
        replay = await runtime.operations.replay(first.run_id)
        done = await runtime.wait(replay.id, 10)
        old, new = await detail_json(runtime, first.run_id), await detail_json(runtime, replay.id)
        with pytest.raises(UsageError, match="no run 'nope'"):
            await runtime.operations.replay("nope")
    assert done.state == "succeeded"
    assert new["links"]["replay_of"] == first.run_id and old["links"]["replayed_by"] == [replay.id]
    assert new["plan_digest"] != old["plan_digest"]
    assert new["steps"][0]["output"] == {"v": 2} and old["steps"][0]["output"] == {"v": 1}


async def test_a_run_finishes_with_the_plan_it_started_with(tmp_path, live):
    target, url = live
    target.script["/orders"] = [("retry-after", 503, 1)]
    root = write_project(
        tmp_path,
        url,
        flow(
            "versioned",
            """
        - id: erp
          call: {system: erp, operation: create, body: "{v: `1`}"}
          retry: fast
    """,
        ),
    )
    async with running(root) as (runtime, plan):
        acceptance = await runtime.ingest(plan.flows["versioned"], {}, meta(1))
        await until(lambda: target.to("/orders"))
        write_project(
            tmp_path,
            url,
            flow(
                "versioned",
                """
            - id: erp
              call: {system: erp, operation: create, body: "{v: `2`}"}
              retry: fast
        """,
            ),
        )
        await runtime.swap_plan(compile_project(root))
        run = await runtime.wait(acceptance.run_id, 10)
        later = await runtime.ingest(runtime.plan.flows["versioned"], {}, meta(2))
        await runtime.wait(later.run_id, 10)
    assert run.state == "succeeded" and run.plan_digest == plan.digest
    assert [r.body for r in target.to("/orders")] == [{"v": 1}, {"v": 1}, {"v": 2}]


EMITTING = "---\n".join(
    [
        flow(
            "producer",
            """
        - id: announce
          emit: {type: com.acme.thing.done, data: "{thing: data.thing}"}
    """,
            extra="  orderingKey: data.thing\n",
        ),
        flow(
            "consumer",
            """
        - id: record
          call: {system: erp, operation: create, body: "{got: data.thing, subject: event.subject}"}
    """,
            trigger="{event: com.acme.thing.done}",
        ),
    ]
)


async def test_emit_goes_through_the_outbox_to_subscribed_flows(tmp_path, live):
    target, url = live
    root = write_project(tmp_path, url, EMITTING)
    async with running(root) as (runtime, plan):
        acceptance = await runtime.ingest(plan.flows["producer"], {"thing": "T1"}, meta(1))
        assert (await runtime.wait(acceptance.run_id, 10)).state == "succeeded"
        assert await runtime.idle(10)
        runs, cursor = await runtime.list_runs(flow="consumer")
        producer = await runtime.store.get_run(acceptance.run_id)
    assert cursor is None and [r.state for r in runs] == ["succeeded"]
    assert [r.body for r in target.to("/orders")] == [{"got": "T1", "subject": "T1"}]
    assert runs[0].correlation_id == producer.correlation_id


API = flow(
    "quote",
    """
    - id: check
      validate:
        input: data
        rules:
          - {assert: "data.amount > `0`", code: BAD_AMOUNT, message: amount must be positive}
    - id: total
      needs: [check]
      set: {amount: data.amount}
""",
    trigger="{api: {path: /api/quote}}",
    extra="  output: steps.total\n",
)


async def test_call_api_answers_output_or_errors(tmp_path, live):
    _, url = live
    root = write_project(tmp_path, url, API)
    async with running(root) as (runtime, plan):
        ok = await runtime.call_api(plan.flows["quote"], {"amount": 3}, meta(1), timeout=5)
        bad = await runtime.call_api(plan.flows["quote"], {"amount": -1}, meta(2), timeout=5)
    assert (ok.state, ok.output) == ("succeeded", {"amount": 3})
    assert bad.state == "parked" and bad.reason["code"] == "BAD_AMOUNT"
    assert bad.errors == [{"path": "", "message": "amount must be positive", "code": "BAD_AMOUNT"}]
