"""Echo suppression against real sandbox systems and a real `syncline serve` on a socket, on both
stores: Syncline's own write to a CRM account or a billing subscription comes back as a signed
webhook and is filtered (reason ECHO, naming the writing run); a person's edit of a field a flow
reads runs, even at the same moment; the fingerprint of a write whose answer was lost (or whose
server went away) still counts; it expires with the window; a delivery without a record id is
never checked. Plus the comparison rules and the compile errors."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from serverkit import LiveServer

from engine.compiler import compile_project
from engine.errors import DefinitionErrors
from engine.runtime.echo import changed_paths, flatten, same_value
from engine.sandbox.billing import BillingSandbox
from engine.sandbox.crm import DEFAULT_WEBHOOK_SECRET as CRM_SECRET
from engine.sandbox.crm import CrmSandbox
from engine.sandbox.serving import ServerThread
from engine.server.signatures import sign
from engine.tls import tls_context
from tests.projectkit import write_files

TLS = tls_context()  # one CA load for the module, not one per client (50-80 ms each)


TOKEN = "echo-admin-token"
BILLING_SECRET = "whsec_sandbox_billing_0123456789abcdef"
SECRETS = {"CRM_HOOK": CRM_SECRET, "BILLING_HOOK": BILLING_SECRET}

PROJECT = """\
apiVersion: syncline/v1
kind: Project
metadata: {name: echo-test, owner: qa}
spec:
  paths: [flows]
  environments:
    dev: {vars: {CRM_URL: "{crm}", BILLING_URL: "{billing}"}}
"""

SYSTEMS = """\
apiVersion: syncline/v1
kind: System
metadata: {name: crm, owner: qa}
spec:
  baseUrl: ${env.CRM_URL}
  idempotencyHeader: Idempotency-Key
  operations:
    update-account:
      method: PATCH
      path: "/services/data/v60.0/sobjects/Account/{id}"
      record: {type: account, id: params.id}
      schema: account@1
  echo: {window: WINDOW}
  webhooks: {scheme: standard-webhooks, secret: "${secret.CRM_HOOK}", tolerance: 5m}
---
apiVersion: syncline/v1
kind: System
metadata: {name: billing, owner: qa}
spec:
  baseUrl: ${env.BILLING_URL}
  idempotencyHeader: Idempotency-Key
  operations:
    update-subscription:
      method: POST
      path: "/v1/subscriptions/{id}"
      record: {type: subscription, id: params.id}
  echo: {window: 15m}
  webhooks: {scheme: stripe, secret: "${secret.BILLING_HOOK}", tolerance: 5m}
---
apiVersion: syncline/v1
kind: Schema
metadata: {name: account, version: 1, owner: qa}
spec:
  jsonSchema:
    type: object
    properties:
      Contract_Value__c: {type: number}
      Status__c: {type: string}
"""

FLOWS = """\
apiVersion: syncline/v1
kind: Flow
metadata: {name: write-account, owner: qa}
spec:
  trigger: {api: {path: /api/account, timeout: 10s}}
  steps:
    - id: crm
      call: {system: crm, operation: update-account, params: {id: data.id}, body: data.fields}
  output: steps.crm.status
---
apiVersion: syncline/v1
kind: Flow
metadata: {name: write-subscription, owner: qa}
spec:
  trigger: {api: {path: /api/subscription, timeout: 10s}}
  steps:
    - id: billing
      call: {system: billing, operation: update-subscription, params: {id: data.id},
             body: data.fields}
---
apiVersion: syncline/v1
kind: Flow
metadata: {name: crm-accounts, owner: qa}
spec:
  trigger:
    webhook:
      path: /hooks/crm
      system: crm
      record:
        type: account
        id: "data.event == 'account.updated' && data.data.Id"
        fields: data.data
        changed: data.changedFields
  steps:
    - id: seen
      set: {name: data.data.Name, city: data.data.BillingCity, status: data.data.Status__c,
            value: data.data.Contract_Value__c}
