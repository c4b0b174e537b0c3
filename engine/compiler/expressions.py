"""Compile JMESPath expressions and Jinja2 templates once; evaluate them many times.

JMESPath (``compile_expression``)
    The expression is parsed with ``jmespath`` and its AST is compiled to Python source, so a
    field path runs as a few dict lookups instead of a walk of the tree interpreter. Covered:
    fields, sub-expressions, indexes, slices, literals, ``@``, multi-select lists and hashes,
    list/value/filter projections, flatten, comparators, ``&&``/``||``/``!``, pipes and function
    calls without ``&expref`` arguments. Any other node (``sort_by(a, &b)``, a bare ``&a``) is
    evaluated by the jmespath interpreter for that node only. Results equal
    ``jmespath.search(text, data)``; the differences are listed below.

    Functions: the jmespath built-ins (``length``, ``join``, ``to_string``, ``to_number``,
    ``not_null`` ...) plus

    - ``lower(s)``, ``upper(s)``: case of a string; ``null`` stays ``null`` (a missing value
      stays missing, so a mapping's ``default`` still applies).
    - ``coalesce(a, b, ...)``: the first argument that is not ``null`` (the SQL name of
      jmespath's ``not_null``).
    - ``round(n, digits)``: rounds half away from zero on the decimal digits you see, as an
      accountant does (``round(`2.675`, `2`)`` is ``2.68``; Python's ``round`` gives 2.67).
      ``digits`` <= 0 gives an integer; ``null`` stays ``null``.

    ``step_refs`` names the steps an expression reads as ``steps.<id>`` from the root document,
    found by walking the AST (a ``steps`` field of some nested object is not a step).

Jinja2 (``compile_template``)
    Templates run in an immutable sandbox (no attribute starting with ``_``, no mutation of
    lists or dicts, ``range`` capped at 100,000 items, ``*`` and ``**`` refuse results beyond
    100,000 items / 10,000 bits, unsafe attribute access raises at once). ``source`` is the input
    document. ``native=True`` gives Jinja2's native types (``{{ "123" }}`` is the number 123,
    ``"00123"`` stays a string); ``native=False`` gives the text, as the plain environment renders
    it. Undefined values are chainable: ``source.Account.Name`` with no ``Account`` is undefined,
    not an error.

    A template is *missing* (``render`` returns ``None``, so a mapping's default applies) when
    it uses an undefined value in an operation (``{{ source.Term__c | int * 12 }}`` without
    ``Term__c``: Jinja2 raises UndefinedError there), when it is one ``{{ expression }}`` whose
    value is ``none`` or undefined, or, native, when it produces no output. Printing an undefined
    value inside text prints nothing, as in Jinja2. Expression-only templates are compiled to
    Python like JMESPath ones (attribute access still goes through the sandbox's checks); calls,
    ``range``, ``self`` and similar fall back to Jinja2's own compiled code.

Differences from the libraries, on purpose
    - Unknown functions and wrong argument counts are compile errors (jmespath raises them when
      the call is evaluated).
    - A list or object literal is copied on each evaluation, so callers may mutate results.
    - Native templates return data only: a non-data result (a method, a Jinja object) is an
      ``ExpressionError``; tuples become lists; a string that Python would read as a set,
      bytes or complex number stays a string.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
from ast import literal_eval, parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from itertools import chain, islice
from numbers import Number
from typing import Any

from jinja2 import ChainableUndefined, TemplateSyntaxError, UndefinedError, nodes
from jinja2.nativetypes import NativeCodeGenerator, NativeTemplate
from jinja2.nodes import EvalContext
from jinja2.runtime import Undefined, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import _PassArg
from jmespath import exceptions as jp_exceptions
from jmespath import functions as jp_functions
from jmespath.lexer import Lexer
from jmespath.parser import Parser
from jmespath.visitor import Options, TreeInterpreter

from engine.errors import ExpressionError, SynclineError

__all__ = [
    "EVALUATION_ERRORS",
    "Expression",
    "ExpressionSyntaxError",
    "PythonBuilder",
    "Template",
    "compile_expression",
    "compile_template",
    "emit_getter",
    "emit_jmespath",
    "emit_template",
    "head_field",
]

#: What evaluating a JMESPath expression can raise on real data (jmespath's own errors, and the
#: Python errors its interpreter lets through, e.g. TypeError for ``1 < 'a'``).
EVALUATION_ERRORS: tuple[type[BaseException], ...] = (
    jp_exceptions.JMESPathError,
    TypeError,
    ValueError,
    ArithmeticError,
    LookupError,
    RecursionError,
)


class ExpressionSyntaxError(SynclineError):
    """An expression or template does not compile; ``message`` says what and where.

    ``offset`` is the 0-based column in the text (JMESPath), ``lineno`` the 1-based line
    (templates); the caller adds the file location.
    """

    def __init__(
        self, message: str, *, text: str, offset: int | None = None, lineno: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.text = text
        self.offset = offset
        self.lineno = lineno


# -- JMESPath functions ---------------------------------------------------------------------


class SynclineFunctions(jp_functions.Functions):
    """jmespath's built-in functions plus lower, upper, coalesce and round."""

    @jp_functions.signature({"types": ["string", "null"]})
    def _func_lower(self, text: str | None) -> str | None:
        return None if text is None else text.lower()

    @jp_functions.signature({"types": ["string", "null"]})
    def _func_upper(self, text: str | None) -> str | None:
        return None if text is None else text.upper()

    @jp_functions.signature({"types": [], "variadic": True})
    def _func_coalesce(self, *values: Any) -> Any:
        return next((value for value in values if value is not None), None)

    @jp_functions.signature({"types": ["number", "null"]}, {"types": ["number"]})
    def _func_round(self, number: float | None, digits: float) -> float | None:
        if number is None:
            return None
        if digits != int(digits):
            raise jp_exceptions.JMESPathError(f"round() digits must be an integer, not {digits}")
        return _round_half_away(number, int(digits))


def _round_half_away(number: float, digits: int) -> float:
    if isinstance(number, int) and digits >= 0:
        return number
    try:
        exact = Decimal(repr(number) if isinstance(number, float) else number)
        rounded = exact.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    except InvalidOperation:  # inf, nan, or more digits than a float holds
        return number
    return int(rounded) if digits <= 0 else float(rounded)


