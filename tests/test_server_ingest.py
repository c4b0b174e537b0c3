"""Webhook, CloudEvents and process-API ingest through a real socket, signed by real senders."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import stripe
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from serverkit import SECRETS, LiveServer, write_project
from standardwebhooks.webhooks import Webhook

from engine.server.config import ServerConfig

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    project = write_project(tmp_path_factory.mktemp("ingest"))
    with LiveServer(project, max_body=64 * 1024) as live:
        yield live


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def standard(body: bytes, msg_id: str, when: datetime | None = None) -> dict[str, str]:
    """Headers as the `standardwebhooks` SDK signs them."""
    when = when or datetime.now(tz=UTC)
    signature = Webhook(SECRETS["CRM_HOOK"]).sign(msg_id, when, body.decode())
    return {
        **JSON,
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }


def post_crm(
    http: httpx.Client, document: dict, msg_id: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    body = json.dumps(document).encode()
    return http.post(
        "/hooks/crm", content=body, headers={**standard(body, msg_id), **(headers or {})}
    )


def test_standard_webhooks_delivery_is_accepted_then_duplicate(
    http: httpx.Client, server: LiveServer
) -> None:
    first = post_crm(http, {"id": "ord-1", "kind": "new"}, "msg_a")
    assert first.status_code == 202, first.text
    assert first.json()["status"] == "accepted"
    again = post_crm(http, {"id": "ord-1", "kind": "new"}, "msg_b")  # same idempotency key
    assert again.status_code == 202
    assert again.json() == {**first.json(), "status": "duplicate"}


def test_filter_non_match_is_acknowledged_as_filtered(http: httpx.Client) -> None:
    response = post_crm(http, {"id": "ord-2", "kind": "ignore"}, "msg_f")
    assert response.status_code == 202
    assert response.json()["status"] == "filtered"


def test_correlation_id_comes_from_header_or_traceparent(http: httpx.Client) -> None:
    given = post_crm(http, {"id": "ord-3"}, "msg_c1", headers={"X-Correlation-ID": "corr-42"})
    assert given.json()["correlation_id"] == "corr-42"
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    body = json.dumps({"id": "ord-4"}).encode()
    headers = {**standard(body, "msg_c2"), "traceparent": f"00-{trace}-00f067aa0ba902b7-01"}
    assert http.post("/hooks/crm", content=body, headers=headers).json()["correlation_id"] == trace


def test_stripe_delivery_uses_the_event_id_for_dedup(http: httpx.Client) -> None:
    body = json.dumps({"id": "evt_123", "type": "invoice.paid", "kind": "x"})
    header = stripe.WebhookSignature.generate_signature_header(
        body, SECRETS["STRIPE_HOOK"], int(time.time())
    )  # the stripe SDK's own signing
    headers = {**JSON, "Stripe-Signature": header}
    first = http.post("/hooks/stripe", content=body, headers=headers)
    assert first.status_code == 202, first.text
    assert first.json()["status"] == "accepted"
    second = http.post("/hooks/stripe", content=body, headers=headers)  # a redelivery
    assert second.json() == {**first.json(), "status": "duplicate"}


def test_github_shopify_and_generic_hmac(http: httpx.Client) -> None:
    body = b'{"id": "push-1", "ref": "refs/heads/main"}'
    github = hmac.new(SECRETS["GH_HOOK"].encode(), body, hashlib.sha256).hexdigest()
    shopify = base64.b64encode(
        hmac.new(SECRETS["SHOP_HOOK"].encode(), body, hashlib.sha256).digest()
    ).decode()
    generic = hmac.new(SECRETS["HMAC_HOOK"].encode(), body, hashlib.sha256).hexdigest()
    cases = [
        ("/hooks/github", {"X-Hub-Signature-256": f"sha256={github}", "X-GitHub-Delivery": "d-1"}),
        ("/hooks/shop", {"X-Shopify-Hmac-Sha256": shopify, "X-Shopify-Webhook-Id": "s-1"}),
        ("/hooks/generic", {"X-Signature": generic, "X-Delivery-Id": "g-1"}),
    ]
    for path, headers in cases:
        response = http.post(path, content=body, headers={**JSON, **headers})
        assert (response.status_code, response.json()["status"]) == (202, "accepted"), path
        # no timestamp in these schemes: a replay is caught by the delivery id
        replay = http.post(path, content=body, headers={**JSON, **headers})
        assert replay.json()["status"] == "duplicate", path


def test_accepted_event_is_durable_before_the_answer(
    http: httpx.Client, server: LiveServer
) -> None:
    response = post_crm(http, {"id": "ord-durable"}, "msg_d")
    run_id = response.json()["run_id"]
    detail = http.get(f"/api/v1/runs/{run_id}").json()
    assert detail["id"] == run_id and detail["flow"] == "crm-order"
    assert detail["event"]["data"] == {"id": "ord-durable"}


# --- bad input: every one a JSON error, never a 500 ------------------------------------------


def error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code, body
    return str(body["error"]["message"])


def test_missing_forged_and_stale_signatures_are_401(http: httpx.Client) -> None:
    body = b'{"id": "ord-x"}'
    error(http.post("/hooks/crm", content=body, headers=JSON), 401, "missing_signature")
    forged = {**standard(body, "msg_x"), "webhook-signature": "v1," + "A" * 43 + "="}
    error(http.post("/hooks/crm", content=body, headers=forged), 401, "bad_signature")
    tampered = standard(body, "msg_y")
    error(
        http.post("/hooks/crm", content=b'{"id": "ord-z"}', headers=tampered), 401, "bad_signature"
    )
    old = datetime.fromtimestamp(time.time() - 3600, tz=UTC)
    message = error(
        http.post("/hooks/crm", content=body, headers=standard(body, "m", old)),
        401,
        "stale_timestamp",
    )
    assert "tolerance" in message
    stale_stripe = stripe.WebhookSignature.generate_signature_header(
        body.decode(), SECRETS["STRIPE_HOOK"], int(time.time()) - 3600
    )
    error(
        http.post(
            "/hooks/stripe", content=body, headers={**JSON, "Stripe-Signature": stale_stripe}
        ),
        401,
        "stale_timestamp",
    )


def test_malformed_and_deeply_nested_json_are_400(http: httpx.Client) -> None:
    broken = b'{"id": "ord-1",'
    message = error(
        http.post("/hooks/crm", content=broken, headers=standard(broken, "mb")),
        400,
        "malformed_json",
    )
    assert "line 1" in message
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    error(http.post("/hooks/crm", content=deep, headers=standard(deep, "md")), 400, "too_deep")


@pytest.mark.parametrize(("body", "says"), [
    (b'{"id": "ord-s", "name": "\\ud800"}', "lone surrogate"),    # was 202, then INTERNAL_ERROR
    (b'{"id": "ord-f", "amount": 1e400}', "beyond the range of a double"),
    (b'{"id": "ord-g", "amount": -1e400, "n": 1234567890123456789012}', "range of a double"),
])
def test_a_body_the_runtime_could_not_store_is_refused_with_400(
        http: httpx.Client, body: bytes, says: str) -> None:
    assert says in error(http.post("/hooks/crm", content=body, headers=standard(body, "ms")),
                         400, "malformed_json")


def test_wrong_content_type_is_415(http: httpx.Client) -> None:
    body = b"id=1"
    headers = {**standard(body, "mt"), "content-type": "application/x-www-form-urlencoded"}
    error(http.post("/hooks/crm", content=body, headers=headers), 415, "unsupported_media_type")


def test_oversized_body_is_413_with_length_and_chunked(http: httpx.Client) -> None:
    big = b'{"pad": "' + b"x" * (200 * 1024) + b'"}'
    headers = standard(big, "mo")
    error(http.post("/hooks/crm", content=big, headers=headers), 413, "body_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        for _ in range(50):
            yield b"x" * 8192

    error(http.post("/hooks/crm", content=chunks(), headers=headers), 413, "body_too_large")


def test_unknown_path_and_wrong_method(http: httpx.Client) -> None:
    error(http.post("/hooks/nope", content=b"{}", headers=JSON), 404, "not_found")
    error(http.get("/hooks/crm"), 405, "method_not_allowed")


def test_overload_answers_503_with_retry_after(tmp_path: Path) -> None:
    with LiveServer(write_project(tmp_path), max_pending=1) as live:
        live.state.pending = 1  # one request in progress fills the bound
        with live.client() as client:
            response = post_crm(client, {"id": "o"}, "m503")
        live.state.pending = 0
    error(response, 503, "overloaded")
    assert response.headers["Retry-After"] == "1"


def test_config_from_environment() -> None:
    config = ServerConfig.from_environ(
        {"SYNCLINE_MAX_BODY": "10", "SYNCLINE_ADMIN_TOKEN": "t"}, watch=False
    )
    assert (config.max_body, config.admin_token, config.watch) == (10, "t", False)


# --- CloudEvents ------------------------------------------------------------------------------


def event(n: int) -> CloudEvent:
    return CloudEvent(
        {"type": "com.acme.order.activated", "source": "/erp", "id": f"ce-{n}"},
        {"order": {"id": n}},
    )


def test_cloudevents_binary_and_structured_mode(http: httpx.Client) -> None:
    for n, (headers, body) in enumerate([to_binary(event(1)), to_structured(event(2))], 1):
        response = http.post("/events", content=body, headers=headers)
        assert response.status_code == 202, response.text
        answer = response.json()
        assert answer["id"] == f"ce-{n}"
        assert [r["status"] for r in answer["runs"]] == ["accepted"]


def test_cloudevents_batch_mode(http: httpx.Client) -> None:
    batch = [json.loads(to_structured(event(n))[1]) for n in (10, 11)]
    response = http.post(
        "/events",
        content=json.dumps(batch),
        headers={"content-type": "application/cloudevents-batch+json"},
    )
    assert response.status_code == 202, response.text
    assert [e["id"] for e in response.json()["events"]] == ["ce-10", "ce-11"]


def test_cloudevents_bad_input(http: httpx.Client) -> None:
    headers = {"content-type": "application/cloudevents+json"}
    error(
        http.post("/events", content=b'{"specversion": "1.0"}', headers=headers),
        400,
        "missing_attribute",
    )
    error(http.post("/events", content=b"{", headers=headers), 400, "malformed_json")
    error(
        http.post("/events", content=b"x", headers={"content-type": "text/plain"}),
        415,
        "unsupported_media_type",
    )


def test_events_need_the_ingest_token_when_one_is_set(tmp_path: Path) -> None:
    project = write_project(tmp_path)
    with (
        LiveServer(project, ingest_token="ingest-t", admin_token="admin-t") as live,
        live.client() as client,
    ):
        headers, body = to_structured(event(20))
        error(client.post("/events", content=body, headers=headers), 401, "unauthorized")
        bad = {**headers, "Authorization": "Bearer wrong"}
        error(client.post("/events", content=body, headers=bad), 401, "unauthorized")
        for token in ("ingest-t", "admin-t"):
            ok = {**headers, "Authorization": f"Bearer {token}"}
            assert client.post("/events", content=body, headers=ok).status_code == 202
        # the ingest token gives no operator rights: a known token without the right is 403
        denied = client.get("/api/v1/runs", headers={"Authorization": "Bearer ingest-t"})
        error(denied, 403, "forbidden")


# --- process API ------------------------------------------------------------------------------


def test_process_api_answers_output_or_validation_errors(http: httpx.Client) -> None:
    ok = http.post("/api/quote", json={"amount": 12})
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"amount": 12, "currency": "EUR"}
    assert ok.headers["X-Syncline-Run-Id"]
    bad = http.post("/api/quote", json={"amount": -1})
    message = error(bad, 422, "validation_failed")
    assert "amount must be positive" in message
    assert bad.json()["error"]["errors"][0]["code"] == "BAD_AMOUNT"
    error(http.post("/api/quote", content=b"[", headers=JSON), 400, "malformed_json")


def test_an_idempotency_key_reused_with_another_body_is_422_never_the_first_answer(
        http: httpx.Client) -> None:
    key = {"Idempotency-Key": "quote-key-1"}
    first = http.post("/api/quote", json={"amount": 12}, headers=key)
    assert first.status_code == 200, first.text
    again = http.post("/api/quote", json={"amount": 12}, headers=key)
    assert (again.status_code, again.json()) == (200, first.json())
    other = http.post("/api/quote", json={"amount": 13}, headers=key)
    error(other, 422, "idempotency_key_reused")
    assert "12" not in other.text


def test_a_bug_in_the_webhook_path_is_a_json_500_and_the_server_goes_on(
    http: httpx.Client,
    server: LiveServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(*args: object) -> None:
        raise RuntimeError("a bug in the runtime")

    with monkeypatch.context() as patch:
        patch.setattr(server.state.runtime, "ingest", broken)
        response = post_crm(http, {"id": "ord-bug"}, "msg_bug")
    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "internal", "message": "internal error; see the server log"}
    }
    assert "a bug in the runtime" not in response.text  # no stack trace or detail leaks out
    assert any("internal error on POST /hooks/crm" in r.getMessage() for r in caplog.records)
    assert post_crm(http, {"id": "ord-bug"}, "msg_bug2").status_code == 202
