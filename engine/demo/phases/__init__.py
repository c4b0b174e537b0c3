"""The phases of the demo's day, in the order they are played (`DAY`).

A phase is a name and an `async def play(day: Day) -> None` (engine/demo/day.py) acting as the
people and platforms of the company would; after it the driver waits until the systems settle.
To add one, write its function in a module here and put a `Phase` for it in `DAY`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from engine.demo.day import Day
from engine.demo.phases import (
    alerts,
    billing,
    changes,
    exceptions,
    maintenance,
    pipeline,
    revenue,
)


@dataclass(frozen=True)
class Phase:
    """One step of the day."""

    name: str  # as the progress line and the report show it
    play: Callable[[Day], Awaitable[None]]
    operator: bool = False  # an operator's work: skipped when the day leaves exceptions be


DAY: tuple[Phase, ...] = (
    Phase("accounts and pipeline", pipeline.create_pipeline),
    Phase("deals closing", pipeline.close_deals),
    Phase("owners alerted", alerts.alert_owners),
    Phase("operator resolves exceptions", exceptions.resolve_exceptions, operator=True),
    Phase("invoices paid and failed", billing.invoices),
    Phase("failed payments recovered", billing.recover_payments),
    Phase("half a year later (billing's clock)", revenue.half_year_later),
    Phase("mid-term amendments", changes.amend),
    Phase("usage month closed, overages billed", revenue.usage_month),
    Phase("renewals forecast in the CRM", revenue.renewal_forecast),
    Phase("accounts moved in the CRM", changes.move_accounts),
    Phase("renewals, ERP maintenance", maintenance.renew_in_maintenance),
)