FUNCTIONS = SynclineFunctions()
_INTERPRETER = TreeInterpreter(Options(custom_functions=FUNCTIONS))


# -- JMESPath semantics the generated code calls --------------------------------------------


def _field_of_other(value: Any, key: str) -> Any:
    """A field of a non-dict, as jmespath does it: ``value.get(key)`` or null."""
    try:
        return value.get(key)
    except AttributeError:
        return None


def _values_of(value: Any) -> Any:
    try:
        return value.values()
    except AttributeError:
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, Number) and not isinstance(value, bool)


def _comparable(value: Any) -> bool:
    return isinstance(value, str) or _is_number(value)


def _equals(left: Any, right: Any) -> bool:
    """JMESPath equality: Python's, except that true/false never equal 1/0."""
    if _is_number(left) and left in (0, 1):
        if isinstance(right, bool):
            return False
    elif _is_number(right) and right in (0, 1) and isinstance(left, bool):
        return False
    return left == right


def _not(value: Any) -> bool:
    if _is_number(value) and value == 0:
        return False  # `!0` is false: 0 is not a false value in JMESPath
    return not value


def _is_false_src(operand: str) -> str:
    """Python source testing JMESPath falseness ('', [], {}, null and false) of an operand."""
    return (
        f"({operand} is None or {operand} is False or {operand} == ''"
        f" or {operand} == [] or {operand} == {{}})"
    )


def _truth_src(node: JPNode, operand: str) -> str:
    """Python source testing JMESPath truth; comparisons and ``!`` give only booleans or null."""
    if node["type"] in ("comparator", "not_expression"):
        return operand
    return f"not {_is_false_src(operand)}"


# -- Generated code -------------------------------------------------------------------------


class PythonBuilder:
    """Python source under construction: indented lines, fresh names, bound objects.

    Bound objects (helpers, constants, fallbacks) become keyword-only default arguments of the
    generated function, so they load as fast locals and user text never becomes code: it only
    appears as ``repr()`` literals.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.bound: dict[str, Any] = {}
        self._indent = 1
        self._ids = itertools.count()
        self._scopes: list[dict[tuple[str, ...], str]] = [{}]

    def fresh(self, prefix: str = "t") -> str:
        """A new local name."""
        return f"_{prefix}{next(self._ids)}"

    def bind(self, value: Any, prefix: str = "k") -> str:
        """Bind an object under a new name and return the name."""
        name = self.fresh(prefix)
        self.bound[name] = value
        return name

    def helper(self, name: str, value: Any) -> str:
        """Bind a shared helper under a fixed name (``_isinstance``, ``_field`` ...)."""
        self.bound.setdefault(name, value)
        return name

    def line(self, text: str) -> None:
        self.lines.append("    " * self._indent + text)

    @contextmanager
    def block(self, header: str) -> Iterator[None]:
        """``with b.block("if x:"):`` writes the header and indents what is written inside.

        What is remembered inside the block is forgotten after it (it may not have run).
        """
        self.line(header)
        self._indent += 1
        self._scopes.append({})
        try:
            yield
        finally:
            self._indent -= 1
            self._scopes.pop()

    def remember(self, key: tuple[str, ...], name: str) -> None:
        """Note that local ``name`` holds ``key`` (a getter, a field read) from here on."""
        self._scopes[-1][key] = name

    def known(self, key: tuple[str, ...]) -> str | None:
        for scope in reversed(self._scopes):
            if key in scope:
                return scope[key]
        return None

    def source(self, name: str, params: str) -> str:
        bound = ", ".join(f"{key}={key}" for key in self.bound)
        signature = f"{params}, *, {bound}" if bound else params
        return f"def {name}({signature}):\n" + "\n".join(self.lines) + "\n"

    def program(self, name: str, params: str, filename: str) -> Program:
        """The function written so far, compiled by Python when it is first needed."""
        return Program(self.source(name, params), name, filename, self.bound)


class Program:
    """Generated source of one function and the objects it binds; compiled once, on first use.

    Compiling Python is most of the cost of compiling a project, and `syncline validate` or
    `plan` never evaluate anything: so the CPython compile waits until the function is called.
    """

    __slots__ = ("source", "_name", "_filename", "_bound", "_function")

    def __init__(self, source: str, name: str, filename: str, bound: dict[str, Any]) -> None:
        self.source, self._name, self._filename, self._bound = source, name, filename, bound
        self._function: Callable[..., Any] | None = None

    def function(self) -> Callable[..., Any]:
        """The compiled function; raises SyntaxError/RecursionError if CPython cannot compile it."""
        if self._function is None:
            namespace: dict[str, Any] = {"__builtins__": {}, **self._bound}
            code = compile(self.source, self._filename, "exec")
            exec(code, namespace)  # noqa: S102 - our own generated code
            self._function = namespace[self._name]
        return self._function


UNCOMPILABLE = (SyntaxError, RecursionError, MemoryError)  #: nested deeper than CPython compiles


def _scalar_repr(value: Any) -> str | None:
    """A Python literal for a JSON scalar, or None when the value must be bound instead."""
    if value is None or value is True or value is False:
        return repr(value)
    if isinstance(value, str):
        return repr(str(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return repr(int(value))
    if isinstance(value, float) and math.isfinite(value):
        return repr(float(value))
    return None


def emit_constant(b: PythonBuilder, value: Any) -> str:
    """An operand for a constant; lists and dicts are copied on each evaluation."""
    literal = _scalar_repr(value)
    if literal is not None:
        return f"({literal})"
    name = b.bind(value, "lit")
    if not isinstance(value, (list, dict)):
        return name
    out = b.fresh()
    b.line(f"{out} = {b.helper('_deepcopy', copy.deepcopy)}({name})")
    return out


def _helpers(b: PythonBuilder) -> tuple[str, str, str]:
    return b.helper("_isinstance", isinstance), b.helper("_dict", dict), b.helper("_list", list)


# -- JMESPath -> Python ---------------------------------------------------------------------

JPNode = dict[str, Any]


def emit_jmespath(b: PythonBuilder, node: JPNode, value: str) -> str:
    """Write statements evaluating ``node`` against operand ``value``; return the result operand."""
    emitter = _JP_EMITTERS.get(node["type"], _emit_fallback)
    return emitter(b, node, value)


def _emit_fallback(b: PythonBuilder, node: JPNode, value: str) -> str:
    out = b.fresh()
    b.line(f"{out} = {b.bind(functools.partial(_INTERPRETER.visit, node), 'fb')}({value})")
    return out


def _emit_field(b: PythonBuilder, node: JPNode, value: str) -> str:
    key = str(node["value"])
    known = b.known(("field", value, key))
    if known is not None:
        return known
    out, getter = b.fresh(), b.known(("get", value))
    if getter is not None:
        b.line(f"{out} = {getter}({key!r})")
        return out
    isinstance_, dict_, _ = _helpers(b)
    other = b.helper("_field", _field_of_other)
    b.line(
        f"{out} = {value}.get({key!r}) if {isinstance_}({value}, {dict_})"
        f" else (None if {value} is None else {other}({value}, {key!r}))"
    )
    return out


def _null_get(key: str) -> None:
    return None


def _getter_of(value: Any) -> Callable[[str], Any]:
    """The field getter of a non-dict (see emit_getter)."""
    return _null_get if value is None else functools.partial(_field_of_other, value)


def emit_getter(b: PythonBuilder, value: str) -> str:
    """Bind ``value``'s field getter once (``value.get`` for a dict) for several field reads."""
    known = b.known(("get", value))
    if known is not None:
        return known
    isinstance_, dict_, _ = _helpers(b)
    getter = b.fresh("get")
    other = b.helper("_getter", _getter_of)
    b.line(f"{getter} = {value}.get if {isinstance_}({value}, {dict_}) else {other}({value})")
    b.remember(("get", value), getter)
    return getter


