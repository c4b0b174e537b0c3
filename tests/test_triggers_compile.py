"""The timed triggers at compile time: a schedule's cron and time zone, a poll's operation, each
mistake reported where it is."""

from __future__ import annotations

import datetime as dt

import pytest

from engine.compiler import compile_project
from engine.compiler.triggers import CompiledSchedule, tick_text
from engine.errors import DefinitionErrors

SYSTEM = """\
    apiVersion: syncline/v1
    kind: System
    metadata: {name: erp}
    spec:
      baseUrl: "http://127.0.0.1:9"
      operations:
        list-invoices: {method: GET, path: /invoices}
        search-invoices: {method: POST, path: /invoices/search, write: false}
        create-invoice: {method: POST, path: /invoices}
        get-invoice: {method: GET, path: "/invoices/{id}"}
    ---
"""


def _flow(trigger: str, extra: str = "") -> str:
    return SYSTEM + f"""\
    apiVersion: syncline/v1
    kind: Flow
    metadata: {{name: f}}
    spec:
      trigger: {trigger}
{extra}      steps: [{{id: s, set: {{x: data}}}}]
"""


def _errors(project, text: str) -> list[tuple[str, int, str]]:
    root = project({"flows/f.yaml": text})
    with pytest.raises(DefinitionErrors) as caught:
        compile_project(root, environ={})
    return [(d.code, d.location.line, d.message) for d in caught.value.diagnostics]


def test_schedule_compiles_with_its_zone_and_keys_runs_by_tick(project) -> None:
    trigger = '{schedule: {cron: "0 6 * * *", timezone: Europe/Berlin}}'
    root = project({"flows/f.yaml": _flow(trigger)})
    flow = compile_project(root, environ={}).flows["f"]
    schedule = flow.trigger.schedule
    assert flow.trigger.kind == "schedule" and schedule is not None
    assert flow.idempotency_key is not None
    assert flow.idempotency_key.search({"data": {"tick": "T"}}) == "T"
    noon = dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.UTC).timestamp()
    # 06:00 in Berlin is 04:00 UTC in summer
    assert tick_text(schedule.latest(noon) or 0) == "2026-07-01T04:00:00Z"
    assert tick_text(schedule.following(noon) or 0) == "2026-07-02T04:00:00Z"


def test_a_tick_at_exactly_now_is_the_latest() -> None:
    schedule = CompiledSchedule("*/5 * * * *", "UTC")
    at = dt.datetime(2026, 1, 1, 10, 5, tzinfo=dt.UTC).timestamp()
    assert schedule.latest(at) == at
    assert schedule.following(at) == at + 300


@pytest.mark.parametrize(
    ("cron", "needle"),
    [
        ("61 * * * *", "invalid cron '61 * * * *'"),
        ("* * * *", "has 4 fields; a schedule takes 5"),
        ("0 0 * * * *", "has 6 fields"),
        ("every day", "has 2 fields"),
    ],
)
def test_invalid_cron_is_located(project, cron: str, needle: str) -> None:
    [(code, line, message)] = _errors(project, _flow(f'{{schedule: {{cron: "{cron}"}}}}'))
    assert (code, line) == ("E_TRIGGER", 16)
    assert needle in message


def test_unknown_timezone_is_located(project) -> None:
    text = _flow('{schedule: {cron: "0 6 * * *", timezone: Mars/Olympus}}')
    [(code, line, message)] = _errors(project, text)
    assert (code, line) == ("E_TRIGGER", 16)
    assert "unknown time zone 'Mars/Olympus'" in message


def test_schedule_refuses_an_idempotency_key(project) -> None:
    text = _flow('{schedule: {cron: "0 6 * * *"}}', "      idempotencyKey: data.id\n")
    [(code, line, message)] = _errors(project, text)
    assert (code, line) == ("E_TRIGGER", 17)
    assert "keyed by their tick time" in message


POLL = '{poll: {system: erp, operation: %s, every: 1m, items: body.items}}'
KEY = "      idempotencyKey: data.id\n"


def test_poll_compiles_a_read_and_a_non_writing_post(project) -> None:
    for op in ("list-invoices", "search-invoices"):
        root = project({"flows/f.yaml": _flow(POLL % op, KEY)})
        flow = compile_project(root, environ={}).flows["f"]
        assert flow.trigger.kind == "poll" and flow.trigger.poll is not None
        assert flow.trigger.poll.every == 60.0
        assert flow.trigger.system is not None and flow.trigger.system.name == "erp"


def test_poll_of_a_write_is_an_error(project) -> None:
    [(code, line, message)] = _errors(project, _flow(POLL % "create-invoice", KEY))
    assert (code, line) == ("E_TRIGGER", 16)
    assert "operation 'create-invoice' is a write (POST); a list read may only read" in message


def test_poll_bad_operation_and_path_params(project) -> None:
    [(code, _, message)] = _errors(project, _flow(POLL % "list-invoice", KEY))
    assert code == "E_REF" and "(did you mean 'list-invoices'?)" in message
    [(code, _, message)] = _errors(project, _flow(POLL % "get-invoice", KEY))
    assert code == "E_TRIGGER" and "has path parameters" in message


def test_poll_needs_an_idempotency_key(project) -> None:
    [(code, line, message)] = _errors(project, _flow(POLL % "list-invoices"))
    assert (code, line) == ("E_TRIGGER", 16)
    assert "needs the flow's idempotencyKey" in message


def test_two_triggers_are_refused(project) -> None:
    text = _flow('{schedule: {cron: "0 6 * * *"}, event: x.y}')
    [(code, _, message)] = _errors(project, text)
    assert code == "E_INVALID" and "'schedule'" in message
