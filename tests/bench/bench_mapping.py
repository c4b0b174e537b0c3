"""Map a ~40-field CRM opportunity to a ~25-field ERP sales order, three ways, in one run.

Run: python tests/bench/bench_mapping.py [SECONDS_PER_ROUND]

(a) hand-written Python dict code, (b) ``compile_rules`` (one generated function), (c) the naive
engine: ``jmespath.search(text, data)`` per expression field and a sandboxed Jinja2 native
template rendered per record for the template field; (c-expr) is (c) without that template
field, the "jmespath.search per field" row of BASELINES.md. Every way produces the same output
(checked before timing). Prints records/s (median of rounds) and the ratios b/a and b/c.
Targets: b >= 50% of a, b >= 5x c.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jmespath
from jinja2 import ChainableUndefined
from jinja2.nativetypes import NativeCodeGenerator, NativeTemplate, native_concat
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.compiler.codegen import MISSING, FieldRule, compile_rules

REGIONS = {"US": "NA", "CA": "NA", "MX": "NA", "DE": "EMEA", "FR": "EMEA", "GB": "EMEA"}
REGIONS_WITH_DEFAULT = {**REGIONS, "_default": "ROW"}
BILLING = {"Monthly": "recurring", "Annual": "recurring", "One-Time": "one_time"}
LINES = "OpportunityLineItems[].{sku: ProductCode, name: Name, quantity: Quantity, unit_price: UnitPrice, discount: Discount}"  # noqa: E501
TERM = "{{ source.Term__c | int * 12 }}"

RULES = [
    FieldRule(("order_id",), "expr", "Id", required=True),
    FieldRule(("external_ref",), "expr", "Name"),
    FieldRule(("customer", "account_id"), "expr", "AccountId", required=True),
    FieldRule(("customer", "name"), "expr", "Account.Name"),
    FieldRule(("customer", "industry"), "expr", "Account.Industry"),
    FieldRule(("customer", "bill_to", "street"), "expr", "Account.BillingStreet"),
    FieldRule(("customer", "bill_to", "city"), "expr", "Account.BillingCity"),
    FieldRule(("customer", "bill_to", "postal_code"), "expr", "Account.BillingPostalCode"),
    FieldRule(("customer", "bill_to", "state"), "expr", "Account.BillingState"),
    FieldRule(("customer", "bill_to", "country"), "expr", "Account.BillingCountry"),
    FieldRule(("currency",), "expr", "CurrencyIsoCode", default="USD"),
    FieldRule(("amount",), "expr", "Amount"),
    FieldRule(("close_date",), "expr", "CloseDate"),
    FieldRule(("po_number",), "expr", "PO_Number__c"),
    FieldRule(("payment_terms",), "expr", "Payment_Terms__c", default="NET30"),
    FieldRule(("lines",), "expr", LINES),
    FieldRule(("region",), "expr", "Account.BillingCountry", lookup=REGIONS_WITH_DEFAULT),
    FieldRule(("term_months",), "template", TERM),
    FieldRule(("billing",), "expr", "Billing_Frequency__c", lookup=BILLING),
    FieldRule(("status",), "const", "pending"),
    FieldRule(("source_system",), "const", "salesforce"),
    FieldRule(("owner_id",), "expr", "OwnerId"),
    FieldRule(("start_date",), "expr", "Contract_Start__c"),
    FieldRule(("discount_pct",), "expr", "Discount__c", default=0),
    FieldRule(("notes",), "expr", "Description"),
]


# -- the input ------------------------------------------------------------------------------


def opportunity(rng: random.Random, i: int) -> dict[str, Any]:
    """A Salesforce-like opportunity with its Account embedded and 3-5 line items."""
    country = rng.choice(["US", "CA", "DE", "FR", "GB", "JP", "BR"])
    account = {
        "Id": f"001{i:012d}",
        "Name": f"Acme {i}",
        "Type": "Customer",
        "Industry": rng.choice(["Manufacturing", "Retail", "Software"]),
        "BillingStreet": f"{i} Main St",
        "BillingCity": "Springfield",
        "BillingPostalCode": f"{10000 + i % 89999}",
        "BillingState": "IL" if country == "US" else None,
        "BillingCountry": country,
        "Phone": "+1 555 0100",
        "Website": "https://example.com",
        "AnnualRevenue": 1_000_000.0,
        "NumberOfEmployees": 250,
        "OwnerId": "005000000000001",
    }
    return {
        "Id": f"006{i:012d}",
        "Name": f"Renewal {i}",
        "AccountId": account["Id"],
        "Account": account,
        "StageName": "Closed Won",
        "CloseDate": "2026-11-25",
        "Amount": round(rng.uniform(1000, 90000), 2),
        "CurrencyIsoCode": rng.choice(["USD", "EUR", None]),
        "Probability": 100,
        "Type": "Renewal",
        "LeadSource": "Web",
        "IsClosed": True,
        "IsWon": True,
        "ForecastCategory": "Closed",
        "OwnerId": "005000000000001",
        "CreatedDate": "2026-10-01T10:00:00Z",
        "LastModifiedDate": "2026-11-25T10:00:00Z",
        "Pricebook2Id": "01s000000000001",
        "Term__c": str(rng.choice([1, 2, 3])),
        "Billing_Frequency__c": rng.choice(["Monthly", "Annual", "One-Time"]),
        "PO_Number__c": f"PO-{i}",
        "Description": "Renewal of the annual plan",
        "NextStep": "Invoice",
        "Contract_Start__c": "2026-12-01",
        "Payment_Terms__c": rng.choice(["NET30", "NET60", None]),
        "Discount__c": rng.choice([0, 5, 10, None]),
        "SyncedQuoteId": "0Q0000000000001",
        "OpportunityLineItems": [line(rng, i, n) for n in range(rng.randint(3, 5))],
    }


def line(rng: random.Random, i: int, n: int) -> dict[str, Any]:
    quantity = rng.randint(1, 20)
    price = round(rng.uniform(10, 900), 2)
    return {
        "Id": f"00k{i:010d}{n:02d}",
        "ProductCode": f"SKU-{n}",
        "Name": f"Product {n}",
        "Quantity": quantity,
        "UnitPrice": price,
        "TotalPrice": quantity * price,
        "Discount": rng.choice([None, 5.0]),
        "Product2Id": "01t000000000001",
        "ServiceDate": "2026-12-01",
    }


# -- (a) hand-written -----------------------------------------------------------------------


def _set(target: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        target[key] = value


def handwritten(src: dict[str, Any]) -> dict[str, Any]:
    """What a developer writes by hand for the same mapping (same output on the same input)."""
    account = src.get("Account")
    account = account if isinstance(account, dict) else {}
    out: dict[str, Any] = {"order_id": src["Id"]}
    _set(out, "external_ref", src.get("Name"))
    customer = {"account_id": src["AccountId"]}
    _set(customer, "name", account.get("Name"))
    _set(customer, "industry", account.get("Industry"))
    bill_to: dict[str, Any] = {}
    _set(bill_to, "street", account.get("BillingStreet"))
    _set(bill_to, "city", account.get("BillingCity"))
    _set(bill_to, "postal_code", account.get("BillingPostalCode"))
    _set(bill_to, "state", account.get("BillingState"))
    _set(bill_to, "country", account.get("BillingCountry"))
    if bill_to:
        customer["bill_to"] = bill_to
    out["customer"] = customer
    out["currency"] = src.get("CurrencyIsoCode") or "USD"
    _set(out, "amount", src.get("Amount"))
    _set(out, "close_date", src.get("CloseDate"))
    _set(out, "po_number", src.get("PO_Number__c"))
    out["payment_terms"] = src.get("Payment_Terms__c") or "NET30"
    out["lines"] = [
        {
            "sku": item.get("ProductCode"),
            "name": item.get("Name"),
            "quantity": item.get("Quantity"),
            "unit_price": item.get("UnitPrice"),
            "discount": item.get("Discount"),
        }
        for item in src.get("OpportunityLineItems") or ()
    ]
    country = account.get("BillingCountry")
    if country is not None:
        out["region"] = REGIONS.get(country, "ROW")
    out["term_months"] = int(src["Term__c"]) * 12
    _set(out, "billing", BILLING.get(src.get("Billing_Frequency__c")))
    out["status"] = "pending"
    out["source_system"] = "salesforce"
    _set(out, "owner_id", src.get("OwnerId"))
    _set(out, "start_date", src.get("Contract_Start__c"))
    discount = src.get("Discount__c")
    out["discount_pct"] = 0 if discount is None else discount
    _set(out, "notes", src.get("Description"))
    return out


# -- (c) the naive engine -------------------------------------------------------------------


class _NativeSandbox(ImmutableSandboxedEnvironment):
    code_generator_class = NativeCodeGenerator
    template_class = NativeTemplate
    concat = staticmethod(native_concat)


def naive_engine(rules: list[FieldRule]) -> Callable[[Any], dict[str, Any]]:
    """Evaluate each rule per record: jmespath.search(text) or Template.render."""
    env = _NativeSandbox(undefined=ChainableUndefined)
    templates = {r.source: env.from_string(r.source) for r in rules if r.kind == "template"}

    def apply(src: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for rule in rules:
            if rule.kind == "expr":
                value = jmespath.search(rule.source, src)
            elif rule.kind == "template":
                value = templates[rule.source].render(source=src)
            else:
                value = rule.source
            if rule.lookup is not None and value is not None:
                table = rule.lookup
                value = table.get(str(value), table.get("_default"))
            if value is None and rule.default is not MISSING:
                value = rule.default
            if value is not None:
                node = out
                for part in rule.target[:-1]:
                    node = node.setdefault(part, {})
                node[rule.target[-1]] = value
        return out

    return apply


# -- timing ---------------------------------------------------------------------------------


def records_per_second(fn: Callable[[Any], Any], records: list[Any], seconds: float) -> float:
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for record in records:
            fn(record)
        done += len(records)
    return done / elapsed


def measure(ways: dict[str, Callable[[Any], Any]], records: list[Any], seconds: float) -> dict:
    """Interleave the ways round by round (the machine is noisy); median per way."""
    rounds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(5):
        for name, fn in ways.items():
            rounds[name].append(records_per_second(fn, records, seconds))
    return {name: statistics.median(values) for name, values in rounds.items()}


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 0.4
    rng = random.Random(7)
    records = [opportunity(rng, i) for i in range(500)]
    compiled = compile_rules("opportunity-to-order", RULES)
    expr_rules = [rule for rule in RULES if rule.kind != "template"]
    ways = {
        "a  hand-written": handwritten,
        "b  compile_rules": compiled,
        "c  jmespath.search + Template.render": naive_engine(RULES),
        "c-expr  jmespath.search, no template": naive_engine(expr_rules),
    }
    for record in records:
        expected = handwritten(record)
        assert compiled(record) == expected, (compiled(record), expected)
        assert ways["c  jmespath.search + Template.render"](record) == expected
    rates = measure(ways, records, seconds)
    for name, rate in rates.items():
        print(f"{name:40s} {rate:>12,.0f} records/s")
    a, b = rates["a  hand-written"], rates["b  compile_rules"]
    c, c_expr = (
        rates["c  jmespath.search + Template.render"],
        rates["c-expr  jmespath.search, no template"],
    )
    print(f"b/a = {b / a:.2f}   (target >= 0.50)")
    print(f"b/c = {b / c:.1f}x  (target >= 5x)   b/c-expr = {b / c_expr:.1f}x")


if __name__ == "__main__":
    main()
