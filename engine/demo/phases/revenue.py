"""The revenue phases of the demo's day:

- `half_year_later`: billing's test clock moves on six months, so the mid-term amendments that
  follow are prorated by the half of the billing period left;
- `usage_month`: a month of metered API usage is reported to billing for some subscriptions (some
  over their plan, some within it), the month closes, and Syncline's usage poll reads it: each
  month over the plan is billed (flow usage-overage). The poll then reads the same months again,
  as a poll after a crash would: every item is a duplicate and nothing is billed twice;
- `renewal_forecast`: billing's clock moves on to within 90 days of the subscriptions' renewal,
  and Syncline's renewal-forecast poll puts each upcoming renewal in the CRM as an open Renewal
  opportunity; read again, nothing is forecast twice.
"""

from __future__ import annotations

from typing import Any

from engine.demo.day import Day, DemoError

HALF_YEAR_DAYS = 182
USAGE_FLOW = "usage-overage"
FORECAST_FLOW = "renewal-forecast"
TO_RENEWAL_WINDOW_DAYS = 120  # after half a year: 63 days before the yearly renewals
PLANS = ("PLAT-PRO", "PLAT-ENT")


async def half_year_later(day: Day) -> None:
    clock = await day.call("billing", "POST", "/sandbox/clock", {"days": HALF_YEAR_DAYS})
    day.log.counts["billing clock moved on (days)"] = round(clock["offset_days"])


async def poll_twice(day: Day, name: str) -> tuple[int, int]:
    """Poll flow `name` now, let its runs finish, and poll it again: (accepted, duplicates of
    the second read). A second read that starts a run or fails is a DemoError."""
    flow = day.stack.runtime.plan.flows[name]
    first = await day.stack.runtime.polls.poll(flow)
    await day.settle()
    again = await day.stack.runtime.polls.poll(flow)
    if first.error or again.error or again.accepted:
        raise DemoError(f"the {name} poll went wrong: {first.as_dict()} then {again.as_dict()}")
    return first.accepted, again.duplicates


async def usage_month(day: Day) -> None:
    clock = await day.call("billing", "POST", "/sandbox/clock", {"days": 0})
    last_month = int(clock["now"]) - 35 * 86400  # a month that is over: closed

    async def report(item: tuple[str, int]) -> None:
        key, calls = item
        subscription = await day.subscription(key)
        if subscription is None:  # its deal is an exception nobody resolved
            return
        plan = next(
            (i for i in subscription["items"]["data"] if i["price"]["product"] in PLANS), None
        )
        if plan is not None:
            body = {"quantity": calls, "timestamp": last_month}
            path = f"/v1/subscription_items/{plan['id']}/usage_records"
            await day.call("billing", "POST", path, body)

    await day.each(list(day.scenario.usage.items()), report)
    billed, again = await poll_twice(day, USAGE_FLOW)
    counts: dict[str, Any] = day.log.counts
    counts["usage months metered"] = len(day.scenario.usage)
    counts["usage months over the plan (billed)"] = billed
    counts["usage months read again (nothing billed twice)"] = again


async def renewal_forecast(day: Day) -> None:
    await day.call("billing", "POST", "/sandbox/clock", {"days": TO_RENEWAL_WINDOW_DAYS})
    forecast, again = await poll_twice(day, FORECAST_FLOW)
    day.log.counts["renewals forecast in the CRM"] = forecast
    day.log.counts["forecasts read again (none made twice)"] = again
