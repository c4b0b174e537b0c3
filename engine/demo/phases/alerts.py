"""The on-call check: once the deals have closed, the Alerts are evaluated; the deals the ERP
refused for master data are parked, so finance is told in its chat channel (once, however many
deals it is about) before the operator comes to fix them."""

from __future__ import annotations

import asyncio
import time

from engine.demo.day import SETTLE_TIMEOUT, Day, DemoError

CHANNEL = "finance"


async def alert_owners(day: Day) -> None:
    """Evaluate the Alerts now and wait until their notifications reached the chat."""
    if not day.scenario.exceptions:
        return
    alerting = day.stack.runtime.alerting
    await alerting.tick()  # what the server's alert loop does every few seconds
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while not await messages(day, CHANNEL):
        if time.monotonic() > deadline:
            raise DemoError(f"no alert reached the {CHANNEL} channel of the chat")
        await asyncio.sleep(0.1)
        await alerting.deliver()  # a retried notification is due again
    day.log.counts[f"alerts to {CHANNEL}"] = len(await messages(day, CHANNEL))


async def messages(day: Day, channel: str) -> list[dict[str, object]]:
    """What the chat's `channel` received so far."""
    listing = await day.call("chat", "GET", f"/channels/{channel}/messages")
    found: list[dict[str, object]] = listing["messages"]
    return found