---
apiVersion: syncline/v1
kind: Flow
metadata: {name: billing-subscriptions, owner: qa}
spec:
  trigger:
    webhook:
      path: /hooks/billing
      system: billing
      record:
        type: subscription
        id: "starts_with(data.type, 'customer.subscription.') && data.data.object.id"
        fields: data.data.object
        changed: data.data.previous_attributes
  filter: "data.type == 'customer.subscription.updated'"
  steps:
    - id: seen
      set: {subscription: data.data.object}
"""


class Stack:
    """The CRM and billing sandboxes on sockets, and a Syncline server their webhooks reach."""

    def __init__(self, root: Path, database: str | None, window: str = "15m") -> None:
        self.root, self.database, self.window = root, database, window
        self.crm = CrmSandbox()
        self.billing = BillingSandbox()
        self.servers: list[ServerThread] = []
        self.syncline: LiveServer | None = None

    def __enter__(self) -> Stack:
        self.servers = [self.crm.serve(), self.billing.serve()]
        crm_url, billing_url = (s.url for s in self.servers)
        write_files(self.root, {
            "syncline.yaml": PROJECT.replace("{crm}", crm_url).replace("{billing}", billing_url),
            "flows/systems.yaml": SYSTEMS.replace("WINDOW", self.window),
            "flows/flows.yaml": FLOWS,
        })
        self.start()
        return self

    def start(self) -> None:
        self.syncline = LiveServer(self.root, admin_token=TOKEN, secrets=SECRETS,
                                   database=self.database).__enter__()
        self.crm.configure_webhook(url=self.syncline.url + "/hooks/crm")
        self.billing.configure_webhook(url=self.syncline.url + "/hooks/billing")

    def stop_syncline(self) -> None:
        assert self.syncline is not None
        self.syncline.__exit__(None, None, None)
        self.syncline = None

    def __exit__(self, *exc: object) -> None:
        if self.syncline is not None:
            self.stop_syncline()
        for server in self.servers:
            server.stop()

    @property
    def http(self) -> httpx.Client:
        assert self.syncline is not None
        return self.syncline.client(headers={"Authorization": f"Bearer {TOKEN}"})

    def account(self, **fields: Any) -> str:
        """An account created in the CRM by a person (no webhook: creates send none)."""
        body = {"Name": "Initech", "BillingCity": "Austin", **fields}
        answer = httpx.post(self.servers[0].url + "/services/data/v60.0/sobjects/Account",
                            json=body, verify=TLS)
        return str(answer.json()["id"])

    def person_edits(self, account: str, **fields: Any) -> None:
        answer = httpx.patch(
            f"{self.servers[0].url}/services/data/v60.0/sobjects/Account/{account}", json=fields,
            verify=TLS)
        assert answer.status_code == 204, answer.text

    def syncline_writes(self, account: str, **fields: Any) -> str:
        """Syncline writes to the account (a run of write-account); its run id."""
        with self.http as http:
            answer = http.post("/api/account", json={"id": account, "fields": fields})
        assert answer.status_code == 200, answer.text
        return answer.headers["x-syncline-run-id"]

    def runs(self, flow: str, expected: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        """The flow's runs once there are `expected` of them, oldest first."""
        deadline = time.monotonic() + timeout
        with self.http as http:
            while True:
                runs = http.get("/api/v1/runs", params={"flow": flow}).json()["runs"]
                done = [r for r in runs if r["state"] in ("filtered", "succeeded", "parked")]
                if len(done) >= expected or time.monotonic() > deadline:
                    return sorted(runs, key=lambda r: r["created_at"])
                time.sleep(0.05)

    def metrics(self) -> str:
        with self.http as http:
            return http.get("/metrics").text


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def stack(tmp_path: Path, database: str | None) -> Iterator[Stack]:
    with Stack(tmp_path, database) as running:
        yield running


def _echo_of(run: dict[str, Any]) -> str | None:
    reason = run["reason"] or {}
    return reason.get("message") if reason.get("code") == "ECHO" else None


def test_syncline_s_own_write_comes_back_filtered_as_an_echo(stack: Stack) -> None:
    account = stack.account()
    writer = stack.syncline_writes(account, Status__c="Active", Contract_Value__c=36000)
    [run] = stack.runs("crm-accounts", 1)
    assert run["state"] == "filtered"
    message = _echo_of(run)
    assert message is not None and writer in message and account in message
    text = stack.metrics()
    assert 'syncline_echoes_total{flow="crm-accounts",system="crm"} 1.0' in text
    assert 'route="/hooks/crm"' in text and 'outcome="filtered"' in text


