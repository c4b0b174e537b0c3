"""The timed triggers compiled: a `schedule` becomes a `CompiledSchedule` (a checked cron
expression in its time zone, able to name its ticks), a `poll` a `CompiledPoll` (a read
operation of a System with its item, cursor and page expressions compiled).

    schedule = compile_schedule(spec, report)     # report(loc, code, message) on a mistake
    schedule.latest(now)       # the last tick at or before `now` (epoch seconds), or None
    schedule.following(now)    # the first tick after `now`
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from engine.compiler.compiled import CompiledRetry, CompiledSystem, CompiledTrigger
from engine.compiler.expressions import Expression, compile_expression
from engine.model import flow as m
from engine.model.base import suggest
from engine.model.triggers import PollPages, PollTrigger, ScheduleTrigger

if TYPE_CHECKING:
    from engine.compiler.flow import FlowCompiler

TICK_KEY = compile_expression("data.tick")
Report = Callable[[tuple[Any, ...], str, str], None]


@dataclass(frozen=True)
class CompiledSchedule:
    """A 5-field cron expression read in `timezone` (standard semantics: a day matches when the
    day-of-month or the day-of-week field matches, if both are restricted)."""

    cron: str
    timezone: str

    def latest(self, now: float) -> float | None:
        """The last tick at or before `now` (None if the expression has none)."""
        # ticks fall on whole minutes: searching back from the next second includes `now` itself
        base = dt.datetime.fromtimestamp(int(now) + 1, ZoneInfo(self.timezone))
        try:
            return float(croniter(self.cron, base).get_prev(float))
        except CroniterBadDateError:
            return None

    def following(self, now: float) -> float | None:
        """The first tick strictly after `now` (None if the expression has none)."""
        base = dt.datetime.fromtimestamp(now, ZoneInfo(self.timezone))
        try:
            return float(croniter(self.cron, base).get_next(float))
        except CroniterBadDateError:
            return None


def tick_text(tick: float) -> str:
    """A tick as the idempotency key and `data.tick` of its run: ISO 8601 UTC."""
    return dt.datetime.fromtimestamp(tick, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def compile_schedule(spec: ScheduleTrigger, report: Report) -> CompiledSchedule | None:
    """Check the cron expression (5 fields, in range) and the time zone (IANA name)."""
    ok = True
    fields = spec.cron.split()
    if len(fields) != 5:
        report(("cron",), "E_TRIGGER", f"cron '{spec.cron}' has {len(fields)} fields; a schedule "
               "takes 5: minute hour day-of-month month day-of-week")
        ok = False
    else:
        try:
            croniter(spec.cron)
        except CroniterBadCronError as exc:
            report(("cron",), "E_TRIGGER", f"invalid cron '{spec.cron}': {exc}")
            ok = False
    try:
        ZoneInfo(spec.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        report(("timezone",), "E_TRIGGER",
               f"unknown time zone '{spec.timezone}' (an IANA name such as Europe/Berlin or UTC)")
        ok = False
    return CompiledSchedule(" ".join(fields), spec.timezone) if ok else None


@dataclass(frozen=True)
class ListRead:
    """A read operation of a System that answers a list, page after page (engine.runtime.pages):
    a poll's, or one side of a reconciliation's."""

    system: CompiledSystem
    operation: str
    method: str
    path: str
    items: Expression                  # over a response {status, headers, body}: the items
    page_param: str | None             # the query parameter carrying the next page's token
    page_next: Expression | None       # over a response: that token (null or "": the last page)
    retry: CompiledRetry | None        # the System's RetryPolicy, else the project default


@dataclass(frozen=True)
class CompiledPoll:
    """A list read every `every` seconds from a stored cursor; see engine.runtime.polling."""

    read: ListRead
    every: float
    cursor_param: str | None
    cursor_next: Expression | None

    @property
    def identity(self) -> str:
        """What the stored cursor belongs to: a different list, a different cursor."""
        return f"{self.read.system.name} {self.read.operation} {self.cursor_param}"


class Context(Protocol):
    """What compiling a list read needs: FlowCompiler, or a Reconciliation's compiler."""

    default_retry: CompiledRetry | None

    def expr(self, text: str, loc: tuple[Any, ...]) -> Expression | None: ...

    def system(self, ref: str, loc: tuple[Any, ...]) -> CompiledSystem | None: ...

    def error(self, loc: tuple[Any, ...], code: str, message: str) -> None: ...


def compile_timed_trigger(compiler: FlowCompiler, trigger: m.Trigger) -> CompiledTrigger | None:
    """A flow's `schedule` or `poll` trigger, reporting mistakes at their place in the flow."""
    spec = compiler.flow.spec
    if trigger.schedule is not None:
        if spec.idempotency_key is not None:
            compiler.error(("idempotencyKey",), "E_TRIGGER", "a schedule's runs are keyed by "
                           "their tick time (data.tick); remove idempotencyKey")
        schedule = compile_schedule(
            trigger.schedule,
            lambda loc, code, text: compiler.error(("trigger", "schedule", *loc), code, text),
        )
        return None if schedule is None else CompiledTrigger("schedule", schedule=schedule)
    assert trigger.poll is not None
    poll = compile_poll(compiler, trigger.poll)
    if spec.idempotency_key is None:
        compiler.error(("trigger", "poll"), "E_TRIGGER", "a poll trigger needs the flow's "
                       "idempotencyKey (an item seen on two polls must start one run)")
    if poll is None:
        return None
    return CompiledTrigger("poll", system=poll.read.system, poll=poll)


def compile_poll(compiler: FlowCompiler, spec: PollTrigger) -> CompiledPoll | None:
    loc: tuple[Any, ...] = ("trigger", "poll")
    cursor = compiler.expr(spec.cursor.next, (*loc, "cursor", "next")) if spec.cursor else None
    read = compile_list_read(compiler, spec.system, spec.operation, spec.items, spec.pages, loc)
    if read is None:
        return None
    return CompiledPoll(read, spec.every, spec.cursor.param if spec.cursor else None, cursor)


def compile_list_read(ctx: Context, system_ref: str, name: str, items_text: str,
                      pages: PollPages | None, loc: tuple[Any, ...]) -> ListRead | None:
    """The operation must exist, read (GET/HEAD or `write: false`) and take no path params."""
    items = ctx.expr(items_text, (*loc, "items"))
    page = ctx.expr(pages.next, (*loc, "pages", "next")) if pages else None
    system = ctx.system(system_ref, (*loc, "system"))
    if system is None or items is None:
        return None
    operation = system.operations.get(name)
    if operation is None:
        hint = suggest(name, sorted(system.operations))
        ctx.error((*loc, "operation"), "E_REF",
                  f"system '{system.name}' has no operation '{name}'{hint}")
        return None
    if operation.is_write:
        ctx.error((*loc, "operation"), "E_TRIGGER", f"operation '{name}' is a write "
                  f"({operation.method}); a list read may only read (GET, or `write: false` on "
                  "the operation)")
        return None
    if "{" in operation.path:
        ctx.error((*loc, "operation"), "E_TRIGGER", f"operation '{name}' has path parameters "
                  f"('{operation.path}'); a list read passes none")
        return None
    return ListRead(system, name, operation.method, operation.path, items,
                    pages.param if pages else None, page, system.retry or ctx.default_retry)