def head_field(node: JPNode) -> str | None:
    """The field an expression reads first from its input (``a`` in ``a.b[0]``, ``a[].x``)."""
    while node["type"] in _LEFT_SPINE:
        node = node["children"][0]
    return str(node["value"]) if node["type"] == "field" else None


_LEFT_SPINE = frozenset(
    {"subexpression", "index_expression", "pipe", "projection", "flatten"}
    | {"filter_projection", "value_projection"}
)


def _input_reads(node: JPNode) -> int:
    """How many fields of its input ``node`` reads directly (``a == b && c`` reads three)."""
    kind = node["type"]
    if kind == "field":
        return 1
    if kind in _LEFT_SPINE or kind == "key_val_pair":
        return _input_reads(node["children"][0])
    if kind in _SAME_INPUT:
        return sum(_input_reads(child) for child in node["children"])
    return 0


_SAME_INPUT = frozenset(
    {"comparator", "and_expression", "or_expression", "not_expression", "function_expression"}
    | {"multi_select_list", "multi_select_dict"}
)


def _emit_getter_for(b: PythonBuilder, value: str, children: Iterable[JPNode]) -> None:
    """A getter for ``value`` when ``children`` read two or more of its fields."""
    if sum(_input_reads(child) for child in children) >= 2:
        emit_getter(b, value)


def _emit_chain(b: PythonBuilder, node: JPNode, value: str) -> str:
    for child in node["children"]:
        value = emit_jmespath(b, child, value)
    return value


def _emit_index(b: PythonBuilder, node: JPNode, value: str) -> str:
    isinstance_, _, list_ = _helpers(b)
    index = int(node["value"])
    len_ = b.helper("_len", len)
    fits = f"{len_}({value}) > {index}" if index >= 0 else f"{len_}({value}) >= {-index}"
    out = b.fresh()
    b.line(f"{out} = {value}[{index}] if {isinstance_}({value}, {list_}) and {fits} else None")
    return out


def _emit_slice(b: PythonBuilder, node: JPNode, value: str) -> str:
    isinstance_, _, list_ = _helpers(b)
    bounds = b.bind(slice(*node["children"]), "slice")
    out = b.fresh()
    b.line(f"{out} = {value}[{bounds}] if {isinstance_}({value}, {list_}) else None")
    return out


def _emit_literal(b: PythonBuilder, node: JPNode, value: str) -> str:
    literal = node["value"]
    if isinstance(literal, (list, dict)):
        return emit_constant(b, literal)
    return b.bind(literal, "lit")  # a name, so `is None` tests on it stay valid Python


def _emit_current(b: PythonBuilder, node: JPNode, value: str) -> str:
    return value


def _emit_flatten(b: PythonBuilder, node: JPNode, value: str) -> str:
    isinstance_, _, list_ = _helpers(b)
    base = emit_jmespath(b, node["children"][0], value)
    out, item = b.fresh(), b.fresh("e")
    with b.block(f"if {isinstance_}({base}, {list_}):"):
        b.line(f"{out} = []")
        with b.block(f"for {item} in {base}:"):
            with b.block(f"if {isinstance_}({item}, {list_}):"):
                b.line(f"{out}.extend({item})")
            with b.block("else:"):
                b.line(f"{out}.append({item})")
    with b.block("else:"):
        b.line(f"{out} = None")
    return out


def _emit_collect(b: PythonBuilder, node: JPNode, out: str, item: str) -> None:
    """The body of a projection: evaluate the right side on ``item``, keep non-null results."""
    result = emit_jmespath(b, node, item)
    with b.block(f"if {result} is not None:"):
        b.line(f"{out}.append({result})")


def _emit_projection(b: PythonBuilder, node: JPNode, value: str) -> str:
    isinstance_, _, list_ = _helpers(b)
    left, right = node["children"]
    base = emit_jmespath(b, left, value)
    out, item = b.fresh(), b.fresh("e")
    with b.block(f"if {isinstance_}({base}, {list_}):"):
        b.line(f"{out} = []")
        with b.block(f"for {item} in {base}:"):
            _emit_collect(b, right, out, item)
    with b.block("else:"):
        b.line(f"{out} = None")
    return out


def _emit_value_projection(b: PythonBuilder, node: JPNode, value: str) -> str:
    isinstance_, dict_, _ = _helpers(b)
    left, right = node["children"]
    base = emit_jmespath(b, left, value)
    values, out, item = b.fresh(), b.fresh(), b.fresh("e")
    other = b.helper("_values", _values_of)
    b.line(f"{values} = {base}.values() if {isinstance_}({base}, {dict_}) else {other}({base})")
    with b.block(f"if {values} is not None:"):
        b.line(f"{out} = []")
        with b.block(f"for {item} in {values}:"):
            _emit_collect(b, right, out, item)
    with b.block("else:"):
        b.line(f"{out} = None")
    return out


