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
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from engine.compiler.compiled import CompiledRetry, CompiledSystem, CompiledTrigger
from engine.compiler.expressions import Expression, compile_expression
from engine.model import flow as m
from engine.model.base import suggest
from engine.model.triggers import PollTrigger, ScheduleTrigger

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
class CompiledPoll:
    """A read operation called every `every` seconds; see engine.runtime.polling."""

    system: CompiledSystem
    operation: str
    method: str
    path: str
    every: float
    items: Expression
    cursor_param: str | None
    cursor_next: Expression | None
    page_param: str | None
    page_next: Expression | None
    retry: CompiledRetry | None        # the System's RetryPolicy, else the project default

    @property
    def identity(self) -> str:
        """What the stored cursor belongs to: a different list, a different cursor."""
        return f"{self.system.name} {self.operation} {self.cursor_param}"


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
    return CompiledTrigger("poll", system=poll.system, poll=poll)


def compile_poll(compiler: FlowCompiler, spec: PollTrigger) -> CompiledPoll | None:
    """The polled operation must exist, read (GET/HEAD or `write: false`) and take no params."""
    loc: tuple[Any, ...] = ("trigger", "poll")
    items = compiler.expr(spec.items, (*loc, "items"))
    cursor = compiler.expr(spec.cursor.next, (*loc, "cursor", "next")) if spec.cursor else None
    page = compiler.expr(spec.pages.next, (*loc, "pages", "next")) if spec.pages else None
    system = compiler.system(spec.system, (*loc, "system"))
    if system is None or items is None:
        return None
    operation = system.operations.get(spec.operation)
    if operation is None:
        hint = suggest(spec.operation, sorted(system.operations))
        compiler.error((*loc, "operation"), "E_REF",
                       f"system '{system.name}' has no operation '{spec.operation}'{hint}")
        return None
    if operation.is_write:
        compiler.error((*loc, "operation"), "E_TRIGGER", f"poll operation '{spec.operation}' "
                       f"is a write ({operation.method}); a poll may only read (GET, or "
                       "`write: false` on the operation)")
        return None
    if "{" in operation.path:
        compiler.error((*loc, "operation"), "E_TRIGGER", f"poll operation '{spec.operation}' "
                       f"has path parameters ('{operation.path}'); a poll passes none")
        return None
    return CompiledPoll(
        system, spec.operation, operation.method, operation.path, spec.every, items,
        spec.cursor.param if spec.cursor else None, cursor,
        spec.pages.param if spec.pages else None, page, system.retry or compiler.default_retry,
    )
