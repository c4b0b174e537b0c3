"""The cloud ERP sandbox's revenue schedules (`CloudRevenue`, a mixin of `ErpCloudSandbox`), in
its own API style: camelCase resources, ids per legal entity, JSON:API errors, creation
idempotent by ``externalReference``.

Every order opens its schedule (``RS-EU-00001``) with one ratable line of its net total over the
service period. An amendment moves the order's net total but not its schedule: the integration
adds the line that spreads the amendment's amount over the rest of the term (``POST
/api/v2/orders/{id}/revenue-schedule/lines {externalReference, sourceId, periodStart?,
periodEnd?, amount}``; an overage is recognized at a point in time: ``periodStart ==
periodEnd``). The ERP refuses a line after which the schedule would not sum to the order's net
total (422 ``schedule_total_mismatch`` with ``orderTotal``, ``scheduled`` and ``difference``;
nothing changes); the same ``externalReference`` again answers 200 with the schedule unchanged.
Each line carries its monthly recognition (``periods: [{period: "2026-03", amount}]``, spread by
days, the cents' remainder in the last month), so finance reads revenue by month.

``GET /api/v2/orders/{id}/revenue-schedule`` reads an order's; ``GET
/api/v2/revenue-schedules[?entity=&orderId=&state=]`` lists them with ``orderTotal`` and
``scheduledTotal`` (the lines' sum) as of now.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from engine.sandbox.common import JSON, Call, Reply, is_number, iso_now, money, parse_date
from engine.sandbox.erp_cloud_ledger import problem, reject

if TYPE_CHECKING:
    from engine.sandbox.erp_cloud import ErpCloudConfig

TOLERANCE = 0.005


def monthly(start: dt.date, end: dt.date, amount: float) -> list[JSON]:
    """`amount` recognized over ``start..end`` (both included) by month, in proportion to the
    days of each month in the period; the last month takes the cents' remainder so the months
    sum to the amount exactly."""
    days = (end - start).days + 1
    periods: list[JSON] = []
    cursor, given = start, 0.0
    while cursor <= end:
        next_month = (cursor.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        last = min(end, next_month - dt.timedelta(days=1))
        share = money(amount * ((last - cursor).days + 1) / days)
        if last == end:
            share = money(amount - given)
        periods.append({"period": cursor.strftime("%Y-%m"), "amount": share})
        given = money(given + share)
        cursor = last + dt.timedelta(days=1)
    return periods


class CloudRevenue:
    """Revenue schedules, on the state of a `SandboxSystem`."""

    data: dict[str, dict[str, JSON]]
    config: ErpCloudConfig
    ids: Any

    if TYPE_CHECKING:  # provided by `CloudLedger` (a stub here would shadow it in the MRO)
        def order(self, ident: str) -> JSON: ...

    def open_schedule(self, order: JSON) -> JSON:
        """A new order's schedule: its net total, ratably over its service period."""
        entity = order["entity"]
        period = order["servicePeriod"]
        schedule: JSON = {
            "id": f"RS-{entity}-{self.ids.next(f'schedule-{entity}', 1):05d}",
            "entity": entity,
            "orderId": order["id"],
            "orderReference": order["externalReference"],
            "customerId": order["customer"]["id"],
            "currencyCode": order["currencyCode"],
            "state": "Active",
            "lines": [],
            "createdAt": iso_now(),
        }
        self._add_line(schedule, order["externalReference"], order["id"],
                       dt.date.fromisoformat(period["start"]),
                       dt.date.fromisoformat(period["end"]), order["totals"]["net"])
        self.data["revenue_schedules"][schedule["id"]] = schedule
        order["revenueScheduleId"] = schedule["id"]
        return self.schedule_of(order)

    def schedule_of(self, order: JSON) -> JSON:
        """The order's schedule, its totals as of now (the order's net total may have moved)."""
        schedule: JSON = self.data["revenue_schedules"][order["revenueScheduleId"]]
        schedule["orderTotal"] = order["totals"]["net"]
        schedule["scheduledTotal"] = money(sum(line["amount"] for line in schedule["lines"]))
        schedule["state"] = "Cancelled" if order["state"] == "Cancelled" else "Active"
        return schedule

    @staticmethod
    def _add_line(schedule: JSON, reference: str, source: Any, start: dt.date, end: dt.date,
                  amount: float) -> None:
        schedule["lines"].append({
            "lineNo": 10 * (len(schedule["lines"]) + 1),
            "externalReference": reference,
            "sourceId": source,
            "recognition": "PointInTime" if start == end else "Ratable",
            "periodStart": start.isoformat(),
            "periodEnd": end.isoformat(),
            "amount": money(amount),
            "periods": monthly(start, end, amount),
        })
        schedule["modifiedAt"] = iso_now()

    def add_schedule_line(self, call: Call) -> Reply:
        order = self.order(call.params["id"])
        body = call.json_object()
        reference = body.get("externalReference")
        if not isinstance(reference, str) or not reference:
            raise reject([problem("reference_required", "externalReference is required",
                                  "/externalReference")])
        schedule = self.schedule_of(order)
        if any(line["externalReference"] == reference for line in schedule["lines"]):
            return Reply(200, schedule)
        if order["state"] == "Cancelled":
            raise reject([problem("order_cancelled", f"order {order['id']} is cancelled",
                                  "/id")], 409)
        amount = body.get("amount")
        if not is_number(amount):
            raise reject([problem("invalid_amount", "amount must be a number", "/amount")])
        end_of_term = dt.date.fromisoformat(order["servicePeriod"]["end"])
        start = (parse_date(body["periodStart"], "periodStart") if body.get("periodStart")
                 else dt.date.today())
        end = parse_date(body["periodEnd"], "periodEnd") if body.get("periodEnd") else None
        end = end or max(start, end_of_term)
        if end < start:
            raise reject([problem("invalid_period", "periodEnd is before periodStart",
                                  "/periodEnd")])
        scheduled = money(schedule["scheduledTotal"] + amount)
        total = schedule["orderTotal"]
        if abs(scheduled - total) > TOLERANCE:
            raise reject([problem(
                "schedule_total_mismatch",
                f"revenue schedule {schedule['id']} would sum to {scheduled}, order "
                f"{order['id']} totals {total} net", "/amount",
                orderTotal=total, scheduled=scheduled, difference=money(total - scheduled))])
        self._add_line(schedule, reference, body.get("sourceId"), start, end, amount)
        return Reply(201, self.schedule_of(order))

    def order_schedule(self, call: Call) -> Reply:
        return Reply(200, self.schedule_of(self.order(call.params["id"])))

    def list_schedules(self, call: Call) -> Reply:
        records = [self.schedule_of(order) for order in self.data["orders"].values()
                   if "revenueScheduleId" in order]
        for name in ("entity", "orderId", "state"):
            if name in call.query:
                records = [r for r in records if str(r.get(name)) == call.query[name]]
        return Reply(200, {"items": records, "count": len(records)})