def _emit_filter_projection(b: PythonBuilder, node: JPNode, value: str) -> str:
    isinstance_, _, list_ = _helpers(b)
    left, right, condition = node["children"]
    base = emit_jmespath(b, left, value)
    out, item = b.fresh(), b.fresh("e")
    with b.block(f"if {isinstance_}({base}, {list_}):"):
        b.line(f"{out} = []")
        with b.block(f"for {item} in {base}:"):
            _emit_getter_for(b, item, (condition, right))
            test = emit_jmespath(b, condition, item)
            with b.block(f"if {_truth_src(condition, test)}:"):
                _emit_collect(b, right, out, item)
    with b.block("else:"):
        b.line(f"{out} = None")
    return out


_ORDERING = {"lt": "<", "gt": ">", "lte": "<=", "gte": ">="}


def _plain_equality(children: list[JPNode]) -> bool:
    """Python's == is JMESPath's when one side is a literal that is not a bool, 0 or 1."""
    for child in children:
        if child["type"] == "literal":
            literal = child["value"]
            if not isinstance(literal, bool) and not (_is_number(literal) and literal in (0, 1)):
                return True
    return False


def _emit_comparator(b: PythonBuilder, node: JPNode, value: str) -> str:
    left = emit_jmespath(b, node["children"][0], value)
    right = emit_jmespath(b, node["children"][1], value)
    operator, out = node["value"], b.fresh()
    if operator in ("eq", "ne"):
        equal = f"{left} == {right}"
        if not _plain_equality(node["children"]):
            equal = f"{b.helper('_equals', _equals)}({left}, {right})"
        b.line(f"{out} = {equal}" if operator == "eq" else f"{out} = not ({equal})")
        return out
    checks = [
        f"{b.helper('_comparable', _comparable)}({operand})"
        for operand, child in zip((left, right), node["children"], strict=True)
        if child["type"] != "literal" or not _comparable(child["value"])
    ]
    guard = f" if {' and '.join(checks)} else None" if checks else ""
    b.line(f"{out} = ({left} {_ORDERING[operator]} {right}){guard}")
    return out


def _emit_or(b: PythonBuilder, node: JPNode, value: str) -> str:
    left = emit_jmespath(b, node["children"][0], value)
    out = b.fresh()
    with b.block(f"if {_is_false_src(left)}:"):
        b.line(f"{out} = {emit_jmespath(b, node['children'][1], value)}")
    with b.block("else:"):
        b.line(f"{out} = {left}")
    return out


def _emit_and(b: PythonBuilder, node: JPNode, value: str) -> str:
    left = emit_jmespath(b, node["children"][0], value)
    out = b.fresh()
    with b.block(f"if {_is_false_src(left)}:"):
        b.line(f"{out} = {left}")
    with b.block("else:"):
        b.line(f"{out} = {emit_jmespath(b, node['children'][1], value)}")
    return out


def _emit_not(b: PythonBuilder, node: JPNode, value: str) -> str:
    operand = emit_jmespath(b, node["children"][0], value)
    out = b.fresh()
    b.line(f"{out} = {b.helper('_not', _not)}({operand})")
    return out


def _emit_multi_select(b: PythonBuilder, node: JPNode, value: str) -> str:
    out = b.fresh()
    with b.block(f"if {value} is None:"):
        b.line(f"{out} = None")
    with b.block("else:"):
        _emit_getter_for(b, value, node["children"])
        if node["type"] == "multi_select_list":
            items = [emit_jmespath(b, child, value) for child in node["children"]]
            b.line(f"{out} = [{', '.join(items)}]")
        else:
            pairs = [
                f"{str(pair['value'])!r}: {emit_jmespath(b, pair['children'][0], value)}"
                for pair in node["children"]
            ]
            b.line(f"{out} = {{{', '.join(pairs)}}}")
    return out


def _emit_function(b: PythonBuilder, node: JPNode, value: str) -> str:
    if any(child["type"] == "expref" for child in node["children"]):
        return _emit_fallback(b, node, value)
    args = [emit_jmespath(b, child, value) for child in node["children"]]
    call = b.helper("_call_function", FUNCTIONS.call_function)
    out = b.fresh()
    b.line(f"{out} = {call}({str(node['value'])!r}, [{', '.join(args)}])")
    return out


_JP_EMITTERS: dict[str, Callable[[PythonBuilder, JPNode, str], str]] = {
    "field": _emit_field,
    "subexpression": _emit_chain,
    "index_expression": _emit_chain,
    "pipe": _emit_chain,
    "index": _emit_index,
    "slice": _emit_slice,
    "literal": _emit_literal,
    "current": _emit_current,
    "identity": _emit_current,
    "flatten": _emit_flatten,
    "projection": _emit_projection,
    "value_projection": _emit_value_projection,
    "filter_projection": _emit_filter_projection,
    "comparator": _emit_comparator,
    "or_expression": _emit_or,
    "and_expression": _emit_and,
    "not_expression": _emit_not,
    "multi_select_list": _emit_multi_select,
    "multi_select_dict": _emit_multi_select,
    "function_expression": _emit_function,
}


# -- steps.<id> references ------------------------------------------------------------------

# What a node is evaluated against: the root document, the root's `steps` object, or anything else.
_ROOT, _STEPS, _OTHER = "root", "steps", "other"


def _refs(node: JPNode, against: str, found: set[str]) -> str:
    """Record step ids read by ``node``; return what its result is (root, steps or other)."""
    walker = _REF_WALKERS.get(node["type"], _refs_children)
    return walker(node, against, found)


def _refs_field(node: JPNode, against: str, found: set[str]) -> str:
    if against == _ROOT and node["value"] == "steps":
        return _STEPS
    if against == _STEPS:
        found.add(node["value"])
    return _OTHER


def _refs_chain(node: JPNode, against: str, found: set[str]) -> str:
    for child in node["children"]:
        against = _refs(child, against, found)
    return against


def _refs_projection(node: JPNode, against: str, found: set[str]) -> str:
    left, *per_element = node["children"]
    _refs(left, against, found)
    for child in per_element:
        _refs(child, _OTHER, found)
    return _OTHER


