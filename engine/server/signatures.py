"""Verify inbound webhook signatures over the exact raw request bytes.

Build a `Verifier` once per System (at compile or serve time) with `build_verifier`, then call
`verify(headers, body)` per request; it returns a `Verified` or raises `SignatureError`. Every
comparison of signatures goes through `hmac.compare_digest`. Error messages name headers and
reasons, never the secret and never the received header values.

Supported schemes (a System's `webhooks.scheme`):

    standard-webhooks  webhook-id / webhook-timestamp / webhook-signature ("v1,<b64> v1,<b64>")
    stripe             Stripe-Signature "t=<unix>,v1=<hex>[,v1=<hex>...]"
    github             X-Hub-Signature-256 "sha256=<hex>"
    shopify            X-Shopify-Hmac-Sha256 "<b64>"
    hmac-sha256        a configured header (default X-Signature), "<hex>" or "sha256=<hex>"
    none               always passes

`sign` produces the headers a sender would attach; the sandbox systems and tests use it.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import hashlib
import hmac
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from engine.errors import ExecutionError, UsageError

SCHEMES = ("standard-webhooks", "stripe", "github", "shopify", "hmac-sha256", "none")
DEFAULT_HMAC_HEADER = "X-Signature"
_WHSEC_PREFIX = "whsec_"
_MAX_TIMESTAMP_DIGITS = 12


class SignatureError(ExecutionError):
    """An inbound webhook failed verification.

    `reason` is one of `missing_signature`, `bad_signature`, `stale_timestamp` or
    `malformed_header`; `message` explains it without revealing the secret.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message

    @property
    def code(self) -> str:
        """The reason, under the name the HTTP error body uses."""
        return self.reason


@dataclass(frozen=True)
class WebhookScheme:
    """How one System signs the webhooks it sends (its `webhooks` block, secret resolved)."""

    scheme: str
    """One of SCHEMES."""
    secret: bytes | str | None = field(repr=False)
    """The resolved secret; kept out of repr so it never reaches a log."""
    tolerance: float = 300.0
    """Largest accepted distance, in seconds, between a signed timestamp and now."""
    header: str | None = None
    """hmac-sha256 only: the header holding the signature (default X-Signature)."""

    def __post_init__(self) -> None:
        check_scheme(self.scheme)
        if not self.tolerance > 0:
            raise UsageError(f"webhook tolerance must be positive, got {self.tolerance!r}")


@dataclass(frozen=True)
class Verified:
    """What a successful verification learned about the delivery."""

    delivery_id: str | None
    """The sender's delivery id from the headers, if the scheme carries one (not Stripe's)."""
    timestamp: float | None
    """The signed Unix timestamp, for schemes that sign one."""


class Verifier:
    """Verifies one System's webhooks. The key is derived once, here, not per request."""

    __slots__ = ("config", "_check", "_header", "_mac")

    def __init__(self, config: WebhookScheme) -> None:
        self.config = config
        self._mac = _keyed(derive_key(config.scheme, config.secret))  # copied per use
        self._check = _CHECKS[config.scheme]
        self._header = (config.header or DEFAULT_HMAC_HEADER).lower()

    def __repr__(self) -> str:
        return f"Verifier({self.config!r})"

    def verify(self, headers: Mapping[str, str], body: bytes, now: float | None = None) -> Verified:
        """Check `body` (the raw request bytes) against the signature in `headers`.

        Header names match case-insensitively (a plain dict or a Starlette `Headers` both work).
        `now` defaults to the current time. Raises `SignatureError`.
        """
        lowered = {name.lower(): value for name, value in headers.items()}
        return self.verify_lowered(lowered, body, now)

    def require_header(self, headers: dict[str, str]) -> None:
        """Raise `missing_signature` unless the (lower-cased) headers carry this scheme's
        signature header: checked before the body is read, so an unsigned request costs none."""
        name = self._header if self.config.scheme == "hmac-sha256" else _SIGNATURE_HEADERS.get(
            self.config.scheme)
        if name is not None:
            _require(headers, name)

    def verify_lowered(
        self, headers: dict[str, str], body: bytes, now: float | None = None
    ) -> Verified:
        """`verify` for headers already keyed by lower-case name, as ASGI servers give them."""
        return self._check(self, headers, body, time.time() if now is None else now)


_SIGNATURE_HEADERS = {"standard-webhooks": "webhook-signature", "stripe": "stripe-signature",
                      "github": "x-hub-signature-256", "shopify": "x-shopify-hmac-sha256"}