def test_a_person_s_edit_at_the_same_moment_runs(stack: Stack) -> None:
    account = stack.account()
    stack.syncline_writes(account, Status__c="Active")
    stack.person_edits(account, BillingCity="Dallas")  # while the echo is on its way
    echo, edit = stack.runs("crm-accounts", 2)
    assert _echo_of(echo) is not None
    assert edit["state"] == "succeeded" and edit["reason"] is None


def test_a_person_writing_the_field_back_and_forth_is_never_swallowed(stack: Stack) -> None:
    account = stack.account()
    stack.syncline_writes(account, Status__c="Active")
    stack.person_edits(account, Status__c="Inactive")
    stack.person_edits(account, Status__c="Active")  # the value Syncline wrote, set by a person
    runs = stack.runs("crm-accounts", 3)
    assert [r["state"] for r in runs] == ["filtered", "succeeded", "succeeded"]


def test_a_change_only_in_fields_no_flow_reads_is_still_an_echo(stack: Stack) -> None:
    account = stack.account()
    stack.syncline_writes(account, Status__c="Active")
    stack.person_edits(account, Website="https://initech.example")  # no flow reads Website
    runs = stack.runs("crm-accounts", 2)
    assert [r["state"] for r in runs] == ["filtered", "filtered"]
    assert all(_echo_of(r) for r in runs)


def test_a_write_whose_answer_was_lost_still_counts(stack: Stack) -> None:
    account = stack.account()
    httpx.post(stack.servers[0].url + "/sandbox/faults",
               json={"status": 502, "count": 1, "phase": "after", "method": "PATCH"}, verify=TLS)
    with stack.http as http:
        answer = http.post("/api/account", json={"id": account, "fields": {"Status__c": "Lost"}})
    writer = answer.headers["x-syncline-run-id"]
    assert answer.json()["error"]["state"] == "parked"  # a 502: the run cannot tell
    [run] = stack.runs("crm-accounts", 1)
    assert writer in (_echo_of(run) or "")


def test_a_fingerprint_outlives_the_server_that_wrote_it(tmp_path: Path,
                                                         database: str | None) -> None:
    with Stack(tmp_path, database) as stack:
        account = stack.account()
        stack.crm.configure_webhook(url="")  # the delivery waits: the server goes away first
        writer = stack.syncline_writes(account, Status__c="Active")
        stack.stop_syncline()
        stack.start()  # another process, the same store
        [delivery] = stack.crm.webhooks.snapshot()["deliveries"] if stack.crm.webhooks else []
        redeliver = f"{stack.servers[0].url}/sandbox/webhooks/{delivery['id']}/redeliver"
        httpx.post(redeliver, verify=TLS)
        [run] = stack.runs("crm-accounts", 1)
        assert writer in (_echo_of(run) or "")


def test_a_fingerprint_expires_with_the_window(tmp_path: Path) -> None:
    with Stack(tmp_path, None, window="1s") as stack:
        account = stack.account()
        stack.crm.configure_webhook(url="")
        stack.syncline_writes(account, Status__c="Active")
        time.sleep(1.2)  # past the window
        stack.crm.configure_webhook(url=stack.http.base_url.join("/hooks/crm").__str__())
        [delivery] = stack.crm.webhooks.snapshot()["deliveries"] if stack.crm.webhooks else []
        redeliver = f"{stack.servers[0].url}/sandbox/webhooks/{delivery['id']}/redeliver"
        httpx.post(redeliver, verify=TLS)
        [run] = stack.runs("crm-accounts", 1)
        assert run["state"] == "succeeded" and run["reason"] is None


