"""What compiling a Flow's parts shares: its located errors, compiled expressions, values and
templates (with the `steps.<id>` each reads), and its references to schemas, mappings, Systems and
RetryPolicies. `FlowCompiler` (flow.py) builds on it; calls.py and triggers.py use it too."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.compiler.compiled import (
    CompiledMapping,
    CompiledRetry,
    CompiledSchema,
    CompiledSystem,
    ConstValue,
    ExprValue,
    MapValue,
    TemplateValue,
    Value,
)
from engine.compiler.expressions import Expression, compile_expression
from engine.compiler.resolve import Registry
from engine.compiler.templates import Template, compile_template
from engine.errors import ExpressionSyntaxError
from engine.loader import Document
from engine.model import flow as m
from engine.source import Diagnostic, SourceLocation

Loc = tuple[Any, ...]


@dataclass
class FlowScope:
    """One Flow being compiled against the already compiled schemas, mappings, systems and
    policies; `failed` once an error was reported."""

    flow: m.Flow
    doc: Document
    registry: Registry
    schemas: dict[tuple[str, int], CompiledSchema]
    mappings: dict[tuple[str, int], CompiledMapping]
    systems: dict[tuple[str, int], CompiledSystem]
    retries: dict[tuple[str, int], CompiledRetry]
    default_retry: CompiledRetry | None
    report: Callable[[Diagnostic], None]
    failed: bool = False
    _refs: dict[str, set[str]] = field(default_factory=dict)
    _ref_locs: dict[str, dict[str, tuple[Loc, str]]] = field(default_factory=dict)
    _reads: list[tuple[Loc, Expression | Template]] = field(default_factory=list)  # E_FIELD

    def error(self, loc: Loc, code: str, message: str) -> None:
        self.failed = True
        self.report(Diagnostic(self.where(loc), code, message))

    def syntax_error(self, exc: ExpressionSyntaxError, loc: Loc, message: str) -> None:
        """Report an expression that does not compile, at the column its parser stopped at."""
        self.failed = True
        self.report(exc.at(self.doc.locate_in(("spec", *loc), exc.offset), message))

    def where(self, loc: Loc) -> SourceLocation:
        return self.doc.locate(("spec", *loc))

    # expressions ---------------------------------------------------------------------------
    def expr(self, text: str, loc: Loc, step: str | None = None) -> Expression | None:
        try:
            compiled = compile_expression(text)
        except ExpressionSyntaxError as exc:
            self.syntax_error(exc, loc, f"invalid JMESPath '{text}': {exc.message}")
            return None
        self._note_refs(compiled.step_refs, loc, step, text)
        self._reads.append((loc, compiled))
        return compiled

    def value(self, raw: Any, loc: Loc, step: str | None) -> Value | None:
        if isinstance(raw, str):
            compiled = self.expr(raw, loc, step)
            return ExprValue(compiled, compiled.step_refs) if compiled else None
        if isinstance(raw, m.TemplateValue):
            try:
                template = compile_template(raw.template)
            except ExpressionSyntaxError as exc:
                self.syntax_error(exc, loc + ("template",), f"invalid template: {exc.message}")
                return None
            self._note_refs(template.step_refs, loc, step, "")
            self._reads.append((loc + ("template",), template))
            return TemplateValue(template, template.step_refs)
        if isinstance(raw, m.ConstValue):
            return ConstValue(raw.const)
        mapping = self.mapping(raw.map, loc + ("map",))
        source = self.expr(raw.input, loc + ("input",), step)
        if mapping is None or source is None:
            return None
        return MapValue(mapping, source, source.step_refs)

    def values(self, raw: dict[str, Any], loc: Loc, step: str) -> dict[str, Value]:
        out = {k: self.value(v, loc + (k,), step) for k, v in raw.items()}
        return {k: v for k, v in out.items() if v is not None}

    def _note_refs(self, refs: frozenset[str], loc: Loc, step: str | None, text: str) -> None:
        if step is None:
            if refs:
                self.error(loc, "E_REF", f"steps.{sorted(refs)[0]} is not available here "
                           "(only data, event, run and env are)")
            return
        self._refs.setdefault(step, set()).update(refs)
        self._ref_locs.setdefault(step, {}).update({r: (loc, text) for r in refs})

    # references ----------------------------------------------------------------------------
    def mapping(self, ref: str, loc: Loc) -> CompiledMapping | None:
        found = self.registry.lookup("Mapping", ref, self.where(loc), "step")
        if found is None:
            self.failed = True
            return None
        compiled = self.mappings.get((found.name, found.version))
        self.failed = self.failed or compiled is None
        return compiled

    def schema(self, ref: str, loc: Loc) -> CompiledSchema | None:
        found = self.registry.lookup("Schema", ref, self.where(loc), "step")
        compiled = self.schemas.get((found.name, found.version)) if found else None
        self.failed = self.failed or compiled is None
        return compiled

    def system(self, ref: str, loc: Loc) -> CompiledSystem | None:
        found = self.registry.lookup("System", ref, self.where(loc), "flow")
        compiled = self.systems.get((found.name, found.version)) if found else None
        self.failed = self.failed or compiled is None
        return compiled

    def retry(self, ref: str, loc: Loc) -> CompiledRetry | None:
        found = self.registry.lookup("RetryPolicy", ref, self.where(loc), "step")
        compiled = self.retries.get((found.name, found.version)) if found else None
        self.failed = self.failed or compiled is None
        return compiled
