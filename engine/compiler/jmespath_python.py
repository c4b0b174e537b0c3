"""JMESPath -> Python: write the statements that evaluate a jmespath AST node.

Each node kind has an emitter (``_JP_EMITTERS``); a kind without one (``&expref`` arguments,
a bare ``&a``) is evaluated by the jmespath interpreter for that node only (``is_fallback``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from engine.compiler.jmespath_runtime import (
    FUNCTIONS,
    INTERPRETER,
    comparable,
    equals,
    field_of_other,
    getter_of,
    is_number,
    jp_not,
    values_of,
)
from engine.compiler.pycode import PythonBuilder, emit_constant, helpers

__all__ = ["JPNode", "emit_getter", "emit_jmespath", "head_field", "is_fallback"]

JPNode = dict[str, Any]


def emit_jmespath(b: PythonBuilder, node: JPNode, value: str) -> str:
    """Write statements evaluating ``node`` against operand ``value``; return the result operand."""
    emitter = _JP_EMITTERS.get(node["type"], _emit_fallback)
    return emitter(b, node, value)


def _emit_fallback(b: PythonBuilder, node: JPNode, value: str) -> str:
    out = b.fresh()
    b.line(f"{out} = {b.bind(functools.partial(INTERPRETER.visit, node), 'fb')}({value})")
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
    isinstance_, dict_, _ = helpers(b)
    other = b.helper("_field", field_of_other)
    b.line(
        f"{out} = {value}.get({key!r}) if {isinstance_}({value}, {dict_})"
        f" else (None if {value} is None else {other}({value}, {key!r}))"
    )
    return out




def emit_getter(b: PythonBuilder, value: str) -> str:
    """Bind ``value``'s field getter once (``value.get`` for a dict) for several field reads."""
    known = b.known(("get", value))
    if known is not None:
        return known
    isinstance_, dict_, _ = helpers(b)
    getter = b.fresh("get")
    other = b.helper("_getter", getter_of)
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
    isinstance_, _, list_ = helpers(b)
    index = int(node["value"])
    len_ = b.helper("_len", len)
    fits = f"{len_}({value}) > {index}" if index >= 0 else f"{len_}({value}) >= {-index}"
    out = b.fresh()
    b.line(f"{out} = {value}[{index}] if {isinstance_}({value}, {list_}) and {fits} else None")
    return out


def _emit_slice(b: PythonBuilder, node: JPNode, value: str) -> str:
    isinstance_, _, list_ = helpers(b)
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
    isinstance_, _, list_ = helpers(b)
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
    isinstance_, _, list_ = helpers(b)
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
    isinstance_, dict_, _ = helpers(b)
    left, right = node["children"]
    base = emit_jmespath(b, left, value)
    values, out, item = b.fresh(), b.fresh(), b.fresh("e")
    other = b.helper("_values", values_of)
    b.line(f"{values} = {base}.values() if {isinstance_}({base}, {dict_}) else {other}({base})")
    with b.block(f"if {values} is not None:"):
        b.line(f"{out} = []")
        with b.block(f"for {item} in {values}:"):
            _emit_collect(b, right, out, item)
    with b.block("else:"):
        b.line(f"{out} = None")
    return out


def _emit_filter_projection(b: PythonBuilder, node: JPNode, value: str) -> str:
    isinstance_, _, list_ = helpers(b)
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
            if not isinstance(literal, bool) and not (is_number(literal) and literal in (0, 1)):
                return True
    return False


def _emit_comparator(b: PythonBuilder, node: JPNode, value: str) -> str:
    left = emit_jmespath(b, node["children"][0], value)
    right = emit_jmespath(b, node["children"][1], value)
    operator, out = node["value"], b.fresh()
    if operator in ("eq", "ne"):
        equal = f"{left} == {right}"
        if not _plain_equality(node["children"]):
            equal = f"{b.helper('_equals', equals)}({left}, {right})"
        b.line(f"{out} = {equal}" if operator == "eq" else f"{out} = not ({equal})")
        return out
    checks = [
        f"{b.helper('_comparable', comparable)}({operand})"
        for operand, child in zip((left, right), node["children"], strict=True)
        if child["type"] != "literal" or not comparable(child["value"])
    ]
    guard = f" if {' and '.join(checks)} else None" if checks else ""
    b.line(f"{out} = ({left} {_ORDERING[operator]} {right}){guard}")
    return out


def _emit_or(b: PythonBuilder, node: JPNode, value: str) -> str:
    return _emit_short_circuit(b, node, value, right_when_false=True)


def _emit_and(b: PythonBuilder, node: JPNode, value: str) -> str:
    return _emit_short_circuit(b, node, value, right_when_false=False)


def _emit_short_circuit(b: PythonBuilder, node: JPNode, value: str, right_when_false: bool) -> str:
    """`a || b` evaluates b only when a is false; `a && b` only when a is true."""
    left = emit_jmespath(b, node["children"][0], value)
    out = b.fresh()
    for branch, takes_right in ((f"if {_is_false_src(left)}:", right_when_false),
                                ("else:", not right_when_false)):
        with b.block(branch):
            right = emit_jmespath(b, node["children"][1], value) if takes_right else left
            b.line(f"{out} = {right}")
    return out


def _emit_not(b: PythonBuilder, node: JPNode, value: str) -> str:
    operand = emit_jmespath(b, node["children"][0], value)
    out = b.fresh()
    b.line(f"{out} = {b.helper('_not', jp_not)}({operand})")
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



def is_fallback(node: JPNode) -> bool:
    """Whether the interpreter, not generated Python, evaluates ``node`` as a whole."""
    return _JP_EMITTERS.get(node["type"], _emit_fallback) is _emit_fallback
