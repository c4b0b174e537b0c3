"""Reconciliation: do the four systems agree after the day?

Most of it is the product's: the reference project's Reconciliation definitions
(flows/reconciliations.yaml), run through the server's API after the day (`product(reports)`
turns their reports into checks):

- orders-vs-deals: every closed-won deal has exactly one ERP order, open, in the deal's currency,
  and no ERP order lacks its deal;
- subscriptions-vs-deals: every new-business deal has exactly one subscription, none lacks its
  deal;
- entitlements-vs-subscriptions: each live subscription's account has an entitlement with its
  seats, suspended exactly while the subscription is past due;
- paid-invoices-vs-payments: every paid invoice is exactly one ERP payment in its currency, and
  back;
- revenue-schedules-vs-orders: every ERP order's revenue schedule sums to its total;
- overages-billed-once / overages-booked-once: every closed usage month over its plan is one
  invoice item in billing and one overage line in the ERP (a second one is a duplicate);
- ar-invoices-vs-billing-invoices: every billing invoice is one AR invoice with its number,
  currency and status;
- the same three for the EU entity in the cloud ERP (cloud-revenue-schedules-vs-orders,
  cloud-overages-booked-once, cloud-ar-invoices-vs-billing-invoices).

`reconcile(states, reports)` adds the checks a pairwise comparison of two lists cannot express,
from what each sandbox's `GET /sandbox/state` returned (keyed by system name):

- the order total is the deal amount plus the order's adjustments (a join of three lists);
- the order's recurring lines cost what the subscription bills per year, in the same currency
  (a sum of products, and cents against major units: JMESPath has no arithmetic beyond sum();
  and a subscription pairs with its current order only through the account's renewals);
- a payment's amount is the invoice's (cents against major units);
- the CRM account links the subscription and shows its status, and, once amended, the order's
  new total and the subscription's seats (three lists, and values worked out from two of them);
- renewals: the account's subscription points at the renewal order, which bills the same yearly
  amount, and the CRM account is marked renewed (a join through the account);
- the revenue checks of `engine.demo.revenue_checks` (AR amounts, prorated amendments and
  their schedule entries, overage rating, the CRM's payment status);
- no idempotency key wrote more than once in any system (the sandboxes' own bookkeeping, which
  no system API shows);
- the ERP migration: each deal's order is in its entity's ERP of record only (EU: the cloud ERP,
  US: the old ERP), and the cloud ERP's EU orders, amendments and payments take part in every
  check above, read in the old ERP's shape (`engine.demo.migration.cloud_records`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.demo.migration import CLOUD, cloud_records, entity_of
from engine.demo.revenue_checks import revenue

ONE_TIME_SKUS = frozenset({"SVC-ONBOARD", "API-OVERAGE"})  # not billed by the subscription
TOLERANCE = 0.005  # amounts are compared in major units, to the cent


@dataclass
class Reconciliation:
    """The verdict: `ok` when there is no problem; `checked` counts what was compared."""

    checked: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def check(self, what: str, condition: bool, problem: str) -> bool:
        self.checked[what] += 1
        if not condition:
            self.problems.append(problem)
        return condition

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": dict(self.checked), "problems": list(self.problems)}


@dataclass(frozen=True)
class _Index:
    """The records of the four systems, indexed the way the checks look them up."""

    accounts: dict[str, Any]
    won: list[Any]
    orders: dict[str, list[Any]]  # external_id -> ERP sales orders
    adjustments: dict[str, list[Any]]  # sales order id -> adjustments
    payments: dict[str, list[Any]]  # external_id (billing invoice) -> ERP payments
    subscriptions: dict[str, list[Any]]  # metadata.order_id -> subscriptions
    subscriptions_by_id: dict[str, Any]
    invoices: list[Any]


def _group(records: list[Any], key: Any) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = defaultdict(list)
    for record in records:
        groups[key(record)].append(record)
    return groups


def index(states: Mapping[str, Mapping[str, Any]]) -> _Index:
    crm, erp = states["crm"]["data"], states["erp"]["data"]
    billing = states["billing"]["data"]
    cloud = cloud_records(states)  # the EU entity's, in the old ERP's shape
    return _Index(
        accounts={a["Id"]: a for a in crm["accounts"]},
        won=[o for o in crm["opportunities"] if o["StageName"] == "Closed Won"],
        orders=_group(erp["sales_orders"] + cloud["sales_orders"], lambda o: o["external_id"]),
        adjustments=_group(erp["adjustments"] + cloud["adjustments"],
                           lambda a: a["sales_order_id"]),
        payments=_group(erp["payments"] + cloud["payments"], lambda p: p.get("external_id")),
        subscriptions=_group(billing["subscriptions"], lambda s: s["metadata"].get("order_id")),
        subscriptions_by_id={s["id"]: s for s in billing["subscriptions"]},
        invoices=billing["invoices"],
    )


def reconcile(
    states: Mapping[str, Mapping[str, Any]], reports: Sequence[Mapping[str, Any]] = ()
) -> Reconciliation:
    """The product's reports, then the extra checks on the systems' states (see the module
    docstring)."""
    result = Reconciliation()
    product(result, reports)
    data = index(states)
    for deal in data.won:
        if deal.get("Type") == "Renewal":
            _renewal(result, data, deal)
        else:
            _new_business(result, data, deal)
    _payments(result, data)
    revenue(result, states)
    _idempotency(result, states)
    if CLOUD in states:
        _erp_of_record(result, states, data)
    return result


def _erp_of_record(result: Reconciliation, states: Mapping[str, Mapping[str, Any]],
                   data: _Index) -> None:
    """Each deal's order is booked in its entity's ERP and only there: an EU order in the old
    ERP, or a US one in the cloud ERP's live EU entity, is a migration bug."""
    old = {o["external_id"] for o in states["erp"]["data"]["sales_orders"]}
    cloud = {o["external_id"] for o in cloud_records(states)["sales_orders"]}
    for deal in data.won:
        entity = entity_of(deal.get("CurrencyIsoCode") or "USD")
        where = (deal["Id"] in old, deal["Id"] in cloud)
        if where == (False, False):  # no order at all: the product's reconciliations say so
            continue
        expected = (False, True) if entity == "EU" else (True, False)
        result.check(
            "ERP of record",
            where == expected,
            f"{_label(deal)}: a {entity} order must be in the "
            f"{'cloud' if entity == 'EU' else 'old'} ERP only; old ERP has it: {where[0]}, "
            f"cloud ERP (EU entity) has it: {where[1]}",
        )


