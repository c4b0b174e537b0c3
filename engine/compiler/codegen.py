"""A mapping's field rules compiled into ONE generated Python function.

The way Jinja2 compiles a template, ``compile_rules`` writes the source of a function that maps
one input document to the output dict, then compiles it once. JMESPath field paths are inlined
as chained ``.get`` calls guarded by ``isinstance(..., dict)``; everything else the function
needs (templates, interpreter fallbacks, lookup tables, defaults) is bound as keyword-only
default arguments. User text only ever appears in the source as ``repr()`` literals, and the
source is kept as ``__syncline_source__`` for debugging. Expressions and templates are checked
when the rules compile; the function is written and compiled by CPython on its first call
(validating a project never pays for it).

Per rule, in order:

1. evaluate: ``expr`` (JMESPath over the input), ``template`` (context ``{"source": input}``),
   or ``const``;
2. lookup: ``table[str(value)]``, else ``table["_default"]``, else missing. A missing value stays
   missing (``_default`` is for unknown values; ``default`` is for absent ones). Keys are
   compared as ``str(key)``, so a YAML ``1`` matches the value ``1`` and ``"1"``;
3. default: when the value is missing (``None`` counts as missing);
4. still missing: a problem if ``required``, else the field is omitted. A nested object whose
   fields are all omitted is omitted too.

Failing expressions and missing required fields are all collected, then raised together as one
``MappingError`` (codes ``EXPRESSION`` and ``REQUIRED``).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.compiler.expressions import Expression, compile_expression
from engine.compiler.jmespath_python import emit_getter, emit_jmespath, head_field
from engine.compiler.jmespath_runtime import EVALUATION_ERRORS
from engine.compiler.pycode import UNCOMPILABLE, Program, PythonBuilder, emit_constant
from engine.compiler.templates import Template, compile_template, emit_template
from engine.errors import ExpressionError, FieldProblem, MappingError

__all__ = ["MISSING", "FieldRule", "compile_rules"]


class _Missing:
    """The type of MISSING: "no value given", distinct from an explicit null."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()

_KINDS = ("expr", "template", "const")
_RULE_ERRORS = (ExpressionError, *EVALUATION_ERRORS)


@dataclass(frozen=True)
class FieldRule:
    """How one target field is produced."""

    target: tuple[str, ...]  #: the dotted target path, split: ("customer", "account_id")
    kind: str  #: "expr" | "template" | "const"
    source: Any  #: the expression text, the template text, or the constant
    default: Any = MISSING  #: used when the value is missing (None counts as missing)
    lookup: Mapping[str, Any] | None = None  #: value -> mapped value; "_default" for the rest
    required: bool = False  #: a missing value is a problem instead of an omitted field
    native: bool = True  #: templates: native types (False when the target field is a string)

    @property
    def path(self) -> str:
        return ".".join(self.target)


def compile_rules(name: str, rules: Sequence[FieldRule]) -> GeneratedMapping:
    """Compile ``rules`` into one function ``input -> output dict`` (raises MappingError).

    Expressions and templates are compiled here, so ExpressionSyntaxError propagates; two rules
    for one target, or a target that is both a field and an object, raise ValueError.
    """
    tree = _target_tree(rules)
    compiled = {id(rule): _compile_source(rule) for rule in _leaves(tree)}
    return GeneratedMapping(name, tree, compiled)


