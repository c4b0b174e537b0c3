"""The Metric kind: compile checks, the store's aggregates on SQLite and PostgreSQL, and the
values on /metrics and GET /api/v1/metrics through a real server, across a restart."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.compiler import compile_project
from engine.errors import DefinitionErrors
from engine.runtime.business import MAX_LABEL_VALUES, measure
from engine.store.aggregates import Aggregates
from tests.serverkit import LiveServer

FLOWS = """\
apiVersion: syncline/v1
kind: Flow
metadata: {name: deal-won, owner: revops}
spec:
  trigger: {event: com.acme.deal.won}
  idempotencyKey: data.id
  steps:
    - id: hold
      when: "data.hold"
      park: {code: MASTER_DATA, message: customer record incomplete}
    - id: book
      needs: [hold]
      set: {id: data.id, region: data.region}
    - id: activated
      needs: [book]
      emit: {type: com.acme.order.activated, data: "{id: steps.book.id}"}
---
apiVersion: syncline/v1
kind: Flow
metadata: {name: on-activated, owner: revops}
spec:
  trigger: {event: com.acme.order.activated}
  steps:
    - id: note
      set: {id: data.id}
"""

METRICS = """\
apiVersion: syncline/v1
kind: Metric
metadata: {name: deals-awaiting-booking, owner: finance}
spec:
  help: Won deals not booked yet
  gauge: {flow: deal-won, states: [pending, running, waiting, parked], beforeStep: book}
  labels: {reason: reason.code}
---
apiVersion: syncline/v1
kind: Metric
metadata: {name: deals-parked, owner: finance}
spec:
  help: Won deals parked, by reason
  gauge: {flow: "*", states: [parked]}
  labels: {reason: reason.code, flow: flow}
---
apiVersion: syncline/v1
kind: Metric
metadata: {name: deal-cycle-time, owner: revops}
spec:
  help: From a won deal received to its order activated
  duration:
    from: {flow: deal-won, state: pending}
    to: {event: com.acme.order.activated}
  buckets: [1s, 1m, 1h]
  objective: {percentile: 95, under: 10m}
---
apiVersion: syncline/v1
kind: Metric
metadata: {name: manual-interventions, owner: revops}
spec:
  help: Runs an operator had to touch
  counter: {flow: "*", actions: [resume, retry, cancel, replay]}
  labels: {action: action}
---
apiVersion: syncline/v1
kind: Metric
metadata: {name: deals-booked, owner: finance}
spec:
  help: Won deals that went through
  counter: {flow: deal-won, to: succeeded}
"""


PROJECT = """\
apiVersion: syncline/v1
kind: Project
metadata: {name: metrics-test}
spec:
  paths: [flows, metrics]
  environments: {dev: {}}
