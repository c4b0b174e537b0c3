"""Play a `Scenario` against the running stack, the way the people and platforms of a B2B SaaS
company would: sales reps close deals in the CRM (its webhooks reach Syncline), customers change
and renew subscriptions and pay or fail invoices in billing, the ERP has an outage and a rate
limit storm, and an operator fixes master data and resumes the parked runs through the admin API;
at the end of the day the ERP has a planned maintenance window.

The day is a sequence of phases (engine/demo/phases/, `DAY`); `Driver` plays them one after the
other on a `Day` (engine/demo/day.py: the clients and what was created), waiting after each until
the systems settle.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from engine.demo.day import CRM_API, Day, DayLog, DemoError, Exception_, Fault
from engine.demo.phases import DAY, Phase
from engine.demo.phases.exceptions import erp_error, refresh_exceptions
from engine.demo.scenario import Scenario
from engine.demo.stack import Stack

__all__ = ["CRM_API", "DayLog", "DemoError", "Driver", "Exception_", "Fault", "erp_error"]


class Driver(Day):
    """Plays one scenario; `await driver.play()` returns the DayLog."""

    def __init__(
        self,
        stack: Stack,
        scenario: Scenario,
        on_phase: Callable[[str], None] = lambda name: None,
        resolve: bool = True,
        phases: Sequence[Phase] = DAY,
    ) -> None:
        super().__init__(stack, scenario, resolve)
        self.on_phase, self.phases = on_phase, tuple(phases)

    async def __aenter__(self) -> Driver:
        await super().__aenter__()
        return self

    async def play(self) -> DayLog:
        """Every phase (an operator's only when the day resolves exceptions), then the outcome
        of the exceptions."""
        for phase in self.phases:
            if self.resolve or not phase.operator:
                await self.phase(phase)
        await refresh_exceptions(self)
        return self.log

    async def phase(self, phase: Phase) -> None:
        self.on_phase(phase.name)
        started = time.perf_counter()
        await phase.play(self)
        await self.settle()
        self.log.phases.append((phase.name, time.perf_counter() - started))
