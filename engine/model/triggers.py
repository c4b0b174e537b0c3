"""The timed and streamed triggers of a Flow: `schedule` (cron ticks), `poll` (a list operation
read on an interval) and `stream` (CloudEvents consumed from a NATS JetStream backbone). Their
meaning (a cron expression parses, the operation is a read, the System is a backbone) is checked
by the compiler, which can say where a mistake is."""

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


SUBJECT = r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$"            # NATS subject tokens
_SUBJECT_FILTER = r"^([A-Za-z0-9_\-]+|\*)(\.([A-Za-z0-9_\-]+|\*))*(\.>)?$|^>$"


class StreamTrigger(Model):
    system: Ref                        # a System with `nats`
    subject: str = Field(pattern=_SUBJECT_FILTER)   # may hold `*` and a final `>`
    ack_wait: Duration = Field(default=30.0, alias="ackWait", gt=0)  # then NATS redelivers

