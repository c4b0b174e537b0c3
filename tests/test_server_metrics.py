"""The request counter and ingest latency histogram of /metrics: plain counts turned into metric
families at scrape time (engine/server/metrics.py), read back with Prometheus's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from engine.server.metrics import LATENCY_BUCKETS, Metrics


def scrape(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_requests_are_counted_by_route_method_and_status() -> None:
    metrics = Metrics()
    for status in (202, 202, 401):
        metrics.request("/hooks/crm", "POST", status)
    metrics.request("<unmatched>", "GET", 404)
    samples = scrape(metrics)
    requests = {
        labels: value for (name, labels), value in samples.items()
        if name == "syncline_http_requests_total"
    }
    assert requests == {
        (("method", "POST"), ("route", "/hooks/crm"), ("status", "202")): 2,
        (("method", "POST"), ("route", "/hooks/crm"), ("status", "401")): 1,
        (("method", "GET"), ("route", "<unmatched>"), ("status", "404")): 1,
    }


def test_ingest_latency_buckets_are_cumulative_and_inclusive() -> None:
    metrics = Metrics()
    for seconds in (0.001, 0.003, 0.003, 20.0):  # on a bound, between bounds, past the last
        metrics.ingest("webhook", seconds)
    metrics.ingest("event", 0.2)
    samples = scrape(metrics)

    def bucket(kind: str, bound: str) -> float:
        return samples[("syncline_ingest_seconds_bucket", (("kind", kind), ("le", bound)))]

    assert bucket("webhook", "0.001") == 1  # le: a value on the bound counts in it
    assert bucket("webhook", "0.0025") == 1
    assert bucket("webhook", "0.005") == 3
    assert bucket("webhook", str(LATENCY_BUCKETS[-1])) == 3
    assert bucket("webhook", "+Inf") == 4
    assert samples[("syncline_ingest_seconds_count", (("kind", "webhook"),))] == 4
    assert samples[("syncline_ingest_seconds_sum", (("kind", "webhook"),))] == 20.007
    assert bucket("event", "0.1") == 0 and bucket("event", "0.25") == 1
