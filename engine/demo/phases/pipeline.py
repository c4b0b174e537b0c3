"""Sales: accounts and opportunities created in the CRM, then the deals closing (its webhooks
reach Syncline) through an ERP outage and a CRM outage, with a few webhooks delivered twice."""

from __future__ import annotations

import datetime as dt

from engine.demo.day import CRM_API, Day
from engine.demo.scenario import Deal


async def create_pipeline(day: Day) -> None:
    """Every account (parents before subsidiaries), then one opportunity per account."""
    deals = day.scenario.deals

    async def account(deal: Deal) -> None:
        body = deal.account()
        if deal.parent is not None:
            body["ParentId"] = day.accounts[deal.parent]
        created = await day.call("crm", "POST", f"{CRM_API}/sobjects/Account", body)
        day.accounts[deal.key] = created["id"]

    async def opportunity(deal: Deal) -> None:
        body = deal.opportunity(day.accounts[deal.key], dt.date.today().isoformat())
        created = await day.call("crm", "POST", f"{CRM_API}/sobjects/Opportunity", body)
        day.opportunities[deal.key] = created["id"]

    await day.each([d for d in deals if d.parent is None], account)
    await day.each([d for d in deals if d.parent is not None], account)
    await day.each(deals, opportunity)


async def close_deals(day: Day) -> None:
    """Sales reps close every deal while the ERP and the CRM have outages."""
    burst = max(4, len(day.scenario.deals) // 20)
    await day.fault(
        "erp",
        f"ERP outage: {burst} x 503 on /sales-orders",
        status=503,
        count=burst,
        path_prefix="/sales-orders",
    )
    await day.fault(
        "crm", "CRM outage: 3 x 500 on account updates", status=500, count=3, method="PATCH"
    )
    deliveries = []

    async def close(deal: Deal) -> None:
        closed = await day.call(
            "crm", "POST", f"/sandbox/opportunities/{day.opportunities[deal.key]}/close"
        )
        deliveries.append(closed["webhook"]["delivery_id"])

    await day.each(day.scenario.deals, close)
    for delivery in deliveries[:3]:  # the CRM delivers a few webhooks twice
        await day.call("crm", "POST", f"/sandbox/webhooks/{delivery}/redeliver")
    day.log.counts["deals"] = len(deliveries)
    day.log.counts["duplicate webhooks"] = min(3, len(deliveries))
