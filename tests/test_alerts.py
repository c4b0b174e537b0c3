"""Alerts (issue 18) through real servers: parked runs, a metric over its threshold and an
opening circuit reach the sandbox chat once per subject and repeat interval (also with two
replicas racing on PostgreSQL), a failing chat is retried by its System's RetryPolicy, and a
notification the chat has not received yet survives a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from incidentkit import CountingSystem, incident_project
from projectkit import write_files
from serverkit import LiveServer
from test_business_metrics import FLOWS, METRICS, PROJECT, runs_in, scrape, send
from test_incidents_pause import deliver

from engine.compiler import compile_project
from engine.runtime.alerting import Alerting
from engine.runtime.calls import Calls
from engine.sandbox.chat import ChatSandbox
from engine.sandbox.serving import ServerThread
from engine.server.times import seconds
from engine.store import open_store
from engine.store.alerts import AlertLog, Notification

EVERY = 0.05  # seconds between alert evaluations in these servers


def chat_system(url: str) -> str:
    return f"""\
apiVersion: syncline/v1
kind: System
metadata: {{name: chat, owner: platform}}
spec:
  baseUrl: {url}
  timeout: 2s
  retry: patient
  operations:
    post-message: {{method: POST, path: "/hooks/{{channel}}"}}
---
apiVersion: syncline/v1
kind: RetryPolicy
metadata: {{name: patient, owner: platform}}
spec:
  maxAttempts: 5
  backoff: {{initial: 50ms, multiplier: 1, max: 50ms, jitter: none}}
  retryOn: [timeout, network, "5xx"]
  onExhausted: dead-letter
"""


def alert(name: str, when: str, channel: str, *, repeat: str = "1h",
          text: str = "join(' ', [alert.name, subject, to_string(count)])") -> str:
    return f"""\
---
apiVersion: syncline/v1
kind: Alert
metadata: {{name: {name}, owner: finance}}
spec:
  when: {when}
  notify:
    system: chat
    operation: post-message
    params: {{channel: "'{channel}'"}}
    body: "{{text: {text}}}"
  repeat: {repeat}
"""


FAST_CYCLE = """\
---
apiVersion: syncline/v1
kind: Metric
metadata: {name: fast-cycle, owner: revops}
spec:
  help: An objective no deal can meet (1 ms)
  duration: {from: {flow: deal-won, state: pending}, to: {event: com.acme.order.activated}}
  objective: {percentile: 99, under: 1ms}
