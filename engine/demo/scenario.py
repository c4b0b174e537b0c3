"""The scripted business day of `syncline demo`: who buys what, deterministically from a seed.

A `Scenario` is plain data: the accounts to create in the CRM, one new-business deal per account,
which subscriptions are amended or renewed, which invoices are paid or fail, and the master-data
problems the ERP will reject. The driver (`engine.demo.driver`) plays it against the sandbox
systems; nothing here does I/O.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

LIST_PRICES = {
    "PLAT-ENT": 24000,
    "PLAT-PRO": 12000,
    "SEAT-STD": 600,
    "SUPPORT-PREM": 5000,
    "SVC-ONBOARD": 3000,
    "ADDON-AI": 1800,
}
"""Yearly list prices in USD (SVC-ONBOARD once); other currencies apply `Market.fx`."""

INCLUDED_API_CALLS = {"PLAT-PRO": 100_000, "PLAT-ENT": 500_000}
"""API calls a month each plan includes (the billing sandbox's default `included_usage`)."""


@dataclass(frozen=True)
class Market:
    """A country the company sells in: its currency, exchange rate to USD and an address."""

    country: str
    currency: str
    fx: float
    city: str
    postal_code: str
    street: str


MARKETS = (
    Market("US", "USD", 1.0, "Austin", "78701", "100 Congress Ave"),
    Market("US", "USD", 1.0, "New York", "10001", "350 5th Ave"),
    Market("CA", "USD", 1.0, "Toronto", "M5H 2N2", "100 Queen St W"),
    Market("DE", "EUR", 0.92, "Berlin", "10115", "Invalidenstr. 116"),
    Market("FR", "EUR", 0.92, "Paris", "75002", "12 Rue de la Paix"),
    Market("NL", "EUR", 0.92, "Amsterdam", "1012 JS", "Dam 1"),
    Market("GB", "GBP", 0.79, "London", "EC2N 2DB", "1 Threadneedle St"),
)
EXCEPTION_MARKET = Market("AT", "EUR", 0.92, "Vienna", "1010", "Stephansplatz 1")
"""Austria: an EU country the ERP has no tax nexus for yet (UNKNOWN_TAX_NEXUS)."""

NAMES = (
    "Initech",
    "Globex",
    "Umbrella",
    "Hooli",
    "Vehement",
    "Massive Dynamic",
    "Soylent",
    "Stark",
    "Wayne",
    "Wonka",
    "Cyberdyne",
    "Tyrell",
    "Aperture",
    "Gringotts",
    "Oscorp",
)


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    unit_price: float

    def as_crm(self) -> dict[str, Any]:
        return {"ProductCode": self.sku, "Quantity": self.quantity, "UnitPrice": self.unit_price}


@dataclass(frozen=True)
class Deal:
    """One account and the new-business deal it closes."""

    key: str  # scenario-local id, e.g. "d0007"
    name: str
    market: Market
    lines: tuple[Line, ...]
    term_years: int
    parent: str | None = None  # key of the parent account's deal (account hierarchy)
    problem: str | None = None  # UNKNOWN_TAX_NEXUS | UNKNOWN_ITEM: the ERP will reject it

    def account(self) -> dict[str, Any]:
        m = self.market
        return {
            "Name": self.name,
            "BillingStreet": m.street,
            "BillingCity": m.city,
            "BillingPostalCode": m.postal_code,
            "BillingCountry": m.country,
            "CurrencyIsoCode": m.currency,
            "Type": "Customer",
        }

    def opportunity(
        self, account_id: str, close_date: str, kind: str = "New Business", **extra: Any
    ) -> dict[str, Any]:
        return {
            "AccountId": account_id,
            "Name": f"{self.name} - {kind}",
            "Type": kind,
            "StageName": "Negotiation",
            "CloseDate": close_date,
            "CurrencyIsoCode": self.market.currency,
            "Term__c": self.term_years,
            "OpportunityLineItems": [line.as_crm() for line in self.lines],
            **extra,
        }


@dataclass(frozen=True)
class Scenario:
    """The whole day: deals, then amendments, renewals and invoice outcomes by deal key."""

    seed: int
    deals: tuple[Deal, ...]
    amendments: dict[str, int] = field(default_factory=dict)  # deal key -> extra seats
    renewals: tuple[str, ...] = ()
    failed_payments: tuple[str, ...] = ()  # first attempt fails
    recovered: tuple[str, ...] = ()  # ... then paid
    unpaid: tuple[str, ...] = ()  # invoice left open
    usage: dict[str, int] = field(default_factory=dict)  # deal key -> API calls last month

    @property
    def exceptions(self) -> tuple[Deal, ...]:
        return tuple(d for d in self.deals if d.problem)


def build_scenario(events: int, seed: int = 7) -> Scenario:
    """`events` new-business deals (at least 4) and the day around them, from `seed`."""
    rng = random.Random(seed)
    count = max(4, events)
    deals = [_deal(rng, i) for i in range(count)]
    deals[count // 3] = _with_problem(deals[count // 3], "UNKNOWN_TAX_NEXUS")
    deals[2 * count // 3] = _with_problem(deals[2 * count // 3], "UNKNOWN_ITEM")
    deals = _link_parents(deals)
    healthy = [d.key for d in deals if d.problem is None]
    rng.shuffle(healthy)
    share = max(1, count // 10)
    amended, renewed = healthy[:share], healthy[share : 2 * share]
    # at least two failed payments: one is recovered, one stays failed (a suspended entitlement)
    failures = max(2, share)
    failed = healthy[2 * share : 2 * share + failures]
    unpaid_from = 2 * share + failures
    metered = healthy[: max(2, share)]  # half of them over their plan
    usage = {
        key: _usage(rng, next(d for d in deals if d.key == key), over=i % 2 == 0)
        for i, key in enumerate(metered)
    }
    return Scenario(
        seed=seed,
        usage=usage,
        deals=tuple(deals),
        amendments={key: rng.choice((5, 10, 15, 20)) for key in amended},
        renewals=tuple(renewed),
        failed_payments=tuple(failed),
        recovered=tuple(failed[: len(failed) // 2]),
        unpaid=tuple(healthy[unpaid_from : unpaid_from + max(1, share // 2)]),
    )


def _usage(rng: random.Random, deal: Deal, over: bool) -> int:
    """A month of API calls: over the deal's plan by up to 60,000, or within it."""
    included = sum(INCLUDED_API_CALLS.get(li.sku, 0) * li.quantity for li in deal.lines)
    return included + rng.randrange(1, 60_000) if over else rng.randrange(0, included)


def _deal(rng: random.Random, index: int) -> Deal:
    market = MARKETS[index % len(MARKETS)]
    platform = "PLAT-ENT" if rng.random() < 0.3 else "PLAT-PRO"
    lines = [
        Line(platform, 1, _price(platform, market)),
        Line("SEAT-STD", rng.randrange(5, 80), _price("SEAT-STD", market)),
    ]
    if rng.random() < 0.3:
        lines.append(Line("SUPPORT-PREM", 1, _price("SUPPORT-PREM", market)))
    if rng.random() < 0.4:
        lines.append(Line("SVC-ONBOARD", 1, _price("SVC-ONBOARD", market)))
    name = f"{NAMES[index % len(NAMES)]} {market.country} {index:04d}"
    return Deal(f"d{index:04d}", name, market, tuple(lines), rng.choice((1, 1, 1, 2, 3)))


def _price(sku: str, market: Market) -> float:
    return round(LIST_PRICES[sku] * market.fx, 2)


def _with_problem(deal: Deal, problem: str) -> Deal:
    if problem == "UNKNOWN_TAX_NEXUS":
        market = EXCEPTION_MARKET
        lines = tuple(Line(li.sku, li.quantity, _price(li.sku, market)) for li in deal.lines)
        return Deal(
            deal.key,
            deal.name.replace(deal.market.country, "AT", 1),
            market,
            lines,
            deal.term_years,
            problem=problem,
        )
    addon = Line("ADDON-AI", 1, _price("ADDON-AI", deal.market))
    return Deal(
        deal.key, deal.name, deal.market, (*deal.lines, addon), deal.term_years, problem=problem
    )


def _link_parents(deals: list[Deal]) -> list[Deal]:
    """Every 7th account is a subsidiary of an earlier account in the same country."""
    out = list(deals)
    for i in range(7, len(out), 7):
        parent = next(
            (
                d
                for d in reversed(out[:i])
                if d.market == out[i].market and d.parent is None and d.problem is None
            ),
            None,
        )
        if parent is not None and out[i].problem is None:
            d = out[i]
            out[i] = Deal(d.key, d.name, d.market, d.lines, d.term_years, parent=parent.key)
    return out
