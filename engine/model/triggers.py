"""The timed triggers of a Flow: `schedule` (cron ticks) and `poll` (a list operation read on an
interval). Their meaning (a cron expression parses, the operation is a read) is checked by the
compiler, which can say where a mistake is."""

from __future__ import annotations

from pydantic import Field

from engine.model.base import Duration, Model, Ref


class ScheduleTrigger(Model):
    cron: str                          # 5 fields: minute hour day-of-month month day-of-week
    timezone: str = "UTC"              # an IANA zone the cron's fields are read in


class PollCursor(Model):
    param: str                         # query parameter carrying the stored cursor
    next: str                          # JMESPath over each page's response: the new cursor


class PollPages(Model):
    next: str                          # JMESPath over a response: the next page token (null: done)
    param: str                         # query parameter carrying that token


class PollTrigger(Model):
    system: Ref
    operation: str
    every: Duration = Field(gt=0)
    items: str = "body.items"          # JMESPath over a response: the list of items
    cursor: PollCursor | None = None
    pages: PollPages | None = None
