"""Changes to running contracts: mid-term seat upgrades in billing (through an ERP outage that
loses responses after the write), accounts people move in the CRM, and renewals closed in the
CRM."""

from __future__ import annotations

import datetime as dt

from engine.demo.day import CRM_API, Day
from engine.demo.migration import entity_of


async def amend(day: Day) -> None:
    """Customers add seats to their subscriptions."""
    lost = max(1, min(3, len(day.scenario.amendments)))
    deals = {d.key: d for d in day.scenario.deals}
    us = any(entity_of(deals[k].market.currency) == "US" for k in day.scenario.amendments)
    erp, path, which = (("erp", "/sales-orders/", "") if us else
                        ("erp-cloud", "/api/v2/orders/", " (the cloud ERP)"))
    await day.fault(  # on the ERP the amended orders are booked in
        erp,
        f"ERP outage{which}: {lost} x 502 after the write on order adjustments (lost "
        "responses)",
        status=502,
        count=lost,
        phase="after",
        method="POST",
        path_prefix=path,
    )

    async def upgrade(item: tuple[str, int]) -> None:
        key, extra = item
        subscription = await day.subscription(key)
        if subscription is None:  # its deal is an exception nobody resolved
            return
        seat = next(
            i for i in subscription["items"]["data"] if i["price"]["product"] == "SEAT-STD"
        )
        body = {"item": seat["id"], "quantity": seat["quantity"] + extra}
        await day.call(
            "billing", "POST", f"/sandbox/subscriptions/{subscription['id']}/update", body
        )

    await day.each(list(day.scenario.amendments.items()), upgrade)
    day.log.counts["amendments"] = len(day.scenario.amendments)


async def move_accounts(day: Day) -> None:
    """People move a few accounts to a new street in the CRM: each change is copied to the
    billing customer, while the CRM's change events for Syncline's own account writes (echoes)
    start nothing."""
    keys = sorted(day.accounts)[: max(1, len(day.accounts) // 10)]

    async def move(key: str) -> None:
        body = {"BillingStreet": f"{len(key)} Harbour Way"}
        await day.call("crm", "PATCH", f"{CRM_API}/sobjects/Account/{day.accounts[key]}", body)

    await day.each(keys, move)
    day.log.counts["account moves"] = len(keys)


async def renew(day: Day) -> None:
    """Sales reps close a renewal opportunity for each renewing customer."""
    deals = {d.key: d for d in day.scenario.deals}

    async def renew_one(key: str) -> None:
        deal = deals[key]
        account = await day.call("crm", "GET", f"{CRM_API}/sobjects/Account/{day.accounts[key]}")
        if not account.get("Contract_End__c"):  # its deal is an exception nobody resolved
            return
        start = dt.date.fromisoformat(account["Contract_End__c"]) + dt.timedelta(days=1)
        body = deal.opportunity(
            day.accounts[key],
            dt.date.today().isoformat(),
            "Renewal",
            Original_Opportunity__c=day.opportunities[key],
            Term_Start__c=start.isoformat(),
        )
        created = await day.call("crm", "POST", f"{CRM_API}/sobjects/Opportunity", body)
        await day.call("crm", "POST", f"/sandbox/opportunities/{created['id']}/close")

    await day.each(day.scenario.renewals, renew_one)
    day.log.counts["renewals"] = len(day.scenario.renewals)