def _refs_current(node: JPNode, against: str, found: set[str]) -> str:
    return against


def _refs_expref(node: JPNode, against: str, found: set[str]) -> str:
    return _refs_children(node, _OTHER, found)


def _refs_children(node: JPNode, against: str, found: set[str]) -> str:
    for child in node.get("children", ()):
        if isinstance(child, dict):  # slice children are plain ints
            _refs(child, against, found)
    return _OTHER


_REF_WALKERS: dict[str, Callable[[JPNode, str, set[str]], str]] = {
    "field": _refs_field,
    "subexpression": _refs_chain,
    "index_expression": _refs_chain,
    "pipe": _refs_chain,
    "projection": _refs_projection,
    "value_projection": _refs_projection,
    "filter_projection": _refs_projection,
    "current": _refs_current,
    "identity": _refs_current,
    "expref": _refs_expref,
}


def jmespath_step_refs(ast: JPNode) -> frozenset[str]:
    """Step ids read as ``steps.<id>`` from the root document (``steps.a | steps.b`` -> {a})."""
    found: set[str] = set()
    _refs(ast, _ROOT, found)
    return frozenset(found)


# -- Expression -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Expression:
    """A compiled JMESPath expression."""

    text: str  #: the expression as written
    step_refs: frozenset[str]  #: step ids read as ``steps.<id>`` from the root document
    ast: JPNode = field(repr=False, compare=False)  #: jmespath's AST (for inlining)
    _program: Program | None = field(repr=False, compare=False)  #: None: the interpreter's

    @property
    def python(self) -> str | None:
        """Generated Python source, or None when the interpreter evaluates the expression."""
        return None if self._program is None else self._program.source

    @functools.cached_property
    def _evaluate(self) -> Callable[[Any], Any]:
        if self._program is not None:
            try:
                return self._program.function()
            except UNCOMPILABLE:
                pass
        return functools.partial(_INTERPRETER.visit, self.ast)

    def warm(self) -> None:
        """Compile the generated Python now rather than on the first `search`."""
        self._evaluate  # noqa: B018 - the cached_property compiles it

    def search(self, data: Any) -> Any:
        """Evaluate against ``data``; failures on real data raise ExpressionError."""
        try:
            return self._evaluate(data)
        except EVALUATION_ERRORS as exc:
            raise ExpressionError(f"expression {self.text!r} failed: {exc}") from exc


@functools.lru_cache(maxsize=16384)
def compile_expression(text: str) -> Expression:
    """Parse, check and compile a JMESPath expression; raise ExpressionSyntaxError if invalid.

    Expressions are immutable, so one text compiles once however many definitions use it.
    """
    ast = _parse_jmespath(text)
    _check_functions(text, ast)
    refs = jmespath_step_refs(ast)
    if _JP_EMITTERS.get(ast["type"], _emit_fallback) is _emit_fallback:
        return Expression(text, refs, ast, None)
    try:
        b = PythonBuilder()
        b.line(f"return {emit_jmespath(b, ast, 'data')}")
    except UNCOMPILABLE:
        return Expression(text, refs, ast, None)
    return Expression(text, refs, ast, b.program("expression", "data", "<syncline expression>"))


def _parse_jmespath(text: str) -> JPNode:
    try:
        return Parser().parse(text).parsed
    except jp_exceptions.EmptyExpressionError as exc:
        raise ExpressionSyntaxError("empty expression", text=text, offset=0) from exc
    except jp_exceptions.LexerError as exc:
        where = exc.lexer_position
        message = f"{exc.message} at column {where + 1} of {text!r}"
        raise ExpressionSyntaxError(message, text=text, offset=where) from exc
    except jp_exceptions.ParseError as exc:
        where = exc.lex_position
        what = "incomplete expression" if exc.token_type is None else exc.msg
        message = f"{what} at column {where + 1} of {text!r}"
        raise ExpressionSyntaxError(message, text=text, offset=where) from exc


def _check_functions(text: str, node: JPNode) -> None:
    """Unknown functions and wrong argument counts are definition errors, found at compile time."""
    if node["type"] == "function_expression":
        _check_call(text, node["value"], len(node["children"]))
    for child in node.get("children", ()):
        if isinstance(child, dict):
            _check_functions(text, child)


def _check_call(text: str, name: str, given: int) -> None:
    spec = FUNCTIONS.FUNCTION_TABLE.get(name)
    if spec is None:
        problem = f"unknown function {name}()"
    else:
        signature = spec["signature"]
        variadic = bool(signature) and signature[-1].get("variadic", False)
        if given == len(signature) or (variadic and given >= len(signature)):
            return
        count = len(signature)
        expected = f"{'at least ' if variadic else ''}{count} argument{'s' if count != 1 else ''}"
        problem = f"{name}() takes {expected}, got {given}"
    where = _function_offset(text, name)
    raise ExpressionSyntaxError(
        f"{problem} at column {where + 1} of {text!r}", text=text, offset=where
    )


def _function_offset(text: str, name: str) -> int:
    tokens = list(Lexer().tokenize(text))
    for token, following in zip(tokens, tokens[1:], strict=False):
        if token["value"] == name and following["type"] == "lparen":
            return int(token["start"])
    return 0


# -- Jinja2 sandbox -------------------------------------------------------------------------

_MAX_ITEMS = 100_000  # as jinja2.sandbox.MAX_RANGE
_MAX_POWER_BITS = 10_000
_NUMBERS = frozenset({int, float})


def _sandboxed_mul(left: Any, right: Any) -> Any:
    if type(left) in _NUMBERS and type(right) in _NUMBERS:
        return left * right
    for seq, times in ((left, right), (right, left)):
        repeats = isinstance(seq, (str, list, tuple)) and isinstance(times, int)
        if repeats and len(seq) * times > _MAX_ITEMS:
            raise SecurityError(f"'*' would build more than {_MAX_ITEMS} items")
    return left * right


def _sandboxed_pow(base: Any, exponent: Any) -> Any:
    integers = isinstance(base, int) and isinstance(exponent, int) and exponent > 0
    if integers and (abs(base).bit_length() - 1) * exponent > _MAX_POWER_BITS:
        raise SecurityError(f"'**' would build a number beyond {_MAX_POWER_BITS} bits")
    return base**exponent


