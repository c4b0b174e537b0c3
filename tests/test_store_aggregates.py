"""The aggregates both stores keep by trigger (engine/store/aggregates.py): counts move with
every write, a step written twice counts once, a reset step stops counting, a beforeStep added
later is backfilled, and a duration observes from its first start to its end."""

from __future__ import annotations

import pytest

from engine.store import (
    Checkpoint,
    EventRecord,
    NewRun,
    Reason,
    StateChange,
    StepRecord,
    Store,
)
from engine.store.aggregates import Aggregates, MetricConfig

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(any_store: Store) -> Store:
    return any_store


def tally(aggregates: Aggregates, kind: str, name: str, code: str = "") -> int:
    return sum(row[5] for row in aggregates.tallies
               if row[0] == kind and row[1] == "orders" and row[2] == name and row[3] == code)


async def add(store: Store, run_id: str, correlation: str = "c1") -> None:
    run = NewRun(id=run_id, flow="orders", flow_version=1, plan_digest="sha256:p", key=run_id,
                 ordering_key=None, correlation_id=correlation)
    event = EventRecord(id=f"ev-{run_id}", type="com.acme.order.won", source="t", data={})
    await store.accept(event, [run])


def step(run_id: str, step_id: str, state: str = "succeeded") -> StepRecord:
    return StepRecord(run_id=run_id, step_id=step_id, state=state, output={})


async def test_counts_follow_states_steps_and_actions(store: Store) -> None:
    await store.sync_metrics(MetricConfig(steps=(("orders", "erp"),)))
    await add(store, "r1")
    await add(store, "r2")
    assert [run.id for run in await store.claim("w", 1, 10**10, 30)] == ["r1"]
    await store.checkpoint(Checkpoint("r1", step("r1", "erp")))
    await store.checkpoint(Checkpoint("r1", step("r1", "erp")))  # written again: counted once
    parked = Reason("CREDIT_HOLD", "approve", "needs approval")
    await store.checkpoint(Checkpoint("r1", step("r1", "approve", "failed"), "parked",
                                      reason=parked))
    found = await store.read_aggregates()
    assert tally(found, "runs", "pending") == 1
    assert tally(found, "runs", "parked", "CREDIT_HOLD") == 1
    assert tally(found, "done:erp", "parked", "CREDIT_HOLD") == 1
    assert tally(found, "entered", "running") == 1
    await store.set_run_state("r1", StateChange("pending", expect=("parked",),
                                                reset_steps=("erp",), action="resume"))
    found = await store.read_aggregates()
    assert tally(found, "runs", "parked", "CREDIT_HOLD") == 0
    assert tally(found, "runs", "pending") == 2
    assert tally(found, "done:erp", "pending") == 0  # the reset step is no longer completed
    assert tally(found, "action", "resume") == 1
    assert tally(found, "entered", "pending") == 3  # two accepts and one resume


async def test_a_new_before_step_is_backfilled_and_a_removed_one_dropped(store: Store) -> None:
    await add(store, "r1")
    await store.checkpoint(Checkpoint("r1", step("r1", "erp"), "succeeded"))
    await store.sync_metrics(MetricConfig(steps=(("orders", "erp"),)))
    assert tally(await store.read_aggregates(), "done:erp", "succeeded") == 1
    await store.sync_metrics(MetricConfig())
    assert tally(await store.read_aggregates(), "done:erp", "succeeded") == 0


async def test_a_duration_runs_from_its_first_start_to_its_end(store: Store) -> None:
    bounds = (1.0, 3600.0, float("inf"))
    await store.sync_metrics(MetricConfig(
        points=(("event:com.acme.order.won", "cycle", "from"),
                ("run:orders:succeeded", "cycle", "to")),
        buckets=(("cycle", bounds),)))
    await add(store, "r1", "c1")
    await add(store, "r2", "c1")  # the same correlation again: the first start counts
    await add(store, "r3", "c3")
    await store.checkpoint(Checkpoint("r1", None, "succeeded"))
    await store.checkpoint(Checkpoint("r2", None, "succeeded"))  # no start left: no observation
    buckets, count, total = (await store.read_aggregates()).durations["cycle"]
    assert count == 1 and 0 <= total < 60
    assert buckets[-1] == (float("inf"), 1) and buckets[1] == (3600.0, 1)
    await store.sync_metrics(MetricConfig(
        points=(("event:com.acme.order.won", "cycle", "from"),
                ("run:orders:succeeded", "cycle", "to")),
        buckets=(("cycle", (60.0, float("inf"))),)))  # new bounds: the histogram starts over
    assert (await store.read_aggregates()).durations["cycle"] == ([(60.0, 0), (float("inf"), 0)],
                                                                  0, 0.0)
