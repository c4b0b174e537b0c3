"""The ``/sandbox/...`` control endpoints every sandbox system has: state, reset, the request
log, idempotency keys, faults, the rate limit and webhook deliveries."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.sandbox.common import (
    JSON,
    SANDBOX_PREFIX,
    Call,
    Handler,
    Reply,
    bad_request,
    is_number,
)

if TYPE_CHECKING:
    from engine.sandbox.system import SandboxSystem


class ControlApi:
    """The control routes of `system` (`routes`), and their handlers."""

    def __init__(self, system: SandboxSystem) -> None:
        self.system = system

    def routes(self) -> list[tuple[str, str, Handler]]:
        p = SANDBOX_PREFIX
        routes: list[tuple[str, str, Handler]] = [
            ("GET", f"{p}/state", lambda call: Reply(200, self.system.snapshot())),
            ("POST", f"{p}/reset", self.reset),
            ("GET", f"{p}/requests", self.requests),
            ("GET", f"{p}/idempotency", self.idempotency),
            ("GET", f"{p}/faults", lambda call: Reply(200, self.faults_body())),
            ("POST", f"{p}/faults", self.add_fault),
            ("DELETE", f"{p}/faults", self.clear_faults),
            ("PUT", f"{p}/rate-limit", self.rate_limit),
            ("POST", f"{p}/rate-limit", self.rate_limit),
        ]
        if self.system.webhooks is not None:
            routes += [
                ("GET", f"{p}/webhooks", lambda call: Reply(200, self.webhooks_body())),
                ("POST", f"{p}/webhooks/config", self.webhook_config),
                ("POST", f"{p}/webhooks/{{delivery_id}}/redeliver", self.redeliver),
            ]
        return routes

    def webhooks_body(self) -> JSON:
        assert self.system.webhooks is not None
        return self.system.webhooks.snapshot()

    def faults_body(self) -> JSON:
        with self.system.lock:
            return {"faults": [f.describe() for f in self.system.faults]}

    def reset(self, call: Call) -> Reply:
        self.system.reset()
        return Reply(200, {"reset": True, "system": self.system.name})

    def requests(self, call: Call) -> Reply:
        limit = call.query.get("limit")
        with self.system.lock:
            items = list(self.system.requests)
        if limit and limit.isdigit():
            items = items[-int(limit) :]
        return Reply(200, {"requests": items})

    def idempotency(self, call: Call) -> Reply:
        return Reply(200, {"keys": self.system.snapshot()["idempotency"]})

    def add_fault(self, call: Call) -> Reply:
        body = call.body
        specs = body if isinstance(body, list) else [call.json_object()]
        with self.system.lock:
            created = [self.system.add_fault(**spec) for spec in specs]
        return Reply(201, created[0] if len(created) == 1 else {"faults": created})

    def clear_faults(self, call: Call) -> Reply:
        with self.system.lock:
            self.system.faults.clear()
        return Reply(200, {"faults": []})

    def rate_limit(self, call: Call) -> Reply:
        body = call.json_object()
        per_second, burst = body.get("per_second"), body.get("burst")
        if per_second is not None and (not is_number(per_second) or per_second <= 0):
            raise bad_request("INVALID_REQUEST", "per_second must be a positive number or null")
        if burst is not None and (not isinstance(burst, int) or burst < 1):
            raise bad_request("INVALID_REQUEST", "burst must be a positive integer")
        self.system.set_rate_limit(per_second, burst)
        with self.system.lock:
            bucket = self.system.bucket
            return Reply(200, {"rate_limit": bucket.describe() if bucket else None})

    def webhook_config(self, call: Call) -> Reply:
        body = call.json_object()
        url, secret = body.get("url"), body.get("secret")
        if url is not None and not isinstance(url, str):
            raise bad_request("INVALID_REQUEST", "url must be a string")
        if secret is not None and not isinstance(secret, str):
            raise bad_request("INVALID_REQUEST", "secret must be a string")
        try:
            self.system.configure_webhook(url=url, secret=secret)
        except ValueError:
            raise bad_request("INVALID_REQUEST", "secret must be whsec_<base64>") from None
        return Reply(200, {"url": self.system.webhooks.url if self.system.webhooks else None})

    def redeliver(self, call: Call) -> Reply:
        assert self.system.webhooks is not None
        delivery = self.system.webhooks.redeliver(call.params["delivery_id"])
        return Reply(202, {"id": delivery["id"], "webhook_id": delivery["webhook_id"]})