_GUARDED_BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "*": _sandboxed_mul,
    "**": _sandboxed_pow,
}


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with size guards on ``*``/``**`` and unsafe access raising at once."""

    intercepted_binops = frozenset(_GUARDED_BINOPS)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        return _GUARDED_BINOPS[operator](left, right)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        kind = type(obj).__name__
        raise SecurityError(f"access to attribute {attribute!r} of {kind!r} object is unsafe")


class _NativeSandbox(_Sandbox):
    """The sandbox with Jinja2's native-types code generator (outputs keep their Python type)."""

    code_generator_class = NativeCodeGenerator
    template_class = NativeTemplate


_ENV_OPTIONS: dict[str, Any] = {"undefined": ChainableUndefined, "autoescape": False}
_NATIVE_ENV = _NativeSandbox(**_ENV_OPTIONS)
_STRING_ENV = _Sandbox(**_ENV_OPTIONS)


# -- Template results -----------------------------------------------------------------------

_SCALAR_TYPES = frozenset({str, int, float, bool, type(None)})
# A string literal_eval can read starts with one of these (digits, signs, quotes, brackets,
# True/False/None, string prefixes, or whitespace/comment/continuation it may skip).
_LITERAL_START = frozenset("0123456789.+-'\"[({TFNbBrRuUfF \t\n\r\f\v#\\")


def _as_data(value: Any) -> Any:
    """A template's value as JSON-like data: undefined -> None, tuples -> lists."""
    kind = type(value)
    if kind in _SCALAR_TYPES:
        return value
    if isinstance(value, Undefined):
        return None
    if kind is list or kind is tuple:
        return [_as_data(item) for item in value]
    if kind is dict:
        return {_data_key(key): _as_data(item) for key, item in value.items()}
    for scalar in (bool, str, int, float):  # subclasses such as Markup
        if isinstance(value, scalar):
            return scalar(value)
    raise ExpressionError(f"template produced a {kind.__name__} object, which is not data")


def _data_key(key: Any) -> Any:
    data = _as_data(key)
    if type(data) not in _SCALAR_TYPES:
        raise ExpressionError(f"template produced an object key of type {type(key).__name__}")
    return data


def _native_literal(text: str) -> Any:
    """Jinja2's native reading of a string (``"123"`` -> 123, ``"00123"`` stays), as data."""
    if not text or text[0] not in _LITERAL_START:
        return text
    try:
        value = literal_eval(parse(text, mode="eval"))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return text
    try:
        return _as_data(value)
    except ExpressionError:  # a set, bytes or complex number: keep the text
        return text


def native_value(raw: Any) -> Any:
    """The value of a native template whose output is one node."""
    if type(raw) is str:
        return _native_literal(raw)
    return _as_data(raw)


def string_value(raw: Any) -> str | None:
    """The value of a string template that is one ``{{ expression }}``: missing or text."""
    if raw is None or isinstance(raw, Undefined):
        return None
    return str(raw)


def _native_concat(values: Iterable[Any]) -> Any:
    """jinja2.nativetypes.native_concat, returning data (see the module docstring)."""
    head = list(islice(values, 2))
    if not head:
        return None
    if len(head) == 1:
        return native_value(head[0])
    return _native_literal("".join([str(v) for v in chain(head, values)]))


# -- Jinja2 expression -> Python ------------------------------------------------------------


class _Unsupported(Exception):
    """The expression uses something the Python fast path leaves to Jinja2."""


_JINJA_SPECIAL_NAMES = frozenset({"self", "loop", "caller", "varargs", "kwargs", "super"})
_DICT_ATTRIBUTES = frozenset(dir(dict))
_ABSENT = object()


def _sandboxed_dict_attr(obj: Any, attr: str) -> Any:
    """``obj.attr`` as the sandbox resolves it, fast for plain dicts.

    Only used for attribute names that are not attributes of ``dict`` itself, for which the
    sandbox's answer on a dict is the item, or undefined.
    """
    if type(obj) is dict:
        value = obj.get(attr, _ABSENT)
        return _NATIVE_ENV.undefined(obj=obj, name=attr) if value is _ABSENT else value
    return _NATIVE_ENV.getattr(obj, attr)


def emit_jinja(b: PythonBuilder, node: nodes.Node, names: Mapping[str, str]) -> str:
    """A Python expression for a Jinja2 expression node (raises _Unsupported).

    ``names`` maps template variables to Python operands; other names are undefined.
    """
    emitter = _JINJA_EMITTERS.get(type(node))
    if emitter is None:
        raise _Unsupported(type(node).__name__)
    return emitter(b, node, names)


def _jinja_name(b: PythonBuilder, node: nodes.Name, names: Mapping[str, str]) -> str:
    if node.name in _NATIVE_ENV.globals or node.name in _JINJA_SPECIAL_NAMES:
        raise _Unsupported(node.name)
    if node.name in names:
        return names[node.name]
    undefined = b.helper("_undefined", _NATIVE_ENV.undefined)
    return f"{undefined}(name={str(node.name)!r})"


def _jinja_const(b: PythonBuilder, node: nodes.Const, names: Mapping[str, str]) -> str:
    literal = _scalar_repr(node.value)
    return f"({literal})" if literal is not None else b.bind(node.value, "lit")


def _jinja_getattr(b: PythonBuilder, node: nodes.Getattr, names: Mapping[str, str]) -> str:
    obj, attr = emit_jinja(b, node.node, names), repr(str(node.attr))
    if node.attr in _DICT_ATTRIBUTES:
        return f"{b.helper('_getattr', _NATIVE_ENV.getattr)}({obj}, {attr})"
    return f"{b.helper('_dict_attr', _sandboxed_dict_attr)}({obj}, {attr})"


def _jinja_getitem(b: PythonBuilder, node: nodes.Getitem, names: Mapping[str, str]) -> str:
    if isinstance(node.arg, nodes.Slice):
        raise _Unsupported("slice")
    obj, key = emit_jinja(b, node.node, names), emit_jinja(b, node.arg, names)
    return f"{b.helper('_getitem', _NATIVE_ENV.getitem)}({obj}, {key})"