"""


@pytest.fixture
def metrics_project(project: Callable[[dict[str, str]], Path]) -> Path:
    return project({"syncline.yaml": PROJECT, "flows/deals.yaml": FLOWS,
                    "metrics/deals.yaml": METRICS})


# -- compile checks ---------------------------------------------------------------------------
def with_metric(project: Callable[[dict[str, str]], Path], name: str, spec: str) -> Path:
    """The deal flows and one Metric `name` in metrics/<name>.yaml (`spec`: lines after help)."""
    return project({"syncline.yaml": PROJECT, "flows/deals.yaml": FLOWS,
                    f"metrics/{name}.yaml": "apiVersion: syncline/v1\nkind: Metric\n"
                    f"metadata: {{name: {name}}}\nspec:\n  help: x\n" + spec})


def errors_of(project: Callable[[dict[str, str]], Path], spec: str) -> list[str]:
    root = with_metric(project, "bad", spec)
    with pytest.raises(DefinitionErrors) as caught:
        compile_project(root)
    return [d.format() for d in caught.value.diagnostics]


@pytest.mark.parametrize(("spec", "expected"), [
    ("  gauge: {flow: deal-wonn, states: [parked]}\n",
     "metrics/bad.yaml:6:11: error[E_REF] unknown flow 'deal-wonn' (did you mean 'deal-won'?)"),
    ("  gauge: {flow: deal-won, states: [parkd]}\n",
     "metrics/bad.yaml:6:36: error[E_METRIC] unknown state 'parkd' (did you mean 'parked'?)"),
    ("  gauge: {flow: deal-won, states: [parked], beforeStep: bok}\n",
     "metrics/bad.yaml:6:45: error[E_REF] flow 'deal-won' has no step 'bok' "
     "(did you mean 'book'?)"),
    ("  duration: {from: {event: com.acme.deal.wonn}, to: {flow: deal-won, state: succeeded}}\n",
     "metrics/bad.yaml:6:21: error[E_REF] no flow emits or is triggered by event type "
     "'com.acme.deal.wonn' (did you mean 'com.acme.deal.won'?)"),
    ("  gauge: {flow: deal-won, states: [parked]}\n  labels: {region: dta.region}\n",
     "metrics/bad.yaml:7:12: error[E_METRIC] label 'region' reads 'dta' (did you mean 'data'?): "
     "a label reads flow, state, reason (code, step), action, data or steps"),
    ("  gauge: {flow: deal-won, states: [parked]}\n  labels: {region: steps.book.regin}\n",
     "metrics/bad.yaml:7:31: error[E_FIELD] label 'region' reads steps.book.regin, but "
     "steps.book has no field 'regin' (did you mean 'region'?): it would always be null"),
    ("  gauge: {flow: deal-won, states: [parked]}\n  labels: {region: steps.bok.region}\n",
     "metrics/bad.yaml:7:26: error[E_REF] label 'region' reads step 'bok', which flow "
     "'deal-won' does not have (did you mean 'book'?)"),
    ("  gauge: {flow: deal-won, states: [parked]}\n  labels: {deal: steps.book.id}\n",
     "metrics/bad.yaml:7:29: error[E_METRIC] label 'deal' reads 'steps.book.id', a per-run "
     "identifier: its values are not bounded (a label has at most 50 values, then 'other')"),
    ("  gauge: {flow: deal-won, states: [parked]}\n  labels: {deal: steps.book}\n",
     "metrics/bad.yaml:7:18: error[E_METRIC] label 'deal' is an object by its schema: a label "
     "must be a bounded value (a string, number or boolean)"),
    ("  gauge: {flow: deal-won, states: [parked]}\n"
     "  labels: {where: \"join('/', [state, data.region])\"}\n",
     "metrics/bad.yaml:7:20: error[E_METRIC] label 'where' reads 'state' and a run's data or "
     "steps: a label reading data or steps is resolved when they are written, so it may read "
     "flow, data and steps only (put 'state' in a label of its own)"),
    ("  counter: {flow: deal-won, actions: [resume]}\n  labels: {region: data.region}\n",
     "metrics/bad.yaml:7:12: error[E_METRIC] label 'region' reads a run's data or steps: an "
     "action counter's labels read flow and action"),
    ("  gauge: {flow: \"*\", states: [parked]}\n  labels: {region: steps.bok.region}\n",
     "metrics/bad.yaml:7:26: error[E_REF] label 'region' reads step 'bok', which flow "
     "'deal-won' does not have (did you mean 'book'?); no flow it counts has it"),
    ("  gauge: {flow: \"*\", states: [parked]}\n  labels: {deal: steps.book}\n",
     "metrics/bad.yaml:7:18: error[E_METRIC] label 'deal' is an object by its schema: a label "
     "must be a bounded value (a string, number or boolean) (in flow 'deal-won')"),
    ("  counter: {flow: deal-won, to: done}\n",
     "metrics/bad.yaml:6:29: error[E_METRIC] unknown state 'done'"),
])
def test_a_bad_metric_is_a_located_error(project: Callable[[dict[str, str]], Path], spec: str,
                                         expected: str) -> None:
    assert expected in errors_of(project, spec)


def test_a_duration_whose_end_never_follows_its_start_is_a_warning(
        project: Callable[[dict[str, str]], Path]) -> None:
    root = with_metric(project, "odd", "  duration:\n"
                       "    from: {flow: on-activated, state: succeeded}\n"
                       "    to: {flow: deal-won, state: succeeded}\n")
    plan = compile_project(root)
    [warning] = [w.format() for w in plan.warnings if w.code == "W_METRIC"]
    assert warning.startswith("metrics/odd.yaml:8:5: warning[W_METRIC] 'run:deal-won:succeeded' "
                              "never follows 'run:on-activated:succeeded'")


def test_a_label_of_every_flow_that_only_some_flows_have_is_a_warning(
        project: Callable[[dict[str, str]], Path]) -> None:
    root = with_metric(project, "everywhere", "  gauge: {flow: \"*\", states: [parked]}\n"
                       "  labels: {region: steps.book.region}\n")
    plan = compile_project(root)
    assert [w.format() for w in plan.warnings if w.code == "W_METRIC"] == [
        "metrics/everywhere.yaml:7:26: warning[W_METRIC] label 'region' reads steps.book, which "
        "flow 'on-activated' cannot have (by its steps and schemas): its runs read ''"]
    assert plan.metrics["everywhere"].run_labels == {"region"}


def test_label_values_are_bounded_and_a_failing_label_reads_unknown(
        project: Callable[[dict[str, str]], Path]) -> None:
    root = with_metric(project, "parked", "  gauge: {flow: deal-won, states: [parked]}\n"
                       "  labels: {reason: reason.code, bad: 'abs(reason.code)'}\n")
    plan = compile_project(root)
    tallies = [("runs", "deal-won", "parked", f"CODE_{i:03d}", "hold", i + 1)
               for i in range(MAX_LABEL_VALUES + 10)]
    [value] = measure(plan.metrics, Aggregates(tallies, {}))
    reasons = {dict(key)["reason"] for key, _ in value.series}
    assert len(reasons) == MAX_LABEL_VALUES + 1 and "other" in reasons
    assert "CODE_000" not in reasons and "CODE_059" in reasons  # the largest keep their names
    assert value.value(reason="other") == sum(range(1, 11))
    assert {dict(key)["bad"] for key, _ in value.series} == {"unknown"}
    assert value.value() == sum(range(1, MAX_LABEL_VALUES + 11))


# -- through a real server, on both stores --------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> str | None:
    return None if request.param == "sqlite" else str(request.getfixturevalue("postgres_url"))


def send(http: httpx.Client, deal: str, *, hold: bool, region: str = "EU") -> None:
    event = {"specversion": "1.0", "id": f"ev-{deal}", "type": "com.acme.deal.won",
             "source": "tests", "datacontenttype": "application/json",
             "data": {"id": deal, "hold": hold, "region": region}}
    response = http.post("/events", content=json.dumps(event),
                         headers={"content-type": "application/cloudevents+json"})
    assert response.status_code == 202, response.text


def metrics_json(http: httpx.Client) -> dict[str, dict]:
    return {m["name"]: m for m in http.get("/api/v1/metrics").json()["metrics"]}


def scrape(http: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 15
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        time.sleep(0.05)


def runs_in(http: httpx.Client, state: str) -> list[dict]:
    return list(http.get("/api/v1/runs", params={"state": state}).json()["runs"])


def test_metrics_move_with_the_runs_and_survive_a_restart(metrics_project: Path,
                                                          database: str | None) -> None:
    with LiveServer(metrics_project, database=database) as live, live.client() as http:
        send(http, "d1", hold=True)
        send(http, "d2", hold=False)
        send(http, "d3", hold=True)
        wait_for(lambda: len(runs_in(http, "parked")) == 2, "two deals parked")
        wait_for(lambda: metrics_json(http)["deals-booked"]["value"] == 1, "one deal booked")
        bad = http.post("/events", content=b"{", headers={"content-type": "application/json"})
        assert bad.status_code == 415
        technical = scrape(http)
        assert technical[("syncline_runs", (("flow", "deal-won"), ("reason", "MASTER_DATA"),
                                            ("state", "parked")))] == 2
        assert technical[("syncline_deliveries_total", (("outcome", "accepted"),
                                                        ("route", "/events")))] == 3
        assert technical[("syncline_deliveries_total", (("outcome", bad.json()["error"]["code"]),
                                                        ("route", "/events")))] == 1
        values = metrics_json(http)
        assert [s for s in values["deals-awaiting-booking"]["series"] if s["value"]] == [
            {"labels": {"reason": "MASTER_DATA"}, "value": 2}]
        assert values["deals-parked"]["value"] == 2
        assert values["deals-parked"]["owner"] == "finance"
        cycle = values["deal-cycle-time"]
        assert cycle["count"] == 1 and cycle["objective"]["ratio"] == 1.0
        assert cycle["objective"]["met"] is True and cycle["prometheus"].endswith("_seconds")

        parked = runs_in(http, "parked")[0]["id"]
        resumed = http.post(f"/api/v1/runs/{parked}/resume", json={"data": {"id": "d1",
                                                                              "hold": False}})
        assert resumed.status_code == 200, resumed.text
        wait_for(lambda: metrics_json(http)["deals-booked"]["value"] == 2, "resumed deal booked")
        samples = scrape(http)
        assert samples[("syncline_business_deals_awaiting_booking",
                        (("reason", "MASTER_DATA"),))] == 1
        assert samples[("syncline_business_manual_interventions_total",
                        (("action", "resume"),))] == 1
        assert samples[("syncline_business_deals_booked_total", ())] == 2
        assert samples[("syncline_business_deal_cycle_time_seconds_count", ())] == 2
        assert samples[("syncline_business_deal_cycle_time_seconds_bucket", (("le", "+Inf"),))] == 2
        assert samples[("syncline_business_deal_cycle_time_objective_ratio", ())] == 1.0
        before = metrics_json(http)
    with LiveServer(metrics_project, database=database) as live, live.client() as http:
        after = metrics_json(http)
        for name in before:
            for field in ("value", "series", "count", "buckets"):
                assert after[name].get(field) == before[name].get(field), (name, field)
        still = runs_in(http, "parked")[0]["id"]
        http.post(f"/api/v1/runs/{still}/cancel").raise_for_status()
        wait_for(lambda: metrics_json(http)["deals-awaiting-booking"]["value"] == 0, "none left")
        values = metrics_json(http)
        assert values["deals-parked"]["value"] == 0
        assert values["manual-interventions"]["value"] == 2


BY_REGION = """\
---
apiVersion: syncline/v1
kind: Metric
metadata: {name: deals-held-by-region, owner: finance}
spec:
  help: Won deals not booked yet, by region (and a label that fails on data without an amount)
  gauge: {flow: deal-won, states: [pending, running, waiting, parked], beforeStep: book}
  labels: {region: data.region, reason: reason.code, size: "abs(data.amount)"}
