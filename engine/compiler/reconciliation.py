"""Compile a Reconciliation: two list reads (left and right), the key that pairs their items, the
compared fields as pairs of expressions, its schedule and what a mismatch does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.compiler.compiled import CompiledRetry, CompiledSystem
from engine.compiler.expressions import Expression, compile_expression
from engine.compiler.resolve import Registry
from engine.compiler.triggers import CompiledSchedule, ListRead, compile_list_read, compile_schedule
from engine.errors import ExpressionSyntaxError
from engine.loader import Document
from engine.model.reconciliation import Reconciliation, Side
from engine.source import Diagnostic, SourceLocation

Loc = tuple[Any, ...]


@dataclass(frozen=True)
class CompiledSide:
    read: ListRead
    key: Expression                    # over an item: what pairs it with the other side
    query: tuple[tuple[str, str], ...] = ()  # constant query parameters of every page


@dataclass(frozen=True)
class CompiledReconciliation:
    name: str
    version: int
    owner: str | None
    schedule: CompiledSchedule | None  # None: runs only when asked (`syncline reconcile`)
    left: CompiledSide
    right: CompiledSide
    compare: tuple[tuple[str, Expression, Expression], ...]  # (field name, left, right)
    emit: str | None                   # onMismatch: the event type emitted
    park: str | None                   # onMismatch: the reason code the result is parked with
    location: SourceLocation | None = None


@dataclass
class _Context:
    """Reports a Reconciliation's mistakes at their place in its document."""

    doc: Document
    registry: Registry
    systems: dict[tuple[str, int], CompiledSystem]
    default_retry: CompiledRetry | None
    report: Callable[[Diagnostic], None]
    failed: bool = False

    def error(self, loc: Loc, code: str, message: str) -> None:
        self.failed = True
        self.report(Diagnostic(self.doc.locate(("spec", *loc)), code, message))

    def expr(self, text: str, loc: Loc) -> Expression | None:
        try:
            return compile_expression(text)
        except ExpressionSyntaxError as exc:
            self.failed = True
            where = self.doc.locate_in(("spec", *loc), exc.offset)
            self.report(exc.at(where, f"invalid JMESPath '{text}': {exc.message}"))
            return None

    def system(self, ref: str, loc: Loc) -> CompiledSystem | None:
        found = self.registry.lookup("System", ref, self.doc.locate(("spec", *loc)),
                                     "reconciliation")
        compiled = self.systems.get((found.name, found.version)) if found else None
        self.failed = self.failed or compiled is None
        return compiled


def compile_reconciliation(
    resource: Reconciliation, doc: Document, registry: Registry,
    systems: dict[tuple[str, int], CompiledSystem], default_retry: CompiledRetry | None,
    report: Callable[[Diagnostic], None],
) -> CompiledReconciliation | None:
    """A Reconciliation with every expression compiled and its operations checked (reads)."""
    ctx = _Context(doc, registry, systems, default_retry, report)
    spec = resource.spec
    schedule = None
    if spec.schedule is not None:
        schedule = compile_schedule(
            spec.schedule, lambda loc, code, text: ctx.error(("schedule", *loc), code, text)
        )
    left, right = _side(ctx, spec.left, "left"), _side(ctx, spec.right, "right")
    compare = []
    for name, pair in spec.compare.items():
        if len(pair) != 2:
            ctx.error(("compare", name), "E_INVALID", f"compare '{name}' needs two expressions "
                      f"[left, right], got {len(pair)}")
            continue
        first, second = ctx.expr(pair[0], ("compare", name, 0)), ctx.expr(pair[1],
                                                                        ("compare", name, 1))
        if first is not None and second is not None:
            compare.append((name, first, second))
    if ctx.failed or left is None or right is None:
        return None
    mismatch = spec.on_mismatch
    return CompiledReconciliation(
        resource.name, resource.version, resource.metadata.owner, schedule, left, right,
        tuple(compare), mismatch.emit if mismatch else None, mismatch.park if mismatch else None,
        doc.locate(),
    )


def _side(ctx: _Context, side: Side, which: str) -> CompiledSide | None:
    key = ctx.expr(side.key, (which, "key"))
    read = compile_list_read(ctx, side.system, side.operation, side.items, side.pages, (which,))
    if read is None or key is None:
        return None
    return CompiledSide(read, key, tuple(sorted(side.query.items())))