def _jinja_call_args(
    b: PythonBuilder, node: nodes.Filter | nodes.Test, names: Mapping[str, str]
) -> str:
    if node.dyn_args is not None or node.dyn_kwargs is not None or node.node is None:
        raise _Unsupported("dynamic arguments")
    args = [emit_jinja(b, node.node, names)] + [emit_jinja(b, arg, names) for arg in node.args]
    if node.kwargs:
        pairs = ", ".join(
            f"{str(kw.key)!r}: {emit_jinja(b, kw.value, names)}" for kw in node.kwargs
        )
        args.append(f"**{{{pairs}}}")
    return ", ".join(args)


def _jinja_filter_or_test(
    b: PythonBuilder, node: nodes.Filter | nodes.Test, names: Mapping[str, str]
) -> str:
    table = _NATIVE_ENV.filters if isinstance(node, nodes.Filter) else _NATIVE_ENV.tests
    func: Any = table.get(node.name)
    if func is None:
        raise _Unsupported(node.name)
    pass_arg = _PassArg.from_obj(func)
    prefix = ""
    if pass_arg is _PassArg.environment:
        prefix = f"{b.helper('_env', _NATIVE_ENV)}, "
    elif pass_arg is _PassArg.eval_context:  # an expression cannot change its eval context
        prefix = f"{b.bind(EvalContext(_NATIVE_ENV), 'evalctx')}, "
    elif pass_arg is not None:
        raise _Unsupported(node.name)
    return f"{b.bind(func, 'f')}({prefix}{_jinja_call_args(b, node, names)})"


_BINARY = {
    nodes.Add: "+",
    nodes.Sub: "-",
    nodes.Mul: "*",
    nodes.Div: "/",
    nodes.FloorDiv: "//",
    nodes.Pow: "**",
    nodes.Mod: "%",
    nodes.And: "and",
    nodes.Or: "or",
}


def _jinja_binary(b: PythonBuilder, node: nodes.BinExpr, names: Mapping[str, str]) -> str:
    operator = _BINARY[type(node)]
    left, right = emit_jinja(b, node.left, names), emit_jinja(b, node.right, names)
    if operator in _NATIVE_ENV.intercepted_binops:
        guarded = b.helper(f"_binop_{type(node).__name__}", _GUARDED_BINOPS[operator])
        return f"{guarded}({left}, {right})"
    return f"({left} {operator} {right})"


_UNARY = {nodes.Not: "not ", nodes.Neg: "-", nodes.Pos: "+"}


def _jinja_unary(b: PythonBuilder, node: nodes.UnaryExpr, names: Mapping[str, str]) -> str:
    return f"({_UNARY[type(node)]}{emit_jinja(b, node.node, names)})"


_COMPARE = {"eq": "==", "ne": "!=", "gt": ">", "gteq": ">=", "lt": "<", "lteq": "<="}
_COMPARE |= {"in": "in", "notin": "not in"}


def _jinja_compare(b: PythonBuilder, node: nodes.Compare, names: Mapping[str, str]) -> str:
    parts = [emit_jinja(b, node.expr, names)]
    for operand in node.ops:
        parts.append(f"{_COMPARE[operand.op]} {emit_jinja(b, operand.expr, names)}")
    return f"({' '.join(parts)})"


def _jinja_concat(b: PythonBuilder, node: nodes.Concat, names: Mapping[str, str]) -> str:
    items = "".join(f"{emit_jinja(b, item, names)}, " for item in node.nodes)
    return f"{b.helper('_str_join', str_join)}(({items}))"


def _jinja_condexpr(b: PythonBuilder, node: nodes.CondExpr, names: Mapping[str, str]) -> str:
    if node.expr2 is not None:
        otherwise = emit_jinja(b, node.expr2, names)
    else:
        message = (
            f"the inline if-expression on line {node.lineno} evaluated to false"
            " and no else section was defined."
        )
        otherwise = f"{b.helper('_cond_undefined', Undefined)}({message!r})"
    test, then = emit_jinja(b, node.test, names), emit_jinja(b, node.expr1, names)
    return f"({then} if {test} else {otherwise})"


def _jinja_list(b: PythonBuilder, node: nodes.List | nodes.Tuple, names: Mapping[str, str]) -> str:
    items = "".join(f"{emit_jinja(b, item, names)}, " for item in node.items)
    return f"[{items}]" if isinstance(node, nodes.List) else f"({items})"


def _jinja_dict(b: PythonBuilder, node: nodes.Dict, names: Mapping[str, str]) -> str:
    pairs = ", ".join(
        f"{emit_jinja(b, pair.key, names)}: {emit_jinja(b, pair.value, names)}"
        for pair in node.items
    )
    return f"{{{pairs}}}"


_JINJA_EMITTERS: dict[type, Callable[..., str]] = {
    nodes.Name: _jinja_name,
    nodes.Const: _jinja_const,
    nodes.Getattr: _jinja_getattr,
    nodes.Getitem: _jinja_getitem,
    nodes.Filter: _jinja_filter_or_test,
    nodes.Test: _jinja_filter_or_test,
    nodes.Compare: _jinja_compare,
    nodes.Concat: _jinja_concat,
    nodes.CondExpr: _jinja_condexpr,
    nodes.List: _jinja_list,
    nodes.Tuple: _jinja_list,
    nodes.Dict: _jinja_dict,
    **{kind: _jinja_binary for kind in _BINARY},
    **{kind: _jinja_unary for kind in _UNARY},
}


# -- Template -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """A compiled Jinja2 template; ``render`` returns its value, or None when missing."""

    text: str  #: the template as written
    native: bool  #: native Python types (True) or text (False)
    step_refs: frozenset[str]  #: step ids read as ``steps.<id>`` or ``steps['<id>']``
    expression: nodes.Expr | None = field(repr=False, compare=False)  #: the one {{ expression }}
    _program: Program | None = field(repr=False, compare=False)  #: the Python fast path
    _jinja: Any = field(repr=False, compare=False)  #: Jinja2's template, None until needed

    @property
    def python(self) -> str | None:
        """Generated Python for an expression-only template, else None (Jinja2 renders it)."""
        return None if self._program is None else self._program.source

    @functools.cached_property
    def _evaluate(self) -> Callable[[Mapping[str, Any]], Any]:
        if self._program is not None:
            try:
                return self._program.function()
            except UNCOMPILABLE:
                pass
        env = _template_env(self.native, self.expression)
        jinja = self._jinja or _compile_jinja(env, self.text)
        if self.expression is None:
            return functools.partial(_render_native if self.native else _render_string, jinja)
        finish = native_value if self.native else string_value
        return functools.partial(_render_one, jinja, finish)

    def warm(self) -> None:
        """Compile the generated Python (or Jinja2's) now rather than on the first `render`."""
        self._evaluate  # noqa: B018 - the cached_property compiles it

    def render(self, context: Mapping[str, Any]) -> Any:
        """Render with ``context`` (e.g. ``{"source": doc}``); failures raise ExpressionError."""
        try:
            return self._evaluate(context)
        except UndefinedError:  # a missing value used in arithmetic, a filter or a call
            return None
        except ExpressionError:
            raise
        except Exception as exc:  # filters and user data can raise anything; translate it
            raise ExpressionError(
                f"template {self.text!r} failed: {type(exc).__name__}: {exc}"
            ) from exc


