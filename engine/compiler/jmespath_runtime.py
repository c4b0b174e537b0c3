"""JMESPath semantics at run time: the functions expressions may call (jmespath's built-ins plus
``lower``, ``upper``, ``coalesce`` and ``round``), the interpreter for what is not compiled to
Python, and the helpers the generated code calls (JMESPath equality, truth, field access of
non-dicts)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from numbers import Number
from typing import Any

from jmespath import exceptions as jp_exceptions
from jmespath import functions as jp_functions
from jmespath.visitor import Options, TreeInterpreter

__all__ = ["EVALUATION_ERRORS", "FUNCTIONS", "INTERPRETER", "SynclineFunctions", "comparable",
           "equals", "field_of_other", "getter_of", "is_number", "jp_not", "values_of"]

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


# -- JMESPath functions ---------------------------------------------------------------------


class SynclineFunctions(jp_functions.Functions):  # type: ignore[misc]  # jmespath is untyped
    """jmespath's built-in functions plus lower, upper, coalesce and round."""

    @jp_functions.signature({"types": ["string", "null"]})  # type: ignore[untyped-decorator]
    def _func_lower(self, text: str | None) -> str | None:
        return None if text is None else text.lower()

    @jp_functions.signature({"types": ["string", "null"]})  # type: ignore[untyped-decorator]
    def _func_upper(self, text: str | None) -> str | None:
        return None if text is None else text.upper()

    @jp_functions.signature({"types": [], "variadic": True})  # type: ignore[untyped-decorator]
    def _func_coalesce(self, *values: Any) -> Any:
        return next((value for value in values if value is not None), None)

    @jp_functions.signature({"types": ["number", "null"]}, {"types": ["number"]})  # type: ignore[untyped-decorator]
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
INTERPRETER = TreeInterpreter(Options(custom_functions=FUNCTIONS))


# -- JMESPath semantics the generated code calls --------------------------------------------


def field_of_other(value: Any, key: str) -> Any:
    """A field of a non-dict, as jmespath does it: ``value.get(key)`` or null."""
    try:
        return value.get(key)
    except AttributeError:
        return None


def values_of(value: Any) -> Any:
    try:
        return value.values()
    except AttributeError:
        return None


def is_number(value: Any) -> bool:
    return isinstance(value, Number) and not isinstance(value, bool)


def comparable(value: Any) -> bool:
    return isinstance(value, str) or is_number(value)


def equals(left: Any, right: Any) -> bool:
    """JMESPath equality: Python's, except that true/false never equal 1/0."""
    if is_number(left) and left in (0, 1):
        if isinstance(right, bool):
            return False
    elif is_number(right) and right in (0, 1) and isinstance(left, bool):
        return False
    return bool(left == right)


def jp_not(value: Any) -> bool:
    if is_number(value) and value == 0:
        return False  # `!0` is false: 0 is not a false value in JMESPath
    return not value



def _null_get(key: str) -> None:
    return None


def getter_of(value: Any) -> Callable[[str], Any]:
    """The field getter of a non-dict (see emit_getter)."""
    return _null_get if value is None else functools.partial(field_of_other, value)