def build_verifier(
    scheme: str, secret: str | None, tolerance: float = 300.0, header: str | None = None
) -> Verifier:
    """Prepare the verifier for a System's `webhooks` block.

    Raises `UsageError` for an unknown scheme, a missing secret, a non-positive tolerance or a
    standard-webhooks secret that is not base64.
    """
    return Verifier(WebhookScheme(scheme, secret, tolerance, header))


def check_scheme(scheme: str) -> None:
    """Raise `UsageError` unless `scheme` is one we implement, suggesting the closest one."""
    if scheme in SCHEMES:
        return
    close = difflib.get_close_matches(scheme, SCHEMES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UsageError(f"unknown webhook scheme {scheme!r}{hint}; expected one of {SCHEMES}")


def derive_key(scheme: str, secret: bytes | str | None) -> bytes:
    """The HMAC key for `scheme`: raw bytes are used as they are, strings per the scheme."""
    if scheme == "none":
        return b""
    if not secret:
        raise UsageError(f"webhook scheme {scheme!r} needs a secret")
    if isinstance(secret, bytes):
        return secret
    if scheme == "standard-webhooks":
        return _standard_key(secret)
    return secret.encode("utf-8")


def _standard_key(secret: str) -> bytes:
    # Standard Webhooks secrets are "whsec_" + base64(key); Stripe's look alike but are used whole.
    encoded = secret.removeprefix(_WHSEC_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        key = b""
    if not key:
        raise UsageError("standard-webhooks secret must be base64 after the 'whsec_' prefix")
    return key


# --- per-scheme checks: (verifier, lower-cased headers, body, now) -> Verified ----------------


def _check_standard(v: Verifier, headers: dict[str, str], body: bytes, now: float) -> Verified:
    msg_id = _require(headers, "webhook-id")
    stamp = _require(headers, "webhook-timestamp")
    signatures = _standard_signatures(_require(headers, "webhook-signature"))
    timestamp = _parse_timestamp(stamp, "webhook-timestamp")
    _match(_digest(v._mac, f"{msg_id}.{stamp}.".encode(), body), signatures)
    _check_fresh(timestamp, now, v.config.tolerance)
    return Verified(msg_id, float(timestamp))


def _check_stripe(v: Verifier, headers: dict[str, str], body: bytes, now: float) -> Verified:
    stamp, signatures = _stripe_header(_require(headers, "stripe-signature"))
    timestamp = _parse_timestamp(stamp, "Stripe-Signature t")
    _match(_digest(v._mac, f"{stamp}.".encode(), body), signatures)
    _check_fresh(timestamp, now, v.config.tolerance)
    return Verified(None, float(timestamp))


def _check_github(v: Verifier, headers: dict[str, str], body: bytes, now: float) -> Verified:
    value = _require(headers, "x-hub-signature-256")
    if not value.startswith("sha256="):
        raise SignatureError("malformed_header", "X-Hub-Signature-256 must start with 'sha256='")
    _match(_digest(v._mac, body), [_unhex(value[len("sha256=") :], "X-Hub-Signature-256")])
    return Verified(headers.get("x-github-delivery") or None, None)


def _check_shopify(v: Verifier, headers: dict[str, str], body: bytes, now: float) -> Verified:
    value = _require(headers, "x-shopify-hmac-sha256")
    _match(_digest(v._mac, body), [_unbase64(value, "X-Shopify-Hmac-Sha256")])
    return Verified(headers.get("x-shopify-webhook-id") or None, None)


def _check_hmac(v: Verifier, headers: dict[str, str], body: bytes, now: float) -> Verified:
    value = _require(headers, v._header).removeprefix("sha256=")
    _match(_digest(v._mac, body), [_unhex(value, v.config.header or DEFAULT_HMAC_HEADER)])
    delivery = headers.get("x-delivery-id") or headers.get("x-request-id")
    return Verified(delivery or None, None)


def _check_none(v: Verifier, headers: dict[str, str], body: bytes, now: float) -> Verified:
    return Verified(headers.get("webhook-id") or headers.get("x-request-id") or None, None)


_CHECKS: dict[str, Callable[[Verifier, dict[str, str], bytes, float], Verified]] = {
    "standard-webhooks": _check_standard,
    "stripe": _check_stripe,
    "github": _check_github,
    "shopify": _check_shopify,
    "hmac-sha256": _check_hmac,
    "none": _check_none,
}


# --- helpers -------------------------------------------------------------------------------


def _require(headers: dict[str, str], name: str) -> str:
    value = headers.get(name, "").strip()
    if not value:
        raise SignatureError("missing_signature", f"missing header {name!r}")
    return value


def _keyed(key: bytes) -> hmac.HMAC:
    return hmac.new(key, digestmod=hashlib.sha256)


def _digest(keyed: hmac.HMAC, *parts: bytes) -> bytes:
    """HMAC-SHA256 of the parts. A keyed HMAC object is copied rather than keyed again (1.7 us
    for a 1 KB body, against 2.3 us for the one-shot `hmac.digest` of the joined parts)."""
    mac = keyed.copy()
    for part in parts:
        mac.update(part)
    return mac.digest()


def _match(expected: bytes, candidates: list[bytes]) -> None:
    # compare_digest against every candidate: a key rotation sends several, any one may match.
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise SignatureError("bad_signature", "no signature matches the body and secret")


def _standard_signatures(value: str) -> list[bytes]:
    """The v1 signatures of a webhook-signature header; other versions (v1a...) are skipped."""
    found = []
    for entry in value.split():
        version, _, encoded = entry.partition(",")
        if version == "v1":
            found.append(_unbase64(encoded, "webhook-signature", strict=False))
    signatures = [s for s in found if s]
    if not signatures:
        raise SignatureError("malformed_header", "webhook-signature holds no valid v1 signature")
    return signatures


def _stripe_header(value: str) -> tuple[str, list[bytes]]:
    """Split Stripe-Signature into its timestamp and v1 signatures (v0 and unknown are skipped)."""
    stamp = None
    found = []
    for item in value.split(","):
        key, _, text = item.strip().partition("=")
        if key == "t":
            stamp = text
        elif key == "v1":
            found.append(_unhex(text, "Stripe-Signature", strict=False))
    signatures = [s for s in found if s]
    if stamp is None:
        raise SignatureError("malformed_header", "Stripe-Signature has no 't=' timestamp")
    if not signatures:
        raise SignatureError("malformed_header", "Stripe-Signature holds no valid v1 signature")
    return stamp, signatures


def _parse_timestamp(text: str, where: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= _MAX_TIMESTAMP_DIGITS):
        raise SignatureError("malformed_header", f"{where} is not a Unix timestamp in seconds")
    return int(text)


def _check_fresh(timestamp: int, now: float, tolerance: float) -> None:
    age = now - timestamp
    if abs(age) > tolerance:
        when = f"{age:.0f}s old" if age > 0 else f"{-age:.0f}s in the future"
        raise SignatureError(
            "stale_timestamp", f"signed timestamp is {when}; tolerance is {tolerance:g}s"
        )


def _unhex(text: str, where: str, *, strict: bool = True) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        if strict:
            raise SignatureError("malformed_header", f"{where} is not hexadecimal") from None
        return b""


def _unbase64(text: str, where: str, *, strict: bool = True) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        if strict:
            raise SignatureError("malformed_header", f"{where} is not base64") from None
        return b""


# --- signing (what a sender does) ----------------------------------------------------------


def sign(
    scheme: str,
    secret: bytes | str | None,
    body: bytes,
    *,
    msg_id: str | None = None,
    timestamp: float | None = None,
    header: str | None = None,
) -> dict[str, str]:
    """The headers a sender of `scheme` would attach to `body`.

    `msg_id` defaults to a fresh "msg_<uuid>", `timestamp` to now; `header` names the signature
    header for hmac-sha256. Every scheme also carries its delivery-id header.
    """
    check_scheme(scheme)
    key = _keyed(derive_key(scheme, secret))
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    stamp = str(int(time.time() if timestamp is None else timestamp))
    return _SIGNERS[scheme](key, body, msg_id, stamp, header or DEFAULT_HMAC_HEADER)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


_SIGNERS: dict[str, Callable[[hmac.HMAC, bytes, str, str, str], dict[str, str]]] = {
    "standard-webhooks": lambda key, body, msg_id, stamp, _: {
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + _b64(_digest(key, f"{msg_id}.{stamp}.".encode(), body)),
    },
    "stripe": lambda key, body, _, stamp, __: {
        "Stripe-Signature": f"t={stamp},v1={_digest(key, f'{stamp}.'.encode(), body).hex()}",
    },
    "github": lambda key, body, msg_id, _, __: {
        "X-Hub-Signature-256": "sha256=" + _digest(key, body).hex(),
        "X-GitHub-Delivery": msg_id,
    },
    "shopify": lambda key, body, msg_id, _, __: {
        "X-Shopify-Hmac-Sha256": _b64(_digest(key, body)),
        "X-Shopify-Webhook-Id": msg_id,
    },
    "hmac-sha256": lambda key, body, msg_id, _, header: {
        header: _digest(key, body).hex(),
        "X-Delivery-Id": msg_id,
    },
    "none": lambda key, body, msg_id, _, __: {"webhook-id": msg_id},
}
