"""Signed outbound webhooks of the sandbox systems: Standard Webhooks and Stripe signatures,
delivered by a few background threads with retries; every attempt is recorded."""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import hmac
import json
import queue
import threading
import time
import zlib
from collections.abc import Iterable
from typing import Any

import httpx

from engine.sandbox.common import JSON, dumps, iso_now, not_found
from engine.tls import tls_context

# --------------------------------------------------------------------------------------------
# webhook signing and delivery

STANDARD_WEBHOOKS = "standard-webhooks"
STRIPE = "stripe"
LANES = 8  # delivery threads: one record's webhooks go through one lane, in order


def sign_standard_webhook(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,<base64 HMAC-SHA256>``.

    The key is the base64-decoded secret without its ``whsec_`` prefix; the signed content is
    ``{msg_id}.{timestamp}.{body}``.
    """
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign_stripe_webhook(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Stripe-Signature`` header value: ``t=<ts>,v1=<hex HMAC-SHA256 of "{t}.{body}">``.

    Stripe keys the HMAC with the whole secret string (``whsec_...``) as bytes.
    """
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def changed_fields(before: JSON, after: JSON) -> list[str]:
    """The top-level fields whose values differ between two versions of a record, sorted: what
    a change event says changed (Salesforce's ``changedFields``)."""
    return sorted(k for k in {*before, *after} if before.get(k) != after.get(k))


class WebhookSender:
    """Signs and POSTs webhooks from `lanes` background threads, with retries.

    As SaaS senders do, webhooks about different records travel concurrently (a slow receiver
    or a delivery backing off holds up only its lane), while the webhooks of one record (the
    `key` a system gives: its account or customer) go through one lane, in the order sent.

    Each `send` records a delivery ``{id, webhook_id, type, url, status, attempts, payload}``
    (status ``pending`` | ``delivered`` | ``failed`` | ``no_target`` | ``cancelled``). An attempt
    fails on a network error or a non-2xx answer; after `max_attempts` the delivery is ``failed``.
    A retry is re-signed with a fresh timestamp but keeps the webhook id.
    """

    def __init__(
        self,
        *,
        scheme: str,
        secret: str,
        url: str | None = None,
        max_attempts: int = 4,
        backoff: Iterable[float] = (0.05, 0.25, 1.0),
        timeout: float = 5.0,
        user_agent: str = "Syncline-Sandbox/1.0",
        lanes: int = LANES,
    ) -> None:
        if scheme not in (STANDARD_WEBHOOKS, STRIPE):
            raise ValueError(f"unknown webhook scheme {scheme!r}")
        if scheme == STANDARD_WEBHOOKS:
            base64.b64decode(secret.removeprefix("whsec_"), validate=True)  # fail fast
        self.scheme = scheme
        self.secret = secret
        self.url = url
        self.max_attempts = max(1, int(max_attempts))
        self.backoff = tuple(backoff) or (0.0,)
        self.timeout = timeout
        self.user_agent = user_agent
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._lanes: list[queue.Queue[JSON | None]] = [queue.Queue() for _ in range(max(1, lanes))]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pending = 0
        self._seq = 0
        self.deliveries: list[JSON] = []

    # -- configuration and inspection

    def configure(self, url: str | None = None, secret: str | None = None) -> None:
        with self._lock:
            if url is not None:
                self.url = url or None
            if secret is not None:
                if self.scheme == STANDARD_WEBHOOKS:
                    base64.b64decode(secret.removeprefix("whsec_"), validate=True)
                self.secret = secret

    def snapshot(self) -> JSON:
        with self._lock:
            return {
                "url": self.url,
                "scheme": self.scheme,
                "deliveries": copy.deepcopy(self.deliveries),
            }

    def clear(self) -> None:
        with self._lock:
            for delivery in self.deliveries:
                if delivery["status"] == "pending":
                    delivery["status"] = "cancelled"
            self.deliveries = []

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until every queued delivery has finished (delivered or failed)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    # -- sending

    def send(self, event_type: str, payload: Any, webhook_id: str, key: str | None = None) -> JSON:
        """Queue `payload` for delivery after the earlier webhooks of the same `key` (none: in
        no particular order); returns the delivery record (a live dict)."""
        body = dumps(payload)
        with self._lock:
            self._seq += 1
            delivery: JSON = {
                "id": f"dlv_{self._seq}",
                "webhook_id": webhook_id,
                "type": event_type,
                "url": self.url,
                "status": "pending" if self.url else "no_target",
                "attempts": [],
                "payload": json.loads(body),
                "created_at": iso_now(),
            }
            self.deliveries.append(delivery)
            if not self.url:
                return delivery
            self._pending += 1
            self._ensure_threads()
        lane = zlib.crc32((key or webhook_id).encode()) % len(self._lanes)
        self._lanes[lane].put({"delivery": delivery, "body": body})
        return delivery

    def redeliver(self, delivery_id: str) -> JSON:
        """Send a recorded delivery again: same webhook id and body (a duplicate delivery)."""
        with self._lock:
            old = next((d for d in self.deliveries if d["id"] == delivery_id), None)
        if old is None:
            raise not_found("delivery", delivery_id)
        return self.send(old["type"], old["payload"], old["webhook_id"])

    def _ensure_threads(self) -> None:
        if not self._threads and not self._stop.is_set():
            for i, lane in enumerate(self._lanes):
                thread = threading.Thread(
                    target=self._run, args=(lane,), name=f"webhooks-{self.user_agent}-{i}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)

    def _headers(self, webhook_id: str, body: bytes) -> dict[str, str]:
        ts = int(time.time())
        headers = {"content-type": "application/json", "user-agent": self.user_agent}
        if self.scheme == STANDARD_WEBHOOKS:
            headers["webhook-id"] = webhook_id
            headers["webhook-timestamp"] = str(ts)
            headers["webhook-signature"] = sign_standard_webhook(self.secret, webhook_id, ts, body)
        else:
            headers["stripe-signature"] = sign_stripe_webhook(self.secret, ts, body)
        return headers

    def _run(self, lane: queue.Queue[JSON | None]) -> None:
        with httpx.Client(timeout=self.timeout, verify=tls_context()) as client:
            while True:
                job = lane.get()
                if job is None:
                    break
                try:
                    self._deliver(client, job["delivery"], job["body"])
                finally:
                    with self._idle:
                        self._pending -= 1
                        self._idle.notify_all()

    def _deliver(self, client: httpx.Client, delivery: JSON, body: bytes) -> None:
        for attempt in range(1, self.max_attempts + 1):
            if self._stop.is_set() or delivery["status"] == "cancelled":
                delivery["status"] = "cancelled"
                return
            with self._lock:
                url, headers = delivery["url"], self._headers(delivery["webhook_id"], body)
            record: JSON = {"attempt": attempt, "at": iso_now(), "status_code": None}
            started = time.monotonic()
            try:
                response = client.post(url, content=body, headers=headers)
                record["status_code"] = response.status_code
                ok = 200 <= response.status_code < 300
                if not ok:
                    record["error"] = response.text[:200]
            except httpx.HTTPError as exc:
                ok = False
                record["error"] = f"{type(exc).__name__}: {exc}"[:200]
            record["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
            with self._lock:
                delivery["attempts"].append(record)
                if ok:
                    delivery["status"] = "delivered"
                    return
            if attempt < self.max_attempts:
                delay = self.backoff[min(attempt - 1, len(self.backoff) - 1)]
                if self._stop.wait(delay):
                    break
        with self._lock:
            delivery["status"] = "cancelled" if self._stop.is_set() else "failed"

    def close(self, timeout: float = 5.0) -> None:
        """Stop the delivery threads (pending deliveries are cancelled)."""
        self._stop.set()
        for lane in self._lanes if self._threads else ():
            # drain what was never started, then wake the lane's thread
            with contextlib.suppress(queue.Empty):
                while True:
                    job = lane.get_nowait()
                    if job is not None:
                        job["delivery"]["status"] = "cancelled"
                        with self._idle:
                            self._pending -= 1
                            self._idle.notify_all()
            lane.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []


