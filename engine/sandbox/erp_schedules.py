"""ERP revenue schedules: how each sales order's booked total is recognized, one schedule per
order (``RS-...``), made of entries ``{source, start_date, end_date, amount}``.

Creating an order schedules its whole total ratably over its term. Adjusting an order changes its
total but not its schedule: the integration posts the schedule update
(``POST /sales-orders/{id}/revenue-schedule``, ``{external_id, source, start_date?, end_date?,
amount}``), and the ERP checks that the schedule then sums to the order total (``400
SCHEDULE_TOTAL_MISMATCH`` with ``order_total``, ``scheduled`` and ``difference`` otherwise, and
nothing changes). An entry's ``external_id`` is applied once (``409 DUPLICATE_EXTERNAL_ID``).
``GET /revenue-schedules`` lists them with ``order_total`` and ``scheduled`` (their sum).
"""

from __future__ import annotations

from engine.sandbox.common import (
    JSON,
    ApiError,
    Call,
    Reply,
    bad_request,
    is_number,
    iso_now,
    money,
    parse_date,
    require_str,
)
from engine.sandbox.erp_receivables import ErpReceivables

TOLERANCE = 0.005


class ErpSchedules(ErpReceivables):
    """One revenue schedule per sales order, checked against the order total on every update."""

    def _open_schedule(self, order: JSON) -> JSON:
        ident = f"RS-{self.ids.next('revenue_schedule', 1001)}"
        schedule: JSON = {
            "id": ident,
            "sales_order_id": order["id"],
            "external_id": order["external_id"],
            "account_id": order["account_id"],
            "currency": order["currency"],
            "status": "active",
            "entries": [
                {
                    "external_id": order["external_id"],
                    "source": order["id"],
                    "recognition": "ratable",
                    "start_date": order["start_date"],
                    "end_date": order["end_date"],
                    "amount": order["total"],
                }
            ],
            "created_at": iso_now(),
            "updated_at": iso_now(),
        }
        self._totals(schedule, order)
        self.data["revenue_schedules"][ident] = schedule
        order["revenue_schedule_id"] = ident
        return schedule

    @staticmethod
    def _totals(schedule: JSON, order: JSON) -> None:
        schedule["order_total"] = order["total"]
        schedule["scheduled"] = money(sum(e["amount"] for e in schedule["entries"]))

    def _schedule_of(self, order: JSON) -> JSON:
        schedule: JSON = self.data["revenue_schedules"][order["revenue_schedule_id"]]
        self._totals(schedule, order)  # the order total may have moved since
        return schedule

    def update_revenue_schedule(self, call: Call) -> Reply:
        order = self._order(call.params["id"])
        body = call.json_object()
        if order["status"] == "cancelled":
            raise ApiError(409, "ORDER_CANCELLED", f"sales order {order['id']} is cancelled")
        external_id = require_str(body, "external_id")
        schedule = self._schedule_of(order)
        for entry in schedule["entries"]:
            if entry["external_id"] == external_id:
                raise ApiError(409, "DUPLICATE_EXTERNAL_ID",
                               f"external_id {external_id!r} already exists",
                               existing_id=schedule["id"])
        amount = body.get("amount")
        if not is_number(amount):
            raise bad_request("INVALID_AMOUNT", "amount must be a number", field="amount")
        start = (parse_date(body["start_date"], "start_date") if body.get("start_date")
                 else None)
        end = parse_date(body["end_date"], "end_date") if body.get("end_date") else None
        if start and end and end < start:
            raise bad_request("INVALID_REQUEST", "end_date is before start_date",
                              field="end_date")
        scheduled = money(schedule["scheduled"] + amount)
        if abs(scheduled - order["total"]) > TOLERANCE:
            raise ApiError(
                400, "SCHEDULE_TOTAL_MISMATCH",
                f"revenue schedule {schedule['id']} would sum to {scheduled}, "
                f"sales order {order['id']} totals {order['total']}",
                order_total=order["total"], scheduled=scheduled,
                difference=money(order["total"] - scheduled),
            )
        schedule["entries"].append({
            "external_id": external_id,
            "source": body.get("source"),
            "recognition": "point_in_time" if start is not None and start == end else "ratable",
            "start_date": (start.isoformat() if start else iso_now()[:10]),
            "end_date": (end or parse_date(order["end_date"], "end_date")).isoformat(),
            "amount": money(amount),
        })
        self._totals(schedule, order)
        schedule["updated_at"] = iso_now()
        return Reply(201, schedule)

    def list_revenue_schedules(self, call: Call) -> Reply:
        records = []
        for order in self.data["sales_orders"].values():
            if "sales_order_id" in call.query and order["id"] != call.query["sales_order_id"]:
                continue
            records.append(self._schedule_of(order))
        return Reply(200, {"data": records, "count": len(records)})
