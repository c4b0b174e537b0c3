"""Alert definitions the compiler refuses, each with its file, line and column, and a
suggestion where a name is close to a known one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from test_alerts import chat_system
from test_business_metrics import FLOWS, METRICS, PROJECT

from engine.compiler import compile_project
from engine.errors import DefinitionErrors

GOOD_WHEN = "{parked: {flows: [deal-won], reasons: [MASTER_DATA]}}"
GOOD_NOTIFY = "{system: chat, operation: post-message, params: {channel: \"'x'\"}}"


def with_alert(project: Callable[[dict[str, str]], Path], when: str = GOOD_WHEN,
               notify: str = GOOD_NOTIFY, extra: str = "") -> Path:
    """The deal flows and metrics, a chat System, and one Alert in metrics/bad.yaml."""
    return project({
        "syncline.yaml": PROJECT, "flows/deals.yaml": FLOWS, "metrics/deals.yaml": METRICS,
        "flows/chat.yaml": chat_system("http://127.0.0.1:9"),
        "metrics/bad.yaml": "apiVersion: syncline/v1\nkind: Alert\nmetadata: {name: bad}\n"
                            f"spec:\n  when: {when}\n  notify: {notify}\n{extra}",
    })


def errors_of(root: Path) -> list[str]:
    with pytest.raises(DefinitionErrors) as caught:
        compile_project(root)
    return [d.format() for d in caught.value.diagnostics if d.severity == "error"]


@pytest.mark.parametrize(("when", "expected"), [
    ("{metric: {name: deals-parkd, above: 1}}",
     "metrics/bad.yaml:5:19: error[E_REF] unknown metric 'deals-parkd' "
     "(did you mean 'deals-parked'?)"),
    ("{parked: {flows: [deal-wonn]}}",
     "metrics/bad.yaml:5:27: error[E_REF] 'deal-wonn' is no flow (did you mean 'deal-won'?)"),
    ("{parked: {flows: ['order-*']}}",
     "metrics/bad.yaml:5:27: error[E_REF] 'order-*' matches no flow"),
    ("{parked: {flows: [deal-won], reasons: [MASTER_DATTA]}}",
     "metrics/bad.yaml:5:48: error[E_REF] no flow it watches parks with reason code "
     "'MASTER_DATTA' (did you mean 'MASTER_DATA'?)"),
    ("{metric: {name: deals-parked, above: ten}}",
     "metrics/bad.yaml:5:39: error[E_INVALID] spec.when.metric.above: Input should be a valid "
     "number"),
    ("{metric: {name: deals-parked, above: 1, below: 3}}",
     "metrics/bad.yaml:5:10: error[E_INVALID] spec.when.metric: exactly one of 'above', "
     "'below' is required (got 'above', 'below')"),
    ("{metric: {name: deals-parked, above: 1, for: -5}}",
     "metrics/bad.yaml:5:49: error[E_INVALID] spec.when.metric.for: Input should be greater "
     "than or equal to 0"),
    ("{metric: {name: deals-parked, above: 1, for: soon}}",
     "metrics/bad.yaml:5:49: error[E_INVALID] spec.when.metric.for: 'soon' is not a duration"),
    ("{metric: {name: deal-cycle-time, above: 1}}",
     "metrics/bad.yaml:5:19: error[E_ALERT] metric 'deal-cycle-time' is a duration: alert on "
     "its objective with `objective: {metric: deal-cycle-time}`"),
    ("{metric: {name: deals-parked, above: 1, labels: {region: EU}}}",
     "metrics/bad.yaml:5:58: error[E_REF] metric 'deals-parked' has no label 'region' "
     "(did you mean 'reason'?)"),
    ("{objective: {metric: deals-parked}}",
     "metrics/bad.yaml:5:22: error[E_ALERT] metric 'deals-parked' has no objective"),
    ("{circuit: {system: erpp}}",
     "metrics/bad.yaml:5:20: error[E_REF] unknown system 'erpp'"),
    ("{parked: {flows: [deal-won]}, circuit: {system: chat}}",
     "metrics/bad.yaml:5:3: error[E_INVALID] spec.when: exactly one of 'parked', 'metric', "
     "'objective', 'circuit' is required (got 'parked', 'circuit')"),
])
def test_a_bad_condition_is_a_located_error(project: Callable[[dict[str, str]], Path],
                                            when: str, expected: str) -> None:
    found = errors_of(with_alert(project, when=when))
    assert any(line.startswith(expected) for line in found), found


@pytest.mark.parametrize(("notify", "expected"), [
    ("{system: chatt, operation: post-message}",
     "metrics/bad.yaml:6:12: error[E_REF] alert refers to unknown System 'chatt' "
     "(did you mean 'chat'?)"),
    ("{system: chat, operation: post-mesage, params: {channel: \"'x'\"}}",
     "metrics/bad.yaml:6:26: error[E_REF] system 'chat' has no operation 'post-mesage' "
     "(did you mean 'post-message'?)"),
    ("{system: chat, operation: post-message}",
     "metrics/bad.yaml:6:3: error[E_REF] operation 'post-message' path '/hooks/{channel}' "
     "needs params: channel"),
    ("{system: chat, operation: post-message, params: {channel: \"'x'\"}, "
     "body: '{text: steps.erp.body}'}",
     "metrics/bad.yaml:6:77: error[E_REF] 'steps' is not in an alert's context"),
    ("{system: chat, operation: post-message, params: {channel: \"'x'\"}, body: '{text: '}",
     "metrics/bad.yaml:6:"),
    ("{system: chat, operation: post-message, params: {channel: \"'x'\"}, "
     "body: {template: '{{ rn.id }'}}",
     "metrics/bad.yaml:6:"),
    ("{system: chat, operation: post-message, params: {channel: \"'x'\"}, "
     "body: {map: some-mapping}}",
     "error[E_ALERT] an alert's values are JMESPath expressions"),
])
def test_a_bad_notification_is_a_located_error(project: Callable[[dict[str, str]], Path],
                                               notify: str, expected: str) -> None:
    found = errors_of(with_alert(project, notify=notify))
    assert any(expected in line for line in found), found


def test_a_bad_repeat_is_a_located_error(project: Callable[[dict[str, str]], Path]) -> None:
    found = errors_of(with_alert(project, extra="  repeat: 0s\n"))
    assert found == ["metrics/bad.yaml:7:3: error[E_INVALID] spec.repeat: Input should be "
                     "greater than 0"], found


def test_the_reference_project_compiles_its_alerts() -> None:
    plan = compile_project(Path(__file__).parent.parent, environ={})
    assert sorted(plan.alerts) == ["master-data-exceptions", "order-cycle-objective"]
    finance = plan.alerts["master-data-exceptions"]
    assert (finance.owner, finance.kind, finance.notify.system.name) == ("finance", "parked",
                                                                          "chat")
    assert plan.alerts["order-cycle-objective"].hold == 900.0