"""


def held(http: httpx.Client) -> dict[tuple[str, str, str], int]:
    """The by-region gauge's non-zero series as (region, reason, size) -> runs."""
    series = metrics_json(http)["deals-held-by-region"]["series"]
    return {(s["labels"]["region"], s["labels"]["reason"], s["labels"]["size"]): s["value"]
            for s in series if s["value"]}


def run_of(http: httpx.Client, deal: str) -> str:
    [run] = http.get("/api/v1/runs", params={"key": deal}).json()["runs"]
    return str(run["id"])


def test_a_data_label_moves_with_corrected_data_and_survives_a_restart(
        project: Callable[[dict[str, str]], Path], database: str | None) -> None:
    root = project({"syncline.yaml": PROJECT, "flows/deals.yaml": FLOWS,
                    "metrics/deals.yaml": METRICS + BY_REGION})
    with LiveServer(root, database=database) as live, live.client() as http:
        for deal, hold, region in (("d1", True, "EU"), ("d2", True, "US"), ("d3", False, "EU")):
            send(http, deal, hold=hold, region=region)
        wait_for(lambda: len(runs_in(http, "parked")) == 2, "two deals parked")
        wait_for(lambda: metrics_json(http)["deals-booked"]["value"] == 1, "one deal booked")
        assert held(http) == {("EU", "MASTER_DATA", "unknown"): 1,
                              ("US", "MASTER_DATA", "unknown"): 1}
        corrected = {"id": "d1", "hold": True, "region": "APAC", "amount": -5}
        http.post(f"/api/v1/runs/{run_of(http, 'd1')}/resume",
                  json={"data": corrected}).raise_for_status()
        wait_for(lambda: ("APAC", "MASTER_DATA", "5") in held(http), "d1 parked again")
        assert held(http) == {("APAC", "MASTER_DATA", "5"): 1, ("US", "MASTER_DATA", "unknown"): 1}
        samples = scrape(http)
        assert samples[("syncline_business_deals_held_by_region",
                        (("reason", "MASTER_DATA"), ("region", "US"), ("size", "unknown")))] == 1
    with LiveServer(root, database=database) as live, live.client() as http:
        assert held(http) == {("APAC", "MASTER_DATA", "5"): 1, ("US", "MASTER_DATA", "unknown"): 1}
        http.post(f"/api/v1/runs/{run_of(http, 'd1')}/resume",
                  json={"data": {**corrected, "hold": False}}).raise_for_status()
        wait_for(lambda: metrics_json(http)["deals-booked"]["value"] == 2, "d1 booked")
        assert held(http) == {("US", "MASTER_DATA", "unknown"): 1}