class GeneratedMapping:
    """A mapping's function ``input -> output dict``, generated and compiled on first call."""

    __slots__ = ("__syncline_mapping__", "_tree", "_compiled", "_function", "_source")

    def __init__(self, name: str, tree: Tree, compiled: dict[int, Expression | Template | None]):
        self.__syncline_mapping__ = name
        self._tree, self._compiled = tree, compiled
        self._function: Callable[[Any], dict[str, Any]] | None = None
        self._source = ""

    def __call__(self, src: Any) -> dict[str, Any]:
        return (self._function or self._load())(src)

    @property
    def __syncline_source__(self) -> str:
        """The generated Python source."""
        self.warm()
        return self._source

    def warm(self) -> None:
        """Generate and compile the function now rather than on the first call."""
        if self._function is None:
            self._load()

    def _load(self) -> Callable[[Any], dict[str, Any]]:
        try:
            program = _generate(self.__syncline_mapping__, self._tree, self._compiled, inline=True)
            function = program.function()
        except UNCOMPILABLE:  # nested deeper than CPython compiles: call the evaluators instead
            program = _generate(self.__syncline_mapping__, self._tree, self._compiled, inline=False)
            function = program.function()
        self._source, self._function = program.source, function
        return function


# A target tree: key -> FieldRule (a leaf) or a nested tree, in first-appearance order.
Tree = dict[str, Any]


def _target_tree(rules: Sequence[FieldRule]) -> Tree:
    root: Tree = {}
    for rule in rules:
        if not rule.target or rule.kind not in _KINDS:
            raise ValueError(f"invalid field rule {rule!r}")
        node = root
        for part in rule.target[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"target {rule.path!r} is inside field {part!r}, which is mapped")
        if rule.target[-1] in node:
            raise ValueError(f"target {rule.path!r} is mapped twice, or is also an object")
        node[rule.target[-1]] = rule
    return root


def _generate(
    name: str, tree: Tree, compiled: dict[int, Expression | Template | None], *, inline: bool
) -> Program:
    b = PythonBuilder()
    b.line("_problems = []")
    templates = [c for c in compiled.values() if isinstance(c, Template)]
    if any(not inline or template.python is None for template in templates):
        b.line("_ctx = {'source': src}")
    if inline:
        _hoist_shared_reads(b, [c for c in compiled.values() if isinstance(c, Expression)])
    b.line("_out = {}")
    _emit_object(b, tree, "_out", _Context(compiled, inline))
    with b.block("if _problems:"):
        error = b.helper("_mapping_error", MappingError)
        b.line(f"raise {error}({b.bind(name, 'name')}, _problems)")
    b.line("return _out")
    return b.program("mapping", "src", f"<syncline mapping {name!r}>")


@dataclass(frozen=True)
class _Context:
    compiled: dict[int, Expression | Template | None]  #: id(rule) -> its compiled source
    inline: bool  #: inline expressions and templates (False: call their evaluators)


def _compile_source(rule: FieldRule) -> Expression | Template | None:
    if rule.kind == "expr":
        return compile_expression(str(rule.source))
    if rule.kind == "template":
        return compile_template(str(rule.source), native=rule.native)
    return None


def _hoist_shared_reads(b: PythonBuilder, expressions: list[Expression]) -> None:
    """Read each top-level field that several expressions start with once (``Account``)."""
    inlined = [e for e in expressions if e.python is not None]
    if not inlined:
        return
    getter = emit_getter(b, "src")
    heads = Counter(head_field(e.ast) for e in inlined)
    deeper = Counter(head_field(e.ast) for e in inlined if e.ast["type"] != "field")
    for key, count in heads.items():
        if key is None or count < 2:
            continue
        value = b.fresh("p")
        b.line(f"{value} = {getter}({key!r})")
        b.remember(("field", "src", key), value)
        if deeper[key] >= 2:
            emit_getter(b, value)


def _leaves(tree: Tree) -> list[FieldRule]:
    found: list[FieldRule] = []
    for child in tree.values():
        found.extend(_leaves(child) if isinstance(child, dict) else [child])
    return found


def _emit_object(b: PythonBuilder, tree: Tree, target: str, ctx: _Context) -> None:
    for key, child in tree.items():
        if isinstance(child, FieldRule):
            _emit_rule(b, child, target, ctx)
            continue
        nested = b.fresh("obj")
        b.line(f"{nested} = {{}}")
        _emit_object(b, child, nested, ctx)
        with b.block(f"if {nested}:"):
            b.line(f"{target}[{str(key)!r}] = {nested}")


