"""Jinja2 expression -> Python: the fast path of a template that is one ``{{ expression }}``.

Attribute and item access still go through the sandbox's checks; calls, ``range``, ``self``,
slices and similar raise ``_Unsupported`` and leave the template to Jinja2's own compiled code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import UndefinedError, nodes
from jinja2.nodes import EvalContext
from jinja2.runtime import Undefined
from jinja2.utils import _PassArg

from engine.compiler.pycode import UNCOMPILABLE, Program, PythonBuilder, scalar_repr
from engine.compiler.sandbox import (
    GUARDED_BINOPS,
    NATIVE_ENV,
    guarded_concat,
    native_value,
    string_value,
)

__all__ = ["compile_fast", "emit_template_value"]

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
        return NATIVE_ENV.undefined(obj=obj, name=attr) if value is _ABSENT else value
    return NATIVE_ENV.getattr(obj, attr)


def emit_jinja(b: PythonBuilder, node: nodes.Node, names: Mapping[str, str]) -> str:
    """A Python expression for a Jinja2 expression node (raises _Unsupported).

    ``names`` maps template variables to Python operands; other names are undefined.
    """
    emitter = _JINJA_EMITTERS.get(type(node))
    if emitter is None:
        raise _Unsupported(type(node).__name__)
    return emitter(b, node, names)


def _jinja_name(b: PythonBuilder, node: nodes.Name, names: Mapping[str, str]) -> str:
    if node.name in NATIVE_ENV.globals or node.name in _JINJA_SPECIAL_NAMES:
        raise _Unsupported(node.name)
    if node.name in names:
        return names[node.name]
    undefined = b.helper("_undefined", NATIVE_ENV.undefined)
    return f"{undefined}(name={str(node.name)!r})"


def _jinja_const(b: PythonBuilder, node: nodes.Const, names: Mapping[str, str]) -> str:
    literal = scalar_repr(node.value)
    return f"({literal})" if literal is not None else b.bind(node.value, "lit")


def _jinja_getattr(b: PythonBuilder, node: nodes.Getattr, names: Mapping[str, str]) -> str:
    obj, attr = emit_jinja(b, node.node, names), repr(str(node.attr))
    if node.attr in _DICT_ATTRIBUTES:
        return f"{b.helper('_getattr', NATIVE_ENV.getattr)}({obj}, {attr})"
    return f"{b.helper('_dict_attr', _sandboxed_dict_attr)}({obj}, {attr})"


def _jinja_getitem(b: PythonBuilder, node: nodes.Getitem, names: Mapping[str, str]) -> str:
    if isinstance(node.arg, nodes.Slice):
        raise _Unsupported("slice")
    obj, key = emit_jinja(b, node.node, names), emit_jinja(b, node.arg, names)
    return f"{b.helper('_getitem', NATIVE_ENV.getitem)}({obj}, {key})"


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
    table = NATIVE_ENV.filters if isinstance(node, nodes.Filter) else NATIVE_ENV.tests
    func: Any = table.get(node.name)
    if func is None:
        raise _Unsupported(node.name)
    pass_arg = _PassArg.from_obj(func)
    prefix = ""
    if pass_arg is _PassArg.environment:
        prefix = f"{b.helper('_env', NATIVE_ENV)}, "
    elif pass_arg is _PassArg.eval_context:  # an expression cannot change its eval context
        prefix = f"{b.bind(EvalContext(NATIVE_ENV), 'evalctx')}, "
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
    if operator in NATIVE_ENV.intercepted_binops:
        guarded = b.helper(f"_binop_{type(node).__name__}", GUARDED_BINOPS[operator])
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
    return f"{b.helper('_guarded_concat', guarded_concat)}(({items}))"


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



def _is_constant(expression: nodes.Expr) -> bool:
    """Jinja2 folds a constant output into text; leave those to Jinja2 to get its exact value."""
    try:
        expression.as_const(EvalContext(NATIVE_ENV))
    except Exception:  # nodes.Impossible, or the constant itself fails: not foldable
        return False
    return True


def compile_fast(expression: nodes.Expr, native: bool) -> Program | None:
    if _is_constant(expression):
        return None
    b = PythonBuilder()
    names = {}
    found = [expression] if isinstance(expression, nodes.Name) else []  # find_all skips the root
    found.extend(expression.find_all(nodes.Name))
    for name in sorted({node.name for node in found}):
        names[name] = local = b.fresh("n")
        absent = b.helper("_absent", _ABSENT)
        undefined = b.helper("_undefined", NATIVE_ENV.undefined)
        b.line(f"{local} = context.get({name!r}, {absent})")
        b.line(f"{local} = {undefined}(name={name!r}) if {local} is {absent} else {local}")
    try:
        b.line(f"return {emit_template_value(b, expression, native, names)}")
    except (_Unsupported, *UNCOMPILABLE):
        return None
    return b.program("template", "context", "<syncline template>")


_PLAIN_NATIVE = frozenset({int, float, bool, type(None)})
_PLAIN_STRING = frozenset({str})


def emit_template_value(
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
