"""The operator: list the parked runs, read why, fix the ERP master data, resume; at the end of
the day, the outcome of every exception (and the ones nobody came for)."""

from __future__ import annotations

import time
from typing import Any

from engine.demo.day import Day, Exception_
from engine.demo.scenario import LIST_PRICES
from engine.server.times import seconds


async def resolve_exceptions(day: Day) -> None:
    """Like an operator: list parked runs, read why, fix the ERP master data, resume."""
    for run in await day.runs("parked"):
        exception = await record_exception(day, run)
        exception.fix = await fix_master_data(day, exception.error)
        if exception.fix is not None:
            await day.call("syncline", "POST", f"/api/v1/runs/{run['id']}/resume")
            exception.resumed_at = time.time()


async def fix_master_data(day: Day, error: dict[str, Any]) -> str | None:
    """Register what the ERP said it lacks; what was done, in words (None: nothing to do)."""
    code, meta = error.get("code"), error.get("meta") or {}
    if code == "tax_registration_missing":  # the cloud ERP's own codes
        body = {"entity": meta["entity"], "countryCode": meta["countryCode"]}
        await day.call("erp-cloud", "POST", "/sandbox/tax-registrations", body)
        return (f"registered the {body['entity']} entity for tax in {body['countryCode']} "
                "in the cloud ERP")
    if code == "item_not_found":
        sku = meta["itemNumber"]
        body = {"itemNumber": sku, "description": sku, "unitPrice": LIST_PRICES.get(sku, 0)}
        await day.call("erp-cloud", "POST", "/sandbox/items", body)
        return f"added item {sku} to the cloud ERP's catalog"
    if code == "UNKNOWN_TAX_NEXUS":
        body = {"subsidiary": error["subsidiary"], "nexus": error["tax_nexus"]}
        await day.call("erp", "POST", "/sandbox/tax-nexus", body)
        return f"registered tax nexus {body['nexus']} for the {body['subsidiary']} entity"
    if code == "UNKNOWN_ITEM":  # the item master is kept in both ERPs while they coexist
        sku = error["sku"]
        body = {"sku": sku, "name": sku, "unit_price": LIST_PRICES.get(sku, 0)}
        await day.call("erp", "POST", "/sandbox/items", body)
        cloud = {"itemNumber": sku, "description": sku, "unitPrice": LIST_PRICES.get(sku, 0)}
        await day.call("erp-cloud", "POST", "/sandbox/items", cloud)
        return f"added item {sku} to the catalogs of both ERPs"
    return None


async def record_exception(day: Day, run: dict[str, Any]) -> Exception_:
    """A parked run, as the day's log records it."""
    detail = await day.call("syncline", "GET", f"/api/v1/runs/{run['id']}")
    error = erp_error(detail)
    exception = Exception_(
        run["id"], run["flow"], run["reason"] or {}, error.get("code"),
        seconds(run["updated_at"])
    )
    exception.error = error
    day.log.exceptions.append(exception)
    return exception


async def refresh_exceptions(day: Day) -> None:
    """The outcome of the exceptions the operator handled; runs parked since (no operator came
    for them) are exceptions too, unresolved."""
    for exception in day.log.exceptions:
        run = await day.call("syncline", "GET", f"/api/v1/runs/{exception.run_id}")
        exception.state = run["state"]
        exception.finished_at = seconds(run["updated_at"])
    known = {e.run_id for e in day.log.exceptions}
    for run in await day.runs("parked"):
        if run["id"] not in known:
            await record_exception(day, run)


def erp_error(detail: dict[str, Any]) -> dict[str, Any]:
    """The ERP's own error (`{"code", "message", ...}`) behind a parked run, if any."""
    for step in detail.get("steps", []):
        if step["state"] != "failed" or not step["attempts"]:
            continue
        response = step["attempts"][-1].get("response") or {}
        body = response.get("body")
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            error: dict[str, Any] = body["error"]
            return error
        if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
            first: dict[str, Any] = body["errors"][0]  # the cloud ERP's JSON:API errors
            return first
    return {}