def test_a_run_parked_before_its_data_label_existed_is_counted_after_a_reload(
        project: Callable[[dict[str, str]], Path], database: str | None) -> None:
    root = project({"syncline.yaml": PROJECT, "flows/deals.yaml": FLOWS,
                    "metrics/deals.yaml": METRICS})
    with LiveServer(root, database=database, watch=True, debounce=0.1) as live, \
            live.client() as http:
        send(http, "d1", hold=True, region="US")
        send(http, "d2", hold=False, region="EU")
        wait_for(lambda: len(runs_in(http, "parked")) == 1, "d1 parked")
        wait_for(lambda: metrics_json(http)["deals-booked"]["value"] == 1, "d2 booked")
        first = live.state.plan.digest
        (root / "metrics" / "deals.yaml").write_text(METRICS + BY_REGION)
        wait_for(lambda: live.state.reload is not None and live.state.reload.digest not in
                 (None, first), "the plan with the label installed")
        # d1 was written before the label existed; the reload counted it (d2 has ended)
        assert held(http) == {("US", "MASTER_DATA", "unknown"): 1}
        send(http, "d3", hold=True, region="EU")  # written after: counted as it is accepted
        wait_for(lambda: len(runs_in(http, "parked")) == 2, "d3 parked")
        assert held(http) == {("US", "MASTER_DATA", "unknown"): 1,
                              ("EU", "MASTER_DATA", "unknown"): 1}
    with LiveServer(root, database=database) as live, live.client() as http:
        # a restart finds nothing more to backfill, and counts nothing twice
        assert held(http) == {("US", "MASTER_DATA", "unknown"): 1,
                              ("EU", "MASTER_DATA", "unknown"): 1}
        http.post(f"/api/v1/runs/{run_of(http, 'd1')}/resume",
                  json={"data": {"id": "d1", "hold": False, "region": "US"}}).raise_for_status()
        wait_for(lambda: metrics_json(http)["deals-booked"]["value"] == 2, "d1 booked")
        assert held(http) == {("EU", "MASTER_DATA", "unknown"): 1}
