"""What operators and tests change on a running sandbox system (its rate limit, faults and
webhook target), and its outbound webhooks: the `Operating` half of `SandboxSystem`."""

from __future__ import annotations

import threading
from typing import Any

from engine.sandbox.common import JSON
from engine.sandbox.limits import Fault, TokenBucket
from engine.sandbox.webhooks import WebhookSender


class Operating:
    """Mixed into `SandboxSystem`, which sets these attributes."""

    name: str
    lock: threading.RLock
    bucket: TokenBucket | None
    webhooks: WebhookSender | None
    faults: list[Fault]
    _fault_seq: int

    def emit(self, event_type: str, payload: Any, webhook_id: str,
             key: str | None = None) -> JSON | None:
        """Queue an outbound webhook, after the earlier ones of the same `key` (the record's
        account or customer); a no-op for systems without webhooks."""
        if self.webhooks is None:
            return None
        return self.webhooks.send(event_type, payload, webhook_id, key)

    def wait_webhooks(self, timeout: float = 10.0) -> bool:
        return self.webhooks.wait_idle(timeout) if self.webhooks else True

    def configure_webhook(self, url: str | None = None, secret: str | None = None) -> None:
        if self.webhooks is None:
            raise ValueError(f"the {self.name} sandbox sends no webhooks")
        self.webhooks.configure(url=url, secret=secret)

    def set_rate_limit(self, per_second: float | None, burst: int | None = None) -> None:
        with self.lock:
            if per_second is None:
                self.bucket = None
            else:
                self.bucket = TokenBucket(per_second, burst or max(1, int(per_second)))

    def add_fault(self, **spec: Any) -> JSON:
        with self.lock:
            self._fault_seq += 1
            fault = Fault.from_body(f"flt_{self._fault_seq}", spec)
            self.faults.append(fault)
            return fault.describe()
