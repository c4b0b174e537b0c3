"""Billing: invoices paid and failed (through an ERP rate-limit storm on payments), then some
failed payments recovered."""

from __future__ import annotations

from engine.demo.day import Day


async def invoices(day: Day) -> None:
    """Every customer pays its first invoice, except the failing and the unpaid ones."""
    # the cloud ERP rotates its keys: every token Syncline holds is refused (401) from now on,
    # and Syncline must fetch a new one before the EU payments go through
    expired = await day.call("erp-cloud", "POST", "/sandbox/tokens/expire")
    day.log.counts["cloud ERP tokens revoked"] = expired["expired"]
    await day.fault(
        "erp",
        "ERP rate-limit storm: 429 + Retry-After for 1.5 s on /payments",
        mode="rate_limit_storm",
        duration=1.5,
        retry_after=1,
        path_prefix="/payments",
    )
    failing = set(day.scenario.failed_payments)
    unpaid = set(day.scenario.unpaid)
    keys = [d.key for d in day.scenario.deals if d.key not in unpaid]

    async def settle_invoice(key: str) -> None:
        subscription = await day.subscription(key)
        if subscription is None:  # an exception nobody resolved: nothing to invoice
            return
        action = "fail" if key in failing else "pay"
        path = f"/sandbox/invoices/{subscription['latest_invoice']}/{action}"
        await day.call("billing", "POST", path)

    await day.each(keys, settle_invoice)
    day.log.counts["invoices paid"] = len(keys) - len(failing)
    day.log.counts["payments failed"] = len(failing)


async def recover_payments(day: Day) -> None:
    """Some customers whose payment failed pay after all."""

    async def pay(key: str) -> None:
        subscription = await day.subscription(key)
        if subscription is None:  # its deal is an exception nobody resolved
            return
        await day.call(
            "billing", "POST", f"/sandbox/invoices/{subscription['latest_invoice']}/pay"
        )

    await day.each(day.scenario.recovered, pay)
    day.log.counts["payments recovered"] = len(day.scenario.recovered)