"""

ALERTS = FAST_CYCLE + (
    alert("deals-held", "{parked: {flows: [deal-*], reasons: [MASTER_DATA]}}", "once")
    + alert("each-deal", "{parked: {flows: [deal-won], per: run}}", "runs",
            text="join(' ', [run.key, reason.code])")
    + alert("still-held", "{parked: {flows: [deal-won]}}", "repeat", repeat="1s")
    + alert("by-reason", "{parked: {flows: ['*'], per: reason}}", "reasons")
    + alert("many-parked", "{metric: {name: deals-parked, above: 1, for: 200ms}}", "metric",
            text="join(' ', [metric.name, to_string(metric.value)])")
    + alert("too-slow", "{objective: {metric: fast-cycle}}", "objective",
            text="join(' ', [metric.name, to_string(metric.ratio), to_string(metric.count)])")
)


@pytest.fixture
def chat() -> Iterator[tuple[ChatSandbox, ServerThread]]:
    system = ChatSandbox()
    server = system.serve()
    try:
        yield system, server
    finally:
        server.stop()


@pytest.fixture
def alerts_project(tmp_path: Path, chat: tuple[ChatSandbox, ServerThread]) -> Path:
    return write_files(tmp_path, {
        "syncline.yaml": PROJECT, "flows/deals.yaml": FLOWS, "metrics/deals.yaml": METRICS,
        "flows/chat.yaml": chat_system(chat[1].url), "metrics/alerts.yaml": ALERTS,
    })


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> str | None:
    return None if request.param == "sqlite" else str(request.getfixturevalue("postgres_url"))


def wait_for(check: Callable[[], bool], what: str) -> None:
    """Until `check()`, for up to 40 s (the machine may be busy: nothing here is timed)."""
    deadline = time.monotonic() + 40
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        time.sleep(0.05)


def texts(chat: ChatSandbox, channel: str) -> list[str]:
    return [str(m["text"]) for m in chat.messages(channel)]


def notifications(http: httpx.Client, name: str) -> list[dict[str, Any]]:
    found = http.get("/api/v1/alerts", params={"alert": name}).json()["notifications"]
    return list(found)


def test_an_alert_reaches_the_chat_once_per_subject_and_interval(
    alerts_project: Path, chat: tuple[ChatSandbox, ServerThread], database: str | None
) -> None:
    system, _ = chat
    with LiveServer(alerts_project, database=database, alert_every=EVERY) as live, \
            live.client() as http:
        for deal, hold in (("d1", True), ("d2", True), ("d3", False)):
            send(http, deal, hold=hold)
        wait_for(lambda: len(runs_in(http, "parked")) == 2, "two deals parked")
        wait_for(lambda: len(texts(system, "runs")) == 2, "one message per parked run")
        wait_for(lambda: len(texts(system, "metric")) == 1, "the metric alert")
        wait_for(lambda: len(texts(system, "repeat")) == 2, "a repeat after its interval")
        time.sleep(40 * EVERY)  # many more evaluations: nothing new within the interval
        assert len(texts(system, "once")) == 1
        assert texts(system, "once")[0].startswith("deals-held deals-held ")
        assert sorted(texts(system, "runs")) == ["d1 MASTER_DATA", "d2 MASTER_DATA"]
        assert texts(system, "metric") == ["deals-parked 2"]
        assert texts(system, "objective") == ["fast-cycle 0.0 1"]  # d3 took over 1 ms
        [by_reason] = texts(system, "reasons")
        assert by_reason.startswith("by-reason MASTER_DATA ")

        def recorded(name: str) -> list[dict[str, Any]]:  # the chat has it; the store just after
            return [n for n in notifications(http, name) if n["state"] == "sent"]

        wait_for(lambda: len(recorded("still-held")) >= 2 and len(recorded("deals-held")) == 1
                 and len(recorded("each-deal")) == 2, "the notifications recorded as sent")
        sent = recorded("still-held")
        first, second = sorted(seconds(n["created_at"]) for n in sent)[:2]
        assert second - first >= 1.0  # repeat: 1s

        listing = http.get("/api/v1/alerts").json()
        assert listing["alerts"]["deals-held"]["condition"] == (
            "runs of deal-won parked (MASTER_DATA)")
        [once] = notifications(http, "deals-held")
        assert (once["state"], once["attempts"], once["subject"]) == ("sent", 1, "deals-held")
        samples = scrape(http)
        assert samples[("syncline_alerts_total", (("alert", "each-deal"), ("state", "sent")))] == 2

        for run in runs_in(http, "parked"):  # resolved: the alerts stop
            http.post(f"/api/v1/runs/{run['id']}/resume", json={"data": {"id": "x"}})
        wait_for(lambda: not runs_in(http, "parked"), "the exceptions resolved")
        time.sleep(10 * EVERY)  # a pass that read the runs before they resumed has finished
        wait_for(lambda: all(n["state"] == "sent" for n in notifications(http, "still-held")),
                 "nothing pending")
        settled = len(texts(system, "repeat"))
        time.sleep(1.5)
        assert len(texts(system, "repeat")) == settled


def test_two_replicas_racing_on_postgres_notify_once(
    alerts_project: Path, chat: tuple[ChatSandbox, ServerThread], postgres_url: str
) -> None:
    system, _ = chat
    with LiveServer(alerts_project, database=postgres_url, alert_every=0.01) as one, \
            LiveServer(alerts_project, database=postgres_url, alert_every=0.01) as two, \
            one.client() as http:
        for n in range(6):
            send(http, f"r{n}", hold=True)
        wait_for(lambda: len(texts(system, "runs")) == 6, "one message per parked run")
        time.sleep(1.0)  # both replicas evaluate ~100 times each
        assert len(texts(system, "once")) == 1
        assert sorted(texts(system, "runs")) == [f"r{n} MASTER_DATA" for n in range(6)]
        assert len(texts(system, "metric")) == 1
        with two.client() as other:  # both replicas show the same notifications
            assert notifications(other, "each-deal") == notifications(http, "each-deal")


def test_a_failing_chat_is_retried_by_its_retry_policy(
    alerts_project: Path, chat: tuple[ChatSandbox, ServerThread]
) -> None:
    system, _ = chat
    system.add_fault(status=503, count=3, path_prefix="/hooks/once")
    with LiveServer(alerts_project, alert_every=EVERY) as live, live.client() as http:
        send(http, "f1", hold=True)
        wait_for(lambda: len(texts(system, "once")) == 1, "the message, after the failures")
        # the chat has it; the store records the answer just after
        wait_for(lambda: [n["state"] for n in notifications(http, "deals-held")] == ["sent"],
                 "the notification recorded as sent")
        [sent] = notifications(http, "deals-held")
        assert (sent["state"], sent["attempts"]) == ("sent", 4)
        hooks = [r for r in system.requests if r["path"] == "/hooks/once"]
        assert [r["status"] for r in hooks] == [503, 503, 503, 200]


def test_a_notification_survives_a_restart_and_a_paused_chat_gets_nothing(
    alerts_project: Path, chat: tuple[ChatSandbox, ServerThread]
) -> None:
    system, _ = chat
    with LiveServer(alerts_project, alert_every=EVERY) as live, live.client() as http:
        paused = http.post("/api/v1/systems/chat/pause", json={"reason": "chat maintenance"})
        assert paused.status_code == 200, paused.text
        send(http, "p1", hold=True)
        wait_for(lambda: any("paused" in (n["error"] or "")
                             for n in notifications(http, "deals-held")), "a held notification")
        time.sleep(10 * EVERY)
        assert system.messages() == []
    with LiveServer(alerts_project, alert_every=EVERY) as live, live.client() as http:
        time.sleep(10 * EVERY)
        assert system.messages() == []  # still paused after the restart
        http.post("/api/v1/systems/chat/resume", json={"reason": "done"})
        wait_for(lambda: len(texts(system, "once")) == 1, "the message after the resume")
        time.sleep(10 * EVERY)
        assert len(texts(system, "once")) == 1
        [sent] = notifications(http, "deals-held")  # the one notified before the restart
        assert (sent["state"], sent["attempts"]) == ("sent", 1)


def test_a_circuit_opening_alerts_its_owners(
    tmp_path: Path, chat: tuple[ChatSandbox, ServerThread]
) -> None:
    system, server = chat
    with CountingSystem() as erp:
        erp.failing = 503
        root = incident_project(tmp_path, erp.url,
                                breaker="{failureRate: 0.5, minCalls: 2, window: 1m, openFor: 1m}")
        write_files(root, {
            "flows/chat.yaml": chat_system(server.url),
            "flows/alerts.yaml": alert("erp-down", "{circuit: {system: erp}}", "oncall",
                                       text="join(' ', [system.name, system.state])"),
        })
        with LiveServer(root, alert_every=EVERY) as live, live.client() as http:
            for n in range(3):
                deliver(http, f"c-{n}")
            wait_for(lambda: texts(system, "oncall") == ["erp open"], "the circuit alert")
            time.sleep(10 * EVERY)
            assert texts(system, "oncall") == ["erp open"]


def test_a_delivery_whose_process_died_is_taken_over_after_its_lease(
    alerts_project: Path, chat: tuple[ChatSandbox, ServerThread]
) -> None:
    system, _ = chat
    plan = compile_project(alerts_project)

    async def scenario() -> None:
        async with open_store(None, alerts_project) as store, \
                Calls(plan.systems.values(), {}) as calls:
            log = AlertLog(store)
            now = time.time()
            request = {"params": {"channel": "once"}, "query": {}, "headers": {},
                       "body": {"text": "taken over"}}
            await log.mark("deals-held", ["deals-held"], [], now)
            notification = Notification("n1", "deals-held", "deals-held", now, "pending",
                                        request, "1 run parked", 0, now)
            assert await log.claim(notification, repeat=3600)
            assert not await log.claim(notification, repeat=3600)  # once per interval
            assert await log.lease("n1", now + 3.0, now)  # a process took it ... and died
            survivor = Alerting(store, lambda: plan, lambda _: calls, clock=time.time)
            assert await survivor.deliver() == 0  # its lease still holds
            await asyncio.sleep(max(0.0, now + 3.1 - time.time()))
            assert await survivor.deliver() == 1
            assert await survivor.deliver() == 0
            [sent] = await log.recent("deals-held", 10)
            assert (sent.state, sent.attempts) == ("sent", 1)

    asyncio.run(scenario())
    assert texts(system, "once") == ["taken over"]