def product(result: Reconciliation, reports: Sequence[Mapping[str, Any]]) -> None:
    """Each Reconciliation report as checks: one per item paired or unpaired, a problem per
    mismatch (and one for a side that could not be read)."""
    for report in reports:
        what = f"reconciliation {report['name']}"
        if report.get("error"):
            result.check(what, False, f"{what}: {report['error']['message']}")
            continue
        result.checked[what] += report["matched"] + sum(report["counts"].values())
        for m in report["mismatches"]:
            detail = (f"{m['field']}: {m['left']!r} != {m['right']!r}"
                      if m["kind"] == "field" else m["kind"])
            result.problems.append(f"{what}: {m['key']}: {detail}")
        for item in report.get("unkeyed", []):
            result.problems.append(f"{what}: a {item['side']} item without a key")


def _label(deal: Mapping[str, Any]) -> str:
    return f"deal {deal['Id']} ({deal['Name']})"


def _new_business(result: Reconciliation, data: _Index, deal: Mapping[str, Any]) -> None:
    label = _label(deal)
    # exactly one order / subscription, the order open and in the deal's currency, and the
    # entitlement: the product's reconciliations check those
    order = _only(data.orders.get(deal["Id"], []))
    subscription = _only(data.subscriptions.get(deal["Id"], []))
    if order is not None:
        adjustments = data.adjustments.get(order["id"], [])
        adjusted = deal["Amount"] + sum(a["amount"] for a in adjustments)
        result.check(
            "order amount",
            _same(order["total"], adjusted),
            f"{label}: ERP order {order['id']} totals {order['total']} "
            f"{order['currency']}, the deal and its amendments {adjusted:.2f}",
        )
    if order is not None and subscription is not None:
        _agree(result, label, order, subscription)
    if subscription is not None:
        _account_links(result, data, deal, subscription)
    if order is not None and subscription is not None and data.adjustments.get(order["id"]):
        _amended_account(result, data, deal, order, subscription)


def _overage(adjustment: Mapping[str, Any]) -> bool:
    return any(li["sku"] == "API-OVERAGE" for li in adjustment["lines"])


def _only(found: list[Any]) -> Any:
    return found[0] if len(found) == 1 else None


def _seats(subscription: Mapping[str, Any]) -> int:
    return sum(
        i["quantity"] for i in subscription["items"]["data"] if i["price"]["product"] == "SEAT-STD"
    )


