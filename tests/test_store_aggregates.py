"""The aggregates both stores keep by trigger (engine/store/aggregates.py): counts move with
every write, a step written twice counts once, a reset step stops counting, a beforeStep added
later is backfilled, and a duration observes from its first start to its end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.compiler import compile_project
from engine.runtime.business import measure
from engine.runtime.label_backfill import backfill_labels
from engine.store import (
    Checkpoint,
    EventRecord,
    NewRun,
    Reason,
    StateChange,
    StepRecord,
    Store,
)
from engine.store.aggregates import Aggregates, MetricConfig, metric_config
from engine.store.label_tallies import MAX_LABEL_VALUES

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


# -- labels resolved from a run's data and steps (engine/store/label_tallies.py) -----------------
REGIONS = "regions-v1"  # the label set of by-region (engine/compiler/metric_labels.py)
BY_REGION = MetricConfig(labels=(("by-region", REGIONS),))


def labelled(aggregates: Aggregates, state: str) -> dict[tuple[str, ...], int]:
    """Runs now in `state` of metric by-region, by label values."""
    found: dict[tuple[str, ...], int] = {}
    for metric, flow, name, _, _, values, now, _ in aggregates.labelled:
        if metric == "by-region" and flow == "orders" and name == state and now:
            found[values] = found.get(values, 0) + now
    return found


async def add_labelled(store: Store, run_id: str, region: str) -> None:
    run = NewRun(id=run_id, flow="orders", flow_version=1, plan_digest="sha256:p", key=run_id,
                 ordering_key=None, correlation_id=run_id,
                 labels=((REGIONS, (region,)),))
    await store.accept(EventRecord(id=f"ev-{run_id}", type="t", source="t", data={}), [run])


async def test_a_run_moves_from_the_labels_it_was_counted_under(store: Store) -> None:
    await store.sync_metrics(BY_REGION)
    await add_labelled(store, "r1", "EU")
    await add_labelled(store, "r2", "EU")
    assert labelled(await store.read_aggregates(), "pending") == {("EU",): 2}
    [claimed] = await store.claim("w", 1, 10**10, 30)
    parked = Reason("MASTER_DATA", "hold", "incomplete")
    await store.checkpoint(Checkpoint(claimed.id, None, "parked", reason=parked))
    found = await store.read_aggregates()
    assert labelled(found, "parked") == {("EU",): 1} and labelled(found, "pending") == {("EU",): 1}
    # resumed with corrected data: counted under the new value, no longer under the old one
    await store.set_run_state(claimed.id, StateChange(
        "pending", expect=("parked",), action="resume", labels=((REGIONS, ("APAC",)),)))
    found = await store.read_aggregates()
    assert labelled(found, "pending") == {("EU",): 1, ("APAC",): 1}
    assert labelled(found, "parked") == {}
    # a beforeStep done: the runtime resolves no labels for the metric, the run leaves it
    await store.checkpoint(Checkpoint(claimed.id, step(claimed.id, "erp"), labels=()))
    assert labelled(await store.read_aggregates(), "pending") == {("EU",): 1}
    # a definition that changes starts over; the same one again keeps the counts
    await store.sync_metrics(BY_REGION)
    assert labelled(await store.read_aggregates(), "pending") == {("EU",): 1}
    await store.sync_metrics(MetricConfig(labels=(("by-region", "regions-v2"),)))
    assert labelled(await store.read_aggregates(), "pending") == {}


async def test_past_the_bound_a_label_value_is_other_and_stays_so(store: Store) -> None:
    await store.sync_metrics(BY_REGION)
    for i in range(MAX_LABEL_VALUES):
        await add_labelled(store, f"r{i}", f"region-{i:02d}")
    await add_labelled(store, "late", "region-new")       # the 51st value
    await add_labelled(store, "again", "region-07")       # a value admitted before
    await add_labelled(store, "failed", "unknown")        # a label that failed: kept as such
    found = labelled(await store.read_aggregates(), "pending")
    assert found[("other",)] == 1 and found[("region-07",)] == 2 and found[("unknown",)] == 1
    assert len(found) == MAX_LABEL_VALUES + 2
    assert ("region-new",) not in found


async def test_accepts_batched_together_admit_the_first_values_to_arrive(store: Store) -> None:
    await store.sync_metrics(BY_REGION)
    extra = 10
    await asyncio.gather(*(add_labelled(store, f"r{i}", f"region-{i:02d}")  # one or few batches
                           for i in range(MAX_LABEL_VALUES + extra)))
    # r3 delivered again (its values all seen before): a duplicate, not counted again
    again = NewRun(id="r3-again", flow="orders", flow_version=1, plan_digest="sha256:p",
                   key="r3", ordering_key=None, correlation_id="c",
                   labels=((REGIONS, ("region-03",)),))
    event = EventRecord(id="ev-r3-again", type="t", source="t", data={})
    assert [a.status for a in await store.accept(event, [again])] == ["duplicate"]
    found = labelled(await store.read_aggregates(), "pending")
    assert found == {**{(f"region-{i:02d}",): 1 for i in range(MAX_LABEL_VALUES)},
                     ("other",): extra}


async def test_postgres_asks_about_a_label_value_once(postgres_url: str) -> None:
    # Accepts with metric labels: a batch whose values were all seen costs one query (the keys),
    # however many runs it holds; only new values are looked up, each once.
    import psycopg

    from engine.store.label_tallies import admit_postgres_many
    from engine.store.postgres import PostgresStore

    async with PostgresStore(postgres_url) as store:
        await store.sync_metrics(BY_REGION)
    statements: list[str] = []

    class Counted(psycopg.AsyncConnection):
        async def execute(self, query, params=None, **kwargs):  # type: ignore[no-untyped-def]
            statements.append(str(query))
            return await super().execute(query, params, **kwargs)

    async with await Counted.connect(postgres_url) as conn:
        runs = [((REGIONS, (region,)),) for region in ("EU", "US", "EU", "EU")] + [None]
        first = await admit_postgres_many(conn, runs)
        asked = len(statements)
        statements.clear()
        again = await admit_postgres_many(conn, runs)
    key = await store_key(postgres_url)
    assert first == again == [f'{{"{key}":["EU"]}}', f'{{"{key}":["US"]}}',
                              f'{{"{key}":["EU"]}}', f'{{"{key}":["EU"]}}', None]
    assert asked == 1 + 2 * 4  # the keys; per new value: count, lock, count again, insert
    assert len(statements) == 1


async def store_key(postgres_url: str) -> str:
    import psycopg

    async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
        row = await (await conn.execute("SELECT key FROM metric_labels")).fetchone()
    assert row is not None
    return str(row[0])


async def test_metrics_of_one_label_set_share_its_counts(store: Store) -> None:
    # by-region and by-region-again resolve the same labels: a run carries one entry for both
    await store.sync_metrics(MetricConfig(labels=(("by-region", REGIONS),
                                                  ("by-region-again", REGIONS))))
    await add_labelled(store, "r1", "EU")
    found = (await store.read_aggregates()).labelled
    assert sorted((m, values, now) for m, _, _, _, _, values, now, _ in found if now) == [
        ("by-region", ("EU",), 1), ("by-region-again", ("EU",), 1)]
    # one metric leaving the set: the other keeps the key and its counts
    await store.sync_metrics(MetricConfig(labels=(("by-region-again", REGIONS),)))
    assert labelled(await store.read_aggregates(), "pending") == {}
    found = (await store.read_aggregates()).labelled
    assert [(m, now) for m, *_, now, _ in found] == [("by-region-again", 1)]


async def test_open_runs_are_backfilled_once_under_a_new_label_set(store: Store) -> None:
    for run_id in ("r1", "r2", "r3", "done"):
        await add(store, run_id)  # written before any metric had labels: no labels
    await store.checkpoint(Checkpoint("done", None, "succeeded"))
    await store.sync_metrics(BY_REGION)
    assert await store.label_backfills() == [(REGIONS, 0)]
    first = await store.open_runs(["orders"], 0, 2)
    assert [(run_id, labels) for run_id, _, _, labels, _, _ in first] == [("r1", None),
                                                                       ("r2", None)]
    # a worker writes r1 between the page's read and its write: the backfill leaves it alone
    await store.checkpoint(Checkpoint("r1", None, labels=((REGIONS, ("APAC",)),)))
    found = [(run_id, seen, ((REGIONS, ("EU",)),)) for run_id, _, _, seen, _, _ in first]
    assert await store.relabel(REGIONS, found, first[-1][1], False) == 1
    # a second replica doing the same page at once writes nothing more
    assert await store.relabel(REGIONS, found, first[-1][1], False) == 0
    assert await store.label_backfills() == [(REGIONS, first[-1][1])]
    rest = await store.open_runs(["orders"], first[-1][1], 2)
    assert [run_id for run_id, *_ in rest] == ["r3"]  # the run that ended is not open
    found = [(run_id, seen, ((REGIONS, ("EU",)),)) for run_id, _, _, seen, _, _ in rest]
    assert await store.relabel(REGIONS, found, rest[-1][1], True) == 1
    assert await store.label_backfills() == []
    assert labelled(await store.read_aggregates(), "pending") == {("APAC",): 1, ("EU",): 2}
    await store.sync_metrics(BY_REGION)  # the same set again: nothing to backfill
    assert await store.label_backfills() == []


async def test_a_step_compensated_after_it_completed_stays_done(store: Store) -> None:
    await store.sync_metrics(MetricConfig(steps=(("orders", "erp"),)))
    await add(store, "r1")
    await store.claim("w", 1, 10**10, 30)
    await store.checkpoint(Checkpoint("r1", step("r1", "erp")))
    # compensating: the run is running again, the ERP order undone; it awaits the ERP no more
    await store.checkpoint(Checkpoint("r1", step("r1", "erp", "compensated")))
    assert tally(await store.read_aggregates(), "done:erp", "running") == 1
    await store.checkpoint(Checkpoint("r1", None, "compensated",
                                      reason=Reason("REFUSED", "book", "refused")))
    found = await store.read_aggregates()
    assert tally(found, "done:erp", "compensated", "REFUSED") == 1
    assert tally(found, "done:erp", "running") == 0


REGION_PROJECT = {
    "flows/orders.yaml": """\
        apiVersion: syncline/v1
        kind: Flow
        metadata: {name: orders, owner: t}
        spec:
          trigger: {event: com.acme.order.won}
          steps:
            - {id: hold, park: {code: HOLD, message: held}}
        ---
        apiVersion: syncline/v1
        kind: Metric
        metadata: {name: held-by-region, owner: t}
        spec:
          help: x
          gauge: {flow: orders, states: [pending, parked]}
          labels: {region: data.region}
        """,
}


async def test_two_replicas_backfilling_at_once_count_each_open_run_once(
        store: Store, project: Callable[[dict[str, str]], Path]) -> None:
    plan = compile_project(project(REGION_PROJECT))
    for i, region in enumerate(["EU", "US", "EU", "EU", "APAC"]):
        run = NewRun(id=f"r{i}", flow="orders", flow_version=1, plan_digest="sha256:p",
                     key=f"r{i}", ordering_key=None, correlation_id=f"r{i}")
        event = EventRecord(id=f"ev-{i}", type="com.acme.order.won", source="t",
                            data={"region": region})
        await store.accept(event, [run])  # before the metric: no labels
    await store.sync_metrics(metric_config(plan.metrics))
    written = await asyncio.gather(backfill_labels(store, plan, page=2),
                                   backfill_labels(store, plan, page=2))
    assert sum(written) >= 5  # each run written by one of them (or both, the same labels)
    [gauge] = measure(plan.metrics, await store.read_aggregates())
    assert {dict(key)["region"]: n for key, n in gauge.series if n} == {"EU": 3, "US": 1,
                                                                         "APAC": 1}
    assert await store.label_backfills() == []
    assert await backfill_labels(store, plan) == 0  # once: nothing left to do