@functools.lru_cache(maxsize=4096)
def compile_template(text: str, *, native: bool = True) -> Template:
    """Parse, check and compile a sandboxed template; raise ExpressionSyntaxError if invalid.

    An expression-only template that the Python fast path covers needs no Jinja2 compile: the
    fast path knows every filter and test it calls. Any other template is compiled by Jinja2
    here, which also checks its filters and tests.
    """
    ast = _parse_template(text)
    expression = _expression_only(ast)
    refs = _template_step_refs(ast)
    fast = None if expression is None else _compile_fast(expression, native)
    if fast is not None:
        return Template(text, native, refs, expression, fast, None)
    jinja = _compile_jinja(_template_env(native, expression), text)
    return Template(text, native, refs, expression, None, jinja)


def _template_env(native: bool, expression: nodes.Expr | None) -> _Sandbox:
    return _NATIVE_ENV if native or expression is not None else _STRING_ENV


def _parse_template(text: str) -> nodes.Template:
    try:
        return _NATIVE_ENV.parse(text)
    except TemplateSyntaxError as exc:
        raise _template_syntax_error(text, exc) from exc


def _compile_jinja(env: _Sandbox, text: str) -> Any:
    try:
        return env.from_string(text)
    except TemplateSyntaxError as exc:  # also unknown filters and tests
        raise _template_syntax_error(text, exc) from exc
    except RecursionError as exc:
        raise ExpressionSyntaxError("template is nested too deeply", text=text) from exc


def _template_syntax_error(text: str, exc: TemplateSyntaxError) -> ExpressionSyntaxError:
    message = f"{exc.message} at line {exc.lineno} of template {text!r}"
    return ExpressionSyntaxError(message, text=text, lineno=exc.lineno)


def _expression_only(ast: nodes.Template) -> nodes.Expr | None:
    """The expression of a template that is exactly one ``{{ expression }}``, else None."""
    if len(ast.body) != 1 or not isinstance(ast.body[0], nodes.Output):
        return None
    outputs = ast.body[0].nodes
    if len(outputs) != 1 or isinstance(outputs[0], nodes.TemplateData):
        return None
    return outputs[0]


def _is_constant(expression: nodes.Expr) -> bool:
    """Jinja2 folds a constant output into text; leave those to Jinja2 to get its exact value."""
    try:
        expression.as_const(EvalContext(_NATIVE_ENV))
    except Exception:  # nodes.Impossible, or the constant itself fails: not foldable
        return False
    return True


def _compile_fast(expression: nodes.Expr, native: bool) -> Program | None:
    if _is_constant(expression):
        return None
    b = PythonBuilder()
    names = {}
    found = [expression] if isinstance(expression, nodes.Name) else []  # find_all skips the root
    found.extend(expression.find_all(nodes.Name))
    for name in sorted({node.name for node in found}):
        names[name] = local = b.fresh("n")
        absent = b.helper("_absent", _ABSENT)
        undefined = b.helper("_undefined", _NATIVE_ENV.undefined)
        b.line(f"{local} = context.get({name!r}, {absent})")
        b.line(f"{local} = {undefined}(name={name!r}) if {local} is {absent} else {local}")
    try:
        b.line(f"return {_emit_template_value(b, expression, native, names)}")
    except (_Unsupported, *UNCOMPILABLE):
        return None
    return b.program("template", "context", "<syncline template>")


_PLAIN_NATIVE = frozenset({int, float, bool, type(None)})
_PLAIN_STRING = frozenset({str})


def _emit_template_value(
    b: PythonBuilder, expression: nodes.Expr, native: bool, names: Mapping[str, str]
) -> str:
    """Statements computing an expression-only template's value; None when it is missing."""
    raw, out = emit_jinja(b, expression, names), b.fresh()
    with b.block("try:"):
        b.line(f"{out} = {raw}")
    with b.block(f"except {b.helper('_UndefinedError', UndefinedError)}:"):
        b.line(f"{out} = None")
    plain = b.bind(_PLAIN_NATIVE if native else _PLAIN_STRING, "plain")
    finish = (
        b.helper("_native_value", native_value)
        if native
        else b.helper("_string_value", string_value)
    )
    with b.block(f"if {out}.__class__ not in {plain}:"):
        b.line(f"{out} = {finish}({out})")
    return out


def emit_template(b: PythonBuilder, template: Template, names: Mapping[str, str]) -> str | None:
    """Inline an expression-only template (see PythonBuilder); None if it is not compiled."""
    if template.python is None or template.expression is None:
        return None
    return _emit_template_value(b, template.expression, template.native, names)


def _render_one(template: Any, finish: Callable[[Any], Any], context: Mapping[str, Any]) -> Any:
    outputs = list(template.root_render_func(template.new_context(dict(context))))
    return finish(outputs[0] if outputs else None)


def _render_native(template: Any, context: Mapping[str, Any]) -> Any:
    return _native_concat(template.root_render_func(template.new_context(dict(context))))


def _render_string(template: Any, context: Mapping[str, Any]) -> str:
    return "".join(template.root_render_func(template.new_context(dict(context))))


def _template_step_refs(ast: nodes.Template) -> frozenset[str]:
    found: set[str] = set()
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(node, (nodes.Getattr, nodes.Getitem))
        if not (isinstance(node.node, nodes.Name) and node.node.name == "steps"):
            continue
        if isinstance(node, nodes.Getattr):
            found.add(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            found.add(node.arg.value)
    return frozenset(found)