def _amended_account(
    result: Reconciliation,
    data: _Index,
    deal: Mapping[str, Any],
    order: Mapping[str, Any],
    subscription: Mapping[str, Any],
) -> None:
    """An amendment reached the CRM: the account shows the last adjustment, the order's new
    total and the subscription's seats."""
    account = data.accounts.get(deal["AccountId"], {})
    amendments = [a for a in data.adjustments[order["id"]] if not _overage(a)]
    if not amendments:
        return
    last = amendments[-1]
    # the contract value: the order total without usage overages (not contract, and after it)
    contract = order["total"] - sum(a["amount"] for a in data.adjustments[order["id"]]
                                    if _overage(a))
    shown = (
        account.get("Last_Amendment__c"),
        account.get("Contract_Value__c"),
        account.get("Seats__c"),
    )
    result.check(
        "CRM amendment",
        shown[0] == last["id"]
        and shown[1] is not None
        and _same(shown[1], contract)
        and shown[2] == _seats(subscription),
        f"{_label(deal)}: CRM account shows amendment {shown[0]}, contract value {shown[1]} "
        f"and {shown[2]} seats; ERP has {last['id']} and {contract:.2f}, billing "
        f"{_seats(subscription)} seats",
    )


def _agree(
    result: Reconciliation, label: str, order: Mapping[str, Any], subscription: Mapping[str, Any]
) -> None:
    """An ERP order and a subscription bill the same recurring amount in the same currency."""
    recurring = sum(li["amount"] for li in order["lines"] if li["sku"] not in ONE_TIME_SKUS)
    yearly = (
        sum(i["price"]["unit_amount"] * i["quantity"] for i in subscription["items"]["data"]) / 100
    )
    result.check(
        "subscription currency",
        subscription["currency"].upper() == order["currency"],
        f"{label}: subscription {subscription['id']} in "
        f"{subscription['currency'].upper()}, ERP order {order['id']} in "
        f"{order['currency']}",
    )
    result.check(
        "subscription amount",
        _same(recurring, yearly),
        f"{label}: ERP order {order['id']} bills {recurring:.2f} recurring, "
        f"subscription {subscription['id']} {yearly:.2f} per year",
    )


def _account_links(
    result: Reconciliation,
    data: _Index,
    deal: Mapping[str, Any],
    subscription: Mapping[str, Any],
) -> None:
    label = _label(deal)
    past_due = subscription["status"] == "past_due"
    account = data.accounts.get(deal["AccountId"], {})
    result.check(
        "CRM account link",
        account.get("Subscription_Id__c") == subscription["id"],
        f"{label}: CRM account links subscription "
        f"{account.get('Subscription_Id__c')}, billing has {subscription['id']}",
    )
    status = "Past Due" if past_due else "Active"
    result.check(
        "CRM account status",
        account.get("Status__c") == status,
        f"{label}: CRM account status is {account.get('Status__c')}, expected {status}",
    )


def _renewal(result: Reconciliation, data: _Index, deal: Mapping[str, Any]) -> None:
    label = _label(deal)
    order = _only(data.orders.get(deal["Id"], []))  # one, open: orders-vs-deals checks it
    account = data.accounts.get(deal["AccountId"], {})
    subscription = data.subscriptions_by_id.get(account.get("Subscription_Id__c") or "")
    linked = (
        subscription is not None and subscription["metadata"].get("current_order_id") == deal["Id"]
    )
    result.check(
        "renewed subscription",
        linked,
        f"{label}: the account's subscription does not point at the renewal",
    )
    result.check(
        "CRM renewal status",
        account.get("Renewal_Status__c") == "Renewed",
        f"{label}: CRM account renewal status is {account.get('Renewal_Status__c')}",
    )
    if order is not None and subscription is not None:
        _agree(result, label, order, subscription)


def _payments(result: Reconciliation, data: _Index) -> None:
    for invoice in data.invoices:
        if invoice["status"] != "paid":
            continue
        label = f"invoice {invoice['id']}"
        payment = _only(data.payments.get(invoice["id"], []))  # paid-invoices-vs-payments
        if payment is None:
            continue
        amount = invoice["amount_paid"] / 100
        result.check(
            "payment amount",
            _same(payment["amount"], amount),
            f"{label}: paid {amount:.2f} {invoice['currency'].upper()}, ERP payment "
            f"{payment['id']} is {payment['amount']} {payment['currency']}",
        )


def _idempotency(result: Reconciliation, states: Mapping[str, Mapping[str, Any]]) -> None:
    for system, state in sorted(states.items()):
        for key, entry in state.get("idempotency", {}).items():
            result.check(
                "idempotency keys",
                entry.get("writes", 0) <= 1,
                f"{system}: idempotency key {key[:16]}... wrote {entry['writes']} times",
            )


def _same(a: float, b: float) -> bool:
    return abs(float(a) - float(b)) < TOLERANCE
