"""Sales tax and VAT as the sandbox ERPs charge it: a rate per tax country, rounded half up to the
cent. The old ERP rounds each line's tax and adds them up; the cloud ERP taxes the order's net
total once. Both are legitimate and they disagree by a cent on some orders: the kind of
difference a shadow run of a new ERP exists to surface before cut-over."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal

DEFAULT_TAX_RATES: dict[str, float] = {
    "US": 0.070625,   # a combined state and local rate
    "CA": 0.13,       # Ontario HST
    "DE": 0.19, "FR": 0.20, "NL": 0.21, "IE": 0.23, "ES": 0.21, "IT": 0.22, "BE": 0.21,
    "GB": 0.20, "AT": 0.20,
}
"""Tax rate per tax country (a sandbox table, not tax advice); a missing country is untaxed."""

CENT = Decimal("0.01")


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _number(value: Decimal) -> float | int:
    return int(value) if value == value.to_integral_value() else float(value)


def tax_per_line(amounts: Iterable[float], rate: float) -> float | int:
    """Each line's tax rounded to the cent, then summed (the old ERP)."""
    r = Decimal(str(rate))
    return _number(sum((_cents(Decimal(str(a)) * r) for a in amounts), Decimal(0)))


def tax_on_total(amounts: Iterable[float], rate: float) -> float | int:
    """The net total's tax, rounded once (the cloud ERP)."""
    total = sum((Decimal(str(a)) for a in amounts), Decimal(0))
    return _number(_cents(total * Decimal(str(rate))))
