"""The Jinja2 sandbox templates run in, and how a template's output becomes data.

Templates run in an immutable sandbox (no attribute starting with ``_``, no mutation of lists or
dicts, ``range`` capped at 100,000 items, ``*`` and ``**`` refuse results beyond 100,000 items /
10,000 bits, unsafe attribute access raises at once). Native output is data only: a non-data
result (a method, a Jinja object) is an ``ExpressionError``; tuples become lists; a string that
Python would read as a set, bytes or complex number stays a string.
"""

from __future__ import annotations

from ast import literal_eval, parse
from collections.abc import Callable, Iterable
from itertools import chain, islice
from typing import Any

from jinja2 import ChainableUndefined
from jinja2.exceptions import SecurityError
from jinja2.nativetypes import NativeCodeGenerator, NativeTemplate
from jinja2.runtime import Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.errors import ExpressionError

__all__ = ["GUARDED_BINOPS", "NATIVE_ENV", "STRING_ENV", "Sandbox", "native_concat",
           "native_value", "string_value"]

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


GUARDED_BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "*": _sandboxed_mul,
    "**": _sandboxed_pow,
}


class Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with size guards on ``*``/``**`` and unsafe access raising at once."""

    intercepted_binops = frozenset(GUARDED_BINOPS)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        return GUARDED_BINOPS[operator](left, right)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        kind = type(obj).__name__
        raise SecurityError(f"access to attribute {attribute!r} of {kind!r} object is unsafe")


class _NativeSandbox(Sandbox):
    """The sandbox with Jinja2's native-types code generator (outputs keep their Python type)."""

    code_generator_class = NativeCodeGenerator
    template_class = NativeTemplate


_ENV_OPTIONS: dict[str, Any] = {"undefined": ChainableUndefined, "autoescape": False}
NATIVE_ENV = _NativeSandbox(**_ENV_OPTIONS)
STRING_ENV = Sandbox(**_ENV_OPTIONS)


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


def native_concat(values: Iterable[Any]) -> Any:
    """jinja2.nativetypes.native_concat, returning data (see the module docstring)."""
    head = list(islice(values, 2))
    if not head:
        return None
    if len(head) == 1:
        return native_value(head[0])
    return _native_literal("".join([str(v) for v in chain(head, values)]))