def _emit_rule(b: PythonBuilder, rule: FieldRule, target: str, ctx: _Context) -> None:
    b.line(f"# {rule.path!r}: {rule.kind} {rule.source!r}"[:160])
    if rule.kind == "const":
        _emit_const(b, rule, target)
        return
    errors = _RULE_ERRORS if rule.kind == "expr" else Exception  # templates: filters raise anything
    with b.block("try:"):
        value = _emit_evaluation(b, ctx.compiled[id(rule)], ctx.inline)
        _emit_store(b, rule, value, target)
    with b.block(f"except {b.helper(f'_{rule.kind}_errors', errors)} as _exc:"):
        problem = b.helper("_expression_problem", _expression_problem)
        b.line(f"_problems.append({problem}({rule.path!r}, {str(rule.source)!r}, _exc))")


def _emit_const(b: PythonBuilder, rule: FieldRule, target: str) -> None:
    value = emit_constant(b, rule.source)
    if rule.lookup is None and _present(rule.source):
        b.line(f"{target}[{str(rule.target[-1])!r}] = {value}")
        return
    local = b.fresh("v")
    b.line(f"{local} = {value}")
    _emit_store(b, rule, local, target)


def _emit_evaluation(b: PythonBuilder, compiled: Expression | Template | None, inline: bool) -> str:
    """Statements evaluating an expr or template rule; returns a local holding the value."""
    out = b.fresh("v")
    if isinstance(compiled, Template):
        value = emit_template(b, compiled, {"source": "src"}) if inline else None
        if value is None:
            value = f"{b.bind(compiled.render, 'template')}(_ctx)"
    elif isinstance(compiled, Expression):
        value = emit_jmespath(b, compiled.ast, "src") if inline and compiled.python else None
        if value is None:
            value = f"{b.bind(compiled.search, 'search')}(src)"
    else:
        raise TypeError(f"no evaluation for {compiled!r}")
    b.line(f"{out} = {value}")
    return out


def _emit_store(b: PythonBuilder, rule: FieldRule, value: str, target: str) -> None:
    """Lookup, default, then set ``target[key]`` or report the missing required field."""
    if rule.lookup is not None:
        value = _emit_lookup(b, rule.lookup, value)
    key = repr(str(rule.target[-1]))
    if _present(rule.default):
        with b.block(f"if {value} is None:"):
            b.line(f"{value} = {emit_constant(b, rule.default)}")
        b.line(f"{target}[{key}] = {value}")
        return
    with b.block(f"if {value} is not None:"):
        b.line(f"{target}[{key}] = {value}")
    if rule.required:
        with b.block("else:"):
            problem = b.helper("_required_problem", _required_problem)
            b.line(f"_problems.append({problem}({rule.path!r}))")


def _emit_lookup(b: PythonBuilder, lookup: Mapping[str, Any], value: str) -> str:
    table = {str(key): item for key, item in lookup.items()}
    fallback = table.pop("_default", None)
    out = b.fresh("v")
    found = f"{b.bind(table, 'lookup')}.get({b.helper('_str', str)}({value}), {b.bind(fallback)})"
    b.line(f"{out} = None if {value} is None else {found}")
    if any(isinstance(item, (list, dict)) for item in (*table.values(), fallback)):
        b.line(f"{out} = {b.helper('_deepcopy', copy.deepcopy)}({out})")
    return out


def _present(value: Any) -> bool:
    return value is not MISSING and value is not None


def _required_problem(path: str) -> FieldProblem:
    return FieldProblem(path=path, message="required field is missing", code="REQUIRED")


def _expression_problem(path: str, source: str, exc: BaseException) -> FieldProblem:
    if isinstance(exc, ExpressionError):
        message = str(exc)
    else:
        message = f"{source!r} failed: {type(exc).__name__}: {exc}"
    return FieldProblem(path=path, message=message, code="EXPRESSION")
