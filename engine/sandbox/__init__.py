"""Sandbox systems: small real HTTP apps that behave like the SaaS platforms Syncline connects.

- `crm.CrmSandbox` (Salesforce-like; sends Standard Webhooks signed ``opportunity.closed_won``)
- `erp.ErpSandbox` (NetSuite-like; master-data rejections, idempotency, rate limits)
- `billing.BillingSandbox` (Stripe-like; sends Stripe-signed events)
- `support.SupportSandbox` (entitlements per account)
- `chat.ChatSandbox` (Slack-like incoming webhooks; records the messages alerts post)
- `erp_cloud.ErpCloudSandbox` (the cloud ERP being migrated to: OAuth2, another API shape)

``with Sandbox() as sb: sb.urls["erp"]`` starts them all in-process on free ports of 127.0.0.1.
See README.md in this folder for the payloads.
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported lazily, so ``python -m engine.sandbox.erp`` does not import erp twice.
_EXPORTS = {
    "Sandbox": "suite",
    "DEFAULT_PORTS": "suite",
    "CrmSandbox": "crm",
    "CrmConfig": "crm",
    "ErpSandbox": "erp",
    "ErpConfig": "erp",
    "BillingSandbox": "billing",
    "BillingConfig": "billing",
    "SupportSandbox": "support",
    "ChatSandbox": "chat",
    "ErpCloudSandbox": "erp_cloud",
    "ErpCloudConfig": "erp_cloud",
    "SandboxConfig": "system",
    "SandboxSystem": "system",
    "ServerThread": "serving",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