def test_the_billing_round_trip_is_an_echo_and_an_amendment_runs(stack: Stack) -> None:
    billing = stack.servers[1].url
    customer = httpx.post(billing + "/v1/customers", json={"name": "Initech"}, verify=TLS).json()
    subscription = httpx.post(billing + "/v1/subscriptions", json={
        "customer": customer["id"], "metadata": {"account_id": "001A"},
        "items": [{"price": "price_seat_std_yearly", "quantity": 20}]}, verify=TLS).json()
    with stack.http as http:
        answer = http.post("/api/subscription", json={"id": subscription["id"], "fields": {
            "cancel_at_period_end": False, "metadata": {"current_term_end": "2027-01-30"}}})
    writer = answer.headers["x-syncline-run-id"]
    httpx.post(f"{billing}/sandbox/subscriptions/{subscription['id']}/update",
               json={"quantity": 30}, verify=TLS)  # a person upgrades the subscription in billing
    runs = [r for r in stack.runs("billing-subscriptions", 3) if r["state"] != "filtered"
            or _echo_of(r)]
    echo, amendment = runs[-2:]
    assert writer in (_echo_of(echo) or "")
    assert amendment["state"] == "succeeded"


def _signed(path: str, payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    headers = sign("standard-webhooks", CRM_SECRET, body)
    return body, {**headers, "content-type": "application/json"}


def test_numbers_compare_as_decimals_where_the_schema_says_number(stack: Stack) -> None:
    account = stack.account()
    stack.crm.configure_webhook(url="")  # the test sends the deliveries itself
    stack.syncline_writes(account, Contract_Value__c=100, Status__c="Active")
    with stack.http as http:
        for n, value in enumerate(("100.00", 100.0, "1e2")):
            body, headers = _signed("/hooks/crm", {
                "event": "account.updated", "changedFields": ["Contract_Value__c"],
                "data": {"Id": account, "Contract_Value__c": value}})
            assert http.post("/hooks/crm", content=body, headers=headers).status_code == 202, n
        body, headers = _signed("/hooks/crm", {
            "event": "account.updated", "changedFields": ["Contract_Value__c"],
            "data": {"Id": account, "Contract_Value__c": "100.01"}})
        http.post("/hooks/crm", content=body, headers=headers)
    runs = stack.runs("crm-accounts", 4)
    assert [r["state"] for r in runs] == ["filtered", "filtered", "filtered", "succeeded"]


@pytest.mark.parametrize("data", [
    {"event": "account.updated", "data": {"Name": "no id"}, "changedFields": ["Name"]},
    {"event": "account.updated", "data": {"Id": {"nested": 1}}, "changedFields": ["Id"]},
    {"event": "opportunity.closed_won", "data": {"Id": "006A"}},
    {"event": "account.updated", "data": "not an object"},
])
def test_a_delivery_without_a_record_id_is_never_checked(tmp_path: Path,
                                                         data: dict[str, Any]) -> None:
    with Stack(tmp_path, None) as stack, stack.http as http:
        body, headers = _signed("/hooks/crm", data)
        answer = http.post("/hooks/crm", content=body, headers=headers)
        assert answer.status_code == 202 and answer.json()["status"] == "accepted"


# -- the comparison -------------------------------------------------------------------------

def test_values_compare_as_json_values() -> None:
    assert same_value(100, 100.0) and same_value({"a": 1, "b": [1, 2]}, {"b": [1.0, 2], "a": 1})
    assert same_value("100.00", 100, numeric=True) and not same_value("100.00", 100)
    assert not same_value(True, 1) and not same_value(None, "") and not same_value([1], [1, 1])
    assert not same_value("abc", 1, numeric=True)


def test_a_delivery_names_its_changes_as_names_or_previous_values() -> None:
    now = flatten({"metadata": {"a": "1", "b": "2"}, "status": "active", "n": 3})
    assert changed_paths(["status", "metadata.b"], now, frozenset()) == {
        ("status",), ("metadata", "b")}
    previous = {"metadata": {"a": "1"}, "n": 3.0}  # Stripe: the whole previous metadata
    assert changed_paths(previous, now, frozenset()) == {("metadata", "b")}
    assert changed_paths(None, now, frozenset()) is None


# -- compile errors -------------------------------------------------------------------------

def _errors(project: Callable[[dict[str, str]], Path], files: dict[str, str]) -> str:
    with pytest.raises(DefinitionErrors) as caught:
        compile_project(project(files))
    return str(caught.value)


SYSTEM = """\
apiVersion: syncline/v1
kind: System
metadata: {{name: crm, owner: qa}}
spec:
  baseUrl: http://127.0.0.1:9
  webhooks: {{scheme: none}}
  operations:
    get-account: {{method: GET, path: "/a/{{id}}"{get_record}}}
    update-account: {{method: PATCH, path: "/a/{{id}}"{record}}}
{echo}"""

HOOK = """\
apiVersion: syncline/v1
kind: Flow
metadata: {{name: hook, owner: qa}}
spec:
  trigger:
    webhook: {{path: /h, system: crm, record: {{type: {type}, id: data.Id}}}}
  steps:
    - {{id: s, set: {{a: data.a}}}}
"""


@pytest.mark.parametrize(("system", "hook", "expected"), [
    ({"record": "", "echo": "  echo: {window: 15m}\n"}, None,
     "error[E_ECHO] system 'crm' sets echo but none of its write operations declares record"),
    ({"record": ", record: {type: account, id: params.id}", "echo": ""}, "account",
     "error[E_ECHO] system 'crm' has no echo: {window: ...}"),
    ({"record": ", record: {type: account, id: params.id}", "echo": "  echo: {window: 15m}\n"},
     "acount", "error[E_ECHO] system 'crm' has no write operation with record type 'acount' "
     "(did you mean 'account'?)"),
    ({"record": "", "echo": "", "get_record": ", record: {type: account, id: params.id}"}, None,
     "error[E_ECHO] operation 'get-account' reads (GET); only a write has a record"),
    ({"record": ", record: {type: account, id: 'params.[id'}", "echo": ""}, None,
     "error[E_JMESPATH] invalid JMESPath 'params.[id'"),
    ({"record": ", record: {type: account, id: data.Id}", "echo": ""}, None,
     "error[E_ECHO] 'data.Id' reads 'data', which a write does not have (it sees params, "
     "query, body, response)"),
    ({"record": ", record: {type: account, id: params.id, fields: answer.body}", "echo": ""},
     None, "error[E_ECHO] 'answer.body' reads 'answer'"),
])
def test_echo_mistakes_are_located_errors(project: Callable[[dict[str, str]], Path],
                                          system: dict[str, str], hook: str | None,
                                          expected: str) -> None:
    files = {"flows/system.yaml": SYSTEM.format(**{"get_record": "", **system})}
    if hook is not None:
        files["flows/hook.yaml"] = HOOK.format(type=hook)
    text = _errors(project, files)
    assert expected in text
    assert "flows/" in text.split("error[")[0]  # located: the file (and line) comes first


# -- which fields the triggered flows read --------------------------------------------------

READER = """\
apiVersion: syncline/v1
kind: System
metadata: {name: crm, owner: qa}
spec:
  baseUrl: http://127.0.0.1:9
  webhooks: {scheme: none}
  operations:
    update-account: {method: PATCH, path: "/a/{id}", record: {type: account, id: params.id}}
  echo: {window: 15m}
---
apiVersion: syncline/v1
kind: Flow
metadata: {name: hook, owner: qa}
spec:
  trigger:
    webhook: {path: /h, system: crm, record: {type: account, id: data.data.Id, fields: data.data}}
  filter: "data.event == 'account.updated'"
  steps:
    - {id: changed, emit: {type: account.changed, data: "{account: data.data, seen: data.at}"}}
---
apiVersion: syncline/v1
kind: Flow
metadata: {name: downstream, owner: qa}
spec:
  trigger: {event: account.changed}
  steps:
    - {id: s, set: {city: data.account.BillingCity, lines: "data.account.Lines[].Sku"}}
    - {id: t, set: {note: {template: "{{ STEP }}"}}}
"""


@pytest.mark.parametrize(("template", "expected"), [
    ("data.account.Name", {("BillingCity",), ("Lines",), ("Name",)}),
    ("data.seen | tojson", {("BillingCity",), ("Lines",)}),
    ("data | tojson", None),  # the whole event, the record within it: every field
])
def test_the_fields_the_flows_read_are_followed_through_emits(
        project: Callable[[dict[str, str]], Path], template: str,
        expected: set[tuple[str, ...]] | None) -> None:
    plan = compile_project(project({"flows/x.yaml": READER.replace("STEP", template)}))
    echo = plan.webhooks["/h"].trigger.echo
    assert echo is not None and echo.reads == (None if expected is None else frozenset(expected))
