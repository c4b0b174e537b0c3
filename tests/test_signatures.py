"""Webhook signature verification, checked against published vectors and the senders' own SDKs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime

import pytest
import stripe
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook
from starlette.datastructures import Headers

from engine.errors import ExecutionError, UsageError
from engine.server.signatures import (
    SignatureError,
    Verified,
    WebhookScheme,
    build_verifier,
    sign,
)

# Published Standard Webhooks test vector (standard-webhooks/standard-webhooks libraries' tests).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

SECRETS = {
    "standard-webhooks": VECTOR_SECRET,
    "stripe": "whsec_stripe_test_secret_0123456789",
    "github": "It's a Secret to Everybody",
    "shopify": "shpss_shopify_secret_abcdef",
    "hmac-sha256": "generic-hmac-secret",
}
SIGNED = tuple(SECRETS)
BODY = b'{"id": "evt_1", "amount": 4200}'
NOW = 1_700_000_000


def vector_headers(signature: str = VECTOR_SIG) -> dict[str, str]:
    return {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TS),
        "webhook-signature": signature,
    }


def reject(scheme: str, headers: dict[str, str], body: bytes = BODY, **kwargs) -> SignatureError:
    """Verify and return the SignatureError; also check the message never leaks the secret."""
    verifier = build_verifier(scheme, SECRETS.get(scheme), **kwargs)
    with pytest.raises(SignatureError) as info:
        verifier.verify(headers, body, now=NOW)
    secret = SECRETS.get(scheme, "")
    assert secret not in str(info.value) and secret not in info.value.message
    return info.value


# --- published vectors and the real SDKs -----------------------------------------------------


def test_standard_webhooks_published_vector_verifies() -> None:
    verifier = build_verifier("standard-webhooks", VECTOR_SECRET)
    result = verifier.verify(vector_headers(), VECTOR_BODY, now=VECTOR_TS)
    assert result == Verified(delivery_id=VECTOR_ID, timestamp=float(VECTOR_TS))


def test_sign_reproduces_the_published_vector() -> None:
    headers = sign(
        "standard-webhooks", VECTOR_SECRET, VECTOR_BODY, msg_id=VECTOR_ID, timestamp=VECTOR_TS
    )
    assert headers == vector_headers()


def test_github_documented_example_verifies() -> None:
    # The example from GitHub's "Validating webhook deliveries" documentation.
    headers = {
        "X-Hub-Signature-256": (
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        ),
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
    }
    result = build_verifier("github", "It's a Secret to Everybody").verify(
        headers, b"Hello, World!"
    )
    assert result == Verified("72d3162e-cc78-11e3-81ab-4c9367dc0958", None)


def test_signature_from_standardwebhooks_package_verifies() -> None:
    now = int(time.time())
    sent = datetime.fromtimestamp(now, tz=UTC)
    signature = Webhook(VECTOR_SECRET).sign("msg_sdk", sent, BODY.decode())
    headers = {
        "webhook-id": "msg_sdk",
        "webhook-timestamp": str(now),
        "webhook-signature": signature,
    }
    result = build_verifier("standard-webhooks", VECTOR_SECRET).verify(headers, BODY)
    assert result == Verified("msg_sdk", float(now))


def test_our_standard_webhooks_signature_passes_the_package_verifier() -> None:
    headers = sign("standard-webhooks", VECTOR_SECRET, BODY)
    assert Webhook(VECTOR_SECRET).verify(BODY, headers) == {"id": "evt_1", "amount": 4200}


def test_signature_from_stripe_package_verifies() -> None:
    secret = SECRETS["stripe"]
    header = stripe.WebhookSignature.generate_signature_header(BODY.decode(), secret, NOW)
    result = build_verifier("stripe", secret).verify({"Stripe-Signature": header}, BODY, now=NOW)
    assert result == Verified(delivery_id=None, timestamp=float(NOW))


def test_our_stripe_signature_passes_the_package_verifier() -> None:
    secret = SECRETS["stripe"]
    headers = sign("stripe", secret, BODY)
    assert stripe.WebhookSignature.verify_header(
        BODY, headers["Stripe-Signature"], secret, tolerance=300
    )


def test_shopify_signature_is_base64_hmac_of_the_body() -> None:
    secret = SECRETS["shopify"]
    digest = hmac.new(secret.encode(), BODY, hashlib.sha256).digest()
    headers = {
        "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
        "X-Shopify-Webhook-Id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
    }
    result = build_verifier("shopify", secret).verify(headers, BODY)
    assert result == Verified("b54557e4-bdd9-4b37-8a5f-bf7d70bcd043", None)
    assert (
        sign("shopify", secret, BODY, msg_id="x")["X-Shopify-Hmac-Sha256"]
        == (headers["X-Shopify-Hmac-Sha256"])
    )


@pytest.mark.parametrize("prefix", ["", "sha256="])
def test_generic_hmac_accepts_plain_or_prefixed_hex_in_the_configured_header(prefix: str) -> None:
    secret = SECRETS["hmac-sha256"]
    digest = hmac.new(secret.encode(), BODY, hashlib.sha256).hexdigest()
    headers = {"X-Erp-Signature": prefix + digest, "X-Request-Id": "req-9"}
    result = build_verifier("hmac-sha256", secret, header="X-Erp-Signature").verify(headers, BODY)
    assert result == Verified("req-9", None)


def test_generic_hmac_prefers_delivery_id_over_request_id() -> None:
    headers = sign("hmac-sha256", SECRETS["hmac-sha256"], BODY, msg_id="dlv-1")
    headers["X-Request-Id"] = "proxy-assigned"
    result = build_verifier("hmac-sha256", SECRETS["hmac-sha256"]).verify(headers, BODY)
    assert set(headers) == {"X-Signature", "X-Delivery-Id", "X-Request-Id"}
    assert result.delivery_id == "dlv-1"


@pytest.mark.parametrize(
    ("headers", "delivery"),
    [({}, None), ({"Webhook-Id": "w1"}, "w1"), ({"x-request-id": "r1"}, "r1")],
)
def test_scheme_none_always_passes(headers: dict[str, str], delivery: str | None) -> None:
    result = build_verifier("none", None).verify(headers, b"anything at all")
    assert result == Verified(delivery, None)


@pytest.mark.parametrize("scheme", SIGNED)
def test_sign_then_verify_round_trips_with_delivery_id(scheme: str) -> None:
    headers = sign(scheme, SECRETS[scheme], BODY, msg_id="msg_42", timestamp=NOW)
    result = build_verifier(scheme, SECRETS[scheme]).verify(headers, BODY, now=NOW)
    assert result.delivery_id == (None if scheme == "stripe" else "msg_42")
    assert result.timestamp == (float(NOW) if scheme in ("standard-webhooks", "stripe") else None)


@given(body=st.binary(min_size=1, max_size=256), scheme=st.sampled_from(SIGNED), data=st.data())
def test_any_body_round_trips_and_any_flipped_byte_fails(
    body: bytes, scheme: str, data: st.DataObject
) -> None:
    verifier = build_verifier(scheme, SECRETS[scheme])
    headers = sign(scheme, SECRETS[scheme], body, timestamp=NOW)
    assert isinstance(verifier.verify(headers, body, now=NOW), Verified)
    index = data.draw(st.integers(0, len(body) - 1))
    tampered = body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1 :]
    with pytest.raises(SignatureError) as info:
        verifier.verify(headers, tampered, now=NOW)
    assert info.value.reason == "bad_signature"


# --- key rotation ------------------------------------------------------------------------------


def test_standard_webhooks_any_of_several_signatures_passes() -> None:
    old_key_sig = sign(
        "standard-webhooks",
        "whsec_" + base64.b64encode(b"old").decode(),
        VECTOR_BODY,
        msg_id=VECTOR_ID,
        timestamp=VECTOR_TS,
    )["webhook-signature"]
    header = f"v1a,ZmFrZQ== {old_key_sig} {VECTOR_SIG}"
    result = build_verifier("standard-webhooks", VECTOR_SECRET).verify(
        vector_headers(header), VECTOR_BODY, now=VECTOR_TS
    )
    assert result.delivery_id == VECTOR_ID


def test_standard_webhooks_rotation_fails_when_no_signature_matches() -> None:
    header = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= v1,g0hM9SsE"
    error = reject("standard-webhooks", vector_headers(header), VECTOR_BODY)
    assert error.reason == "bad_signature"


def test_stripe_any_v1_passes_and_v0_is_ignored() -> None:
    secret = SECRETS["stripe"]
    good = sign("stripe", secret, BODY, timestamp=NOW)["Stripe-Signature"].split(",")[1]
    header = f"t={NOW},v0={'ab' * 32},v1={'00' * 32},{good},scheme=unknown"
    result = build_verifier("stripe", secret).verify({"stripe-signature": header}, BODY, now=NOW)
    assert result.timestamp == NOW


def test_stripe_v0_alone_does_not_count() -> None:
    secret = SECRETS["stripe"]
    v1 = sign("stripe", secret, BODY, timestamp=NOW)["Stripe-Signature"].split("v1=")[1]
    error = reject("stripe", {"Stripe-Signature": f"t={NOW},v0={v1}"})
    assert error.reason == "malformed_header"


# --- timestamps --------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["standard-webhooks", "stripe"])
@pytest.mark.parametrize(("offset", "words"), [(-301, "301s old"), (301, "301s in the future")])
def test_timestamps_outside_tolerance_are_stale(scheme: str, offset: int, words: str) -> None:
    headers = sign(scheme, SECRETS[scheme], BODY, timestamp=NOW + offset)
    error = reject(scheme, headers)
    assert error.reason == "stale_timestamp"
    assert error.message == f"signed timestamp is {words}; tolerance is 300s"


@pytest.mark.parametrize("scheme", ["standard-webhooks", "stripe"])
@pytest.mark.parametrize("offset", [-300, 300])
def test_timestamps_at_the_tolerance_edge_pass(scheme: str, offset: int) -> None:
    headers = sign(scheme, SECRETS[scheme], BODY, timestamp=NOW + offset)
    result = build_verifier(scheme, SECRETS[scheme]).verify(headers, BODY, now=NOW)
    assert result.timestamp == NOW + offset


def test_tolerance_is_configurable() -> None:
    headers = sign("stripe", SECRETS["stripe"], BODY, timestamp=NOW - 3600)
    assert reject("stripe", headers).reason == "stale_timestamp"
    verifier = build_verifier("stripe", SECRETS["stripe"], tolerance=7200)
    assert verifier.verify(headers, BODY, now=NOW).timestamp == NOW - 3600


def test_a_forged_signature_with_a_stale_timestamp_is_reported_as_bad_signature() -> None:
    headers = sign("standard-webhooks", VECTOR_SECRET, BODY, timestamp=NOW - 10_000)
    assert reject("standard-webhooks", headers, body=b"forged").reason == "bad_signature"


# --- tampering, wrong secrets, missing and malformed headers -----------------------------------


@pytest.mark.parametrize("scheme", SIGNED)
def test_tampered_body_fails(scheme: str) -> None:
    headers = sign(scheme, SECRETS[scheme], BODY, timestamp=NOW)
    error = reject(scheme, headers, body=BODY.replace(b"4200", b"1"))
    assert error.reason == "bad_signature"
    assert error.message == "no signature matches the body and secret"


@pytest.mark.parametrize("scheme", SIGNED)
def test_wrong_secret_fails(scheme: str) -> None:
    other = "whsec_" + base64.b64encode(b"another key").decode()
    headers = sign(scheme, other, BODY, timestamp=NOW)
    assert reject(scheme, headers).reason == "bad_signature"


def test_standard_webhooks_signs_the_id_too() -> None:
    headers = sign("standard-webhooks", VECTOR_SECRET, BODY, msg_id="msg_a", timestamp=NOW)
    headers["webhook-id"] = "msg_b"
    assert reject("standard-webhooks", headers).reason == "bad_signature"


@pytest.mark.parametrize(
    ("scheme", "header"),
    [
        ("standard-webhooks", "webhook-id"),
        ("standard-webhooks", "webhook-timestamp"),
        ("standard-webhooks", "webhook-signature"),
        ("stripe", "Stripe-Signature"),
        ("github", "X-Hub-Signature-256"),
        ("shopify", "X-Shopify-Hmac-Sha256"),
        ("hmac-sha256", "X-Signature"),
    ],
)
@pytest.mark.parametrize("how", ["absent", "empty"])
def test_missing_header_is_reported_by_name(scheme: str, header: str, how: str) -> None:
    headers = sign(scheme, SECRETS[scheme], BODY, timestamp=NOW)
    if how == "absent":
        del headers[header]
    else:
        headers[header] = "  "
    error = reject(scheme, headers)
    assert error.reason == "missing_signature"
    assert error.message == f"missing header {header.lower()!r}"


@pytest.mark.parametrize(
    ("scheme", "header", "value", "message"),
    [
        ("standard-webhooks", "webhook-timestamp", "16142653.5", "webhook-timestamp is not a Unix"),
        (
            "standard-webhooks",
            "webhook-timestamp",
            "-1614265330",
            "webhook-timestamp is not a Unix",
        ),
        ("standard-webhooks", "webhook-timestamp", "9" * 40, "webhook-timestamp is not a Unix"),
        ("standard-webhooks", "webhook-signature", "v1,not*base64", "holds no valid v1"),
        ("standard-webhooks", "webhook-signature", "v2,abcd", "holds no valid v1"),
        ("standard-webhooks", "webhook-signature", "g0hM9SsE", "holds no valid v1"),
        ("stripe", "Stripe-Signature", "v1=abcd", "has no 't=' timestamp"),
        ("stripe", "Stripe-Signature", f"t={NOW}", "holds no valid v1"),
        ("stripe", "Stripe-Signature", f"t={NOW},v1=xyz", "holds no valid v1"),
        ("stripe", "Stripe-Signature", "t=soon,v1=abcd", "Stripe-Signature t is not a Unix"),
        ("stripe", "Stripe-Signature", "garbage", "has no 't=' timestamp"),
        ("github", "X-Hub-Signature-256", "sha1=abcd", "must start with 'sha256='"),
        ("github", "X-Hub-Signature-256", "sha256=zz", "is not hexadecimal"),
        ("shopify", "X-Shopify-Hmac-Sha256", "not base64!", "is not base64"),
        ("hmac-sha256", "X-Signature", "sha256=0xabc", "is not hexadecimal"),
    ],
)
def test_malformed_header_is_reported(scheme: str, header: str, value: str, message: str) -> None:
    headers = sign(scheme, SECRETS[scheme], BODY, timestamp=NOW)
    headers[header] = value
    error = reject(scheme, headers)
    assert error.reason == "malformed_header"
    assert message in error.message
    assert value not in error.message


@pytest.mark.parametrize("scheme", SIGNED)
@pytest.mark.parametrize("case", [str.upper, str.lower, str.title])
def test_header_names_are_case_insensitive(scheme: str, case) -> None:
    headers = sign(scheme, SECRETS[scheme], BODY, msg_id="msg_c", timestamp=NOW)
    recased = {case(name): value for name, value in headers.items()}
    result = build_verifier(scheme, SECRETS[scheme]).verify(recased, BODY, now=NOW)
    assert result.delivery_id == (None if scheme == "stripe" else "msg_c")


@pytest.mark.parametrize("scheme", SIGNED)
def test_starlette_headers_work(scheme: str) -> None:
    headers = Headers(headers=sign(scheme, SECRETS[scheme], BODY, msg_id="msg_s", timestamp=NOW))
    result = build_verifier(scheme, SECRETS[scheme]).verify(headers, BODY, now=NOW)
    assert result.delivery_id == (None if scheme == "stripe" else "msg_s")


def test_bytes_secret_is_used_as_the_raw_key() -> None:
    raw = base64.b64decode(VECTOR_SECRET.removeprefix("whsec_"))
    result = build_verifier("standard-webhooks", raw).verify(
        vector_headers(), VECTOR_BODY, now=VECTOR_TS
    )
    assert result.delivery_id == VECTOR_ID


# --- errors and secrets ------------------------------------------------------------------------


def test_signature_error_is_an_execution_error_with_a_code() -> None:
    error = reject("github", {})
    assert isinstance(error, ExecutionError)
    assert error.code == error.reason == "missing_signature"
    assert str(error) == "missing_signature: missing header 'x-hub-signature-256'"


def test_secret_never_appears_in_repr() -> None:
    verifier = build_verifier("stripe", SECRETS["stripe"], tolerance=60)
    assert SECRETS["stripe"] not in repr(verifier)
    assert SECRETS["stripe"] not in repr(verifier.config)
    assert repr(verifier.config) == "WebhookScheme(scheme='stripe', tolerance=60, header=None)"


def test_unknown_scheme_suggests_the_closest() -> None:
    with pytest.raises(
        UsageError,
        match=r"unknown webhook scheme 'standard-webhook' \(did you mean 'standard-webhooks'\?\)",
    ):
        build_verifier("standard-webhook", "x")
    with pytest.raises(UsageError, match="unknown webhook scheme 'svix'"):
        sign("svix", "x", BODY)


@pytest.mark.parametrize("scheme", SIGNED)
@pytest.mark.parametrize("secret", [None, ""])
def test_signed_schemes_need_a_secret(scheme: str, secret: str | None) -> None:
    with pytest.raises(UsageError, match=f"webhook scheme '{scheme}' needs a secret"):
        build_verifier(scheme, secret)


def test_bad_standard_webhooks_secret_is_rejected_without_echoing_it() -> None:
    with pytest.raises(UsageError) as info:
        build_verifier("standard-webhooks", "whsec_not*base64!")
    assert str(info.value) == "standard-webhooks secret must be base64 after the 'whsec_' prefix"


@pytest.mark.parametrize("tolerance", [0, -5])
def test_tolerance_must_be_positive(tolerance: float) -> None:
    with pytest.raises(UsageError, match="webhook tolerance must be positive"):
        WebhookScheme("stripe", "s", tolerance)
