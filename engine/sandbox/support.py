"""Support-platform sandbox: entitlements per CRM account.

An entitlement is ``{account_id, plan, seats, status: active|suspended, ...}``. ``PUT
/entitlements/{account_id}`` and ``POST /entitlements`` upsert (201 when created, 200 when
updated), ``PATCH /entitlements/{account_id}`` changes some fields (e.g. ``{"status":
"suspended"}``), ``GET /entitlements/{account_id}`` reads, ``GET /entitlements`` lists.
Each change bumps ``version`` and is appended to ``history``. Idempotency-Key is honoured.

Run standalone: ``python -m engine.sandbox.support --port 9104``.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette

from engine.sandbox.common import JSON, Call, Handler, Reply, bad_request, iso_now, not_found
from engine.sandbox.serving import run_standalone
from engine.sandbox.system import SandboxConfig, SandboxSystem

STATUSES = ("active", "suspended")
FIELDS = ("plan", "seats", "status", "features", "source", "expires_at")


class SupportSandbox(SandboxSystem):
    name = "support"
    config_class = SandboxConfig
    collections = ("entitlements",)

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/entitlements", self.upsert),
            ("GET", "/entitlements", self.list_entitlements),
            ("PUT", "/entitlements/{account_id}", self.upsert),
            ("PATCH", "/entitlements/{account_id}", self.patch),
            ("GET", "/entitlements/{account_id}", self.get_entitlement),
            ("DELETE", "/entitlements/{account_id}", self.revoke),
        ]

    @staticmethod
    def _validate(values: JSON, *, partial: bool) -> JSON:
        unknown = sorted(set(values) - set(FIELDS) - {"account_id"})
        if unknown:
            raise bad_request("UNKNOWN_FIELD", f"unknown fields {unknown}", fields=unknown)
        required = () if partial else ("plan", "seats")
        for name in required:
            if name not in values:
                raise bad_request("INVALID_REQUEST", f"{name} is required", field=name)
        if "plan" in values and (not isinstance(values["plan"], str) or not values["plan"]):
            raise bad_request("INVALID_REQUEST", "plan must be a non-empty string", field="plan")
        seats = values.get("seats")
        if "seats" in values and (
            not isinstance(seats, int) or isinstance(seats, bool) or seats < 0
        ):
            raise bad_request(
                "INVALID_SEATS", "seats must be a non-negative integer", field="seats"
            )
        if "status" in values and values["status"] not in STATUSES:
            raise bad_request(
                "INVALID_STATUS", f"status must be one of {list(STATUSES)}", field="status"
            )
        if "features" in values and not (
            isinstance(values["features"], list)
            and all(isinstance(f, str) for f in values["features"])
        ):
            raise bad_request("INVALID_REQUEST", "features must be a list of strings")
        return {k: v for k, v in values.items() if k in FIELDS}

    def _apply(self, account_id: str, changes: JSON, *, create: bool) -> tuple[JSON, bool]:
        current = self.data["entitlements"].get(account_id)
        now = iso_now()
        if current is None:
            if not create:
                raise not_found("entitlement", account_id)
            current = {
                "account_id": account_id,
                "plan": None,
                "seats": 0,
                "status": "active",
                "features": [],
                "source": None,
                "expires_at": None,
                "version": 0,
                "created_at": now,
                "updated_at": now,
                "history": [],
            }
            self.data["entitlements"][account_id] = current
            created = True
        else:
            created = False
        changed = {k: v for k, v in changes.items() if created or current.get(k) != v}
        if changed or created:
            current.update(changed)
            current["version"] += 1
            current["updated_at"] = now
            current["history"].append({"version": current["version"], "at": now, **changed})
        return current, created

    def upsert(self, call: Call) -> Reply:
        body = call.json_object()
        account_id = call.params.get("account_id") or body.get("account_id")
        if not isinstance(account_id, str) or not account_id:
            raise bad_request("INVALID_REQUEST", "account_id is required", field="account_id")
        if "account_id" in body and body["account_id"] != account_id:
            raise bad_request("INVALID_REQUEST", "account_id in body and path differ")
        changes = self._validate(body, partial=False)
        entitlement, created = self._apply(account_id, changes, create=True)
        return Reply(201 if created else 200, entitlement)

    def patch(self, call: Call) -> Reply:
        body = call.json_object()
        changes = self._validate(body, partial=True)
        entitlement, _ = self._apply(call.params["account_id"], changes, create=False)
        return Reply(200, entitlement)

    def revoke(self, call: Call) -> Reply:
        """Withdraw an entitlement (status `revoked`, kept with its history); again: no change."""
        entitlement, _ = self._apply(call.params["account_id"], {"status": "revoked"},
                                     create=False)
        return Reply(200, entitlement)

    def get_entitlement(self, call: Call) -> Reply:
        entitlement = self.data["entitlements"].get(call.params["account_id"])
        if entitlement is None:
            raise not_found("entitlement", call.params["account_id"])
        return Reply(200, entitlement)

    def list_entitlements(self, call: Call) -> Reply:
        records = list(self.data["entitlements"].values())
        for name in ("status", "plan"):
            if name in call.query:
                records = [r for r in records if r.get(name) == call.query[name]]
        return Reply(200, {"data": records, "count": len(records)})


def create_app(config: SandboxConfig | None = None, **overrides: Any) -> Starlette:
    """The support sandbox's Starlette app (``app.state.sandbox`` is the `SupportSandbox`)."""
    return SupportSandbox(config, **overrides).app


if __name__ == "__main__":
    run_standalone(SupportSandbox, 9104)
