"""The Jinja2 sandbox templates run in, and how a template's output becomes data.

Templates run in an immutable sandbox (no attribute starting with ``_``, no mutation of lists or
dicts, ``range`` capped at 100,000 items, ``*`` and ``**`` refuse results beyond 100,000 items /
10,000 bits, widths beyond 100,000 refused in ``%``, ``str.format``, ``center``/``ljust``/
``rjust``/``zfill``/``expandtabs`` and the ``format``/``center``/``indent`` filters, unsafe
attribute access raises at once). Strings and lists that grow by composition (``~``, ``+``,
``replace``, ``join``, as methods or filters) are refused beyond 1 MiB (`MAX_VALUE_CHARS`), so a
loop doubling a string stops at the 20th step instead of allocating gigabytes. The guards raise
before anything is allocated, so Jinja2's constant folding at compile time cannot allocate
either. Native output is data only: a non-data
result (a method, a Jinja object) is an ``ExpressionError``; tuples become lists; a string that
Python would read as a set, bytes or complex number stays a string.
"""

from __future__ import annotations

import re
from ast import literal_eval, parse
from collections.abc import Callable, Iterable
from itertools import chain, islice
from string import Formatter
from typing import Any

from jinja2 import ChainableUndefined, nodes, pass_eval_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.filters import do_center, do_format, do_indent, do_join, do_replace
from jinja2.nativetypes import NativeCodeGenerator, NativeTemplate
from jinja2.runtime import Undefined, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.compiler.budget import MAX_OUTPUT_CHARS, budgeted_range
from engine.errors import ExpressionError

__all__ = ["GUARDED_BINOPS", "MAX_VALUE_CHARS", "NATIVE_ENV", "STRING_ENV", "Sandbox",
           "guarded_concat", "native_concat", "native_value", "string_value"]

# -- Jinja2 sandbox -------------------------------------------------------------------------

_MAX_ITEMS = 100_000  # as jinja2.sandbox.MAX_RANGE
_MAX_POWER_BITS = 10_000
MAX_VALUE_CHARS = MAX_OUTPUT_CHARS  #: the longest string (or list) composition may build
_NUMBERS = frozenset({int, float})
_SIZED = (str, list, tuple)


def _check_size(size: int, what: str) -> None:
    if size > MAX_VALUE_CHARS:
        raise SecurityError(f"{what} would build {size:,} characters or items, beyond the limit "
                            f"of {MAX_VALUE_CHARS:,}")


def _sandboxed_add(left: Any, right: Any) -> Any:
    if isinstance(left, _SIZED) and isinstance(right, _SIZED):
        _check_size(len(left) + len(right), "'+'")
    return left + right


def guarded_concat(values: Iterable[Any]) -> str:
    """``a ~ b ~ ...`` (Jinja2's str_join), refused beyond MAX_VALUE_CHARS."""
    result = str_join(values)  # each part is bounded, so the transient join is too
    _check_size(len(result), "'~'")
    return result


def _replace_size(text: str, old: Any, new: Any, count: Any = -1) -> int:
    if not isinstance(old, str) or not isinstance(new, str) or len(new) <= len(old):
        return len(text)
    found = len(text) + 1 if not old else text.count(old)
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * (len(new) - len(old))


def _join_size(separator: str, items: Any) -> int:
    if not isinstance(items, (list, tuple)):
        return 0  # an iterator: consumed by the join itself; its parts are bounded
    parts = sum(len(item) if isinstance(item, str) else 0 for item in items)
    return parts + len(separator) * max(len(items) - 1, 0)


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


def _check_width(width: Any, what: str = "a width") -> None:
    if isinstance(width, int) and width > _MAX_ITEMS:
        raise SecurityError(f"{what} of {width} is beyond the limit of {_MAX_ITEMS}")


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


def _check_number_text(digits: str) -> None:
    if len(digits) > 6 or int(digits) > _MAX_ITEMS:
        raise SecurityError(f"a width of {digits[:12]} is beyond the limit of {_MAX_ITEMS}")


def _check_percent_format(template: str) -> None:
    for match in _PERCENT_SPEC.finditer(template):
        for part in match.groups():
            if part == "*":
                raise SecurityError("'%*' widths are not allowed (write the width)")
            if part:
                _check_number_text(part)


def _check_str_format(template: str) -> None:
    for _, _, spec, _ in Formatter().parse(template):
        if spec and "{" in spec:
            raise SecurityError("a format spec may not hold a nested {field}")
        for digits in _DIGITS.findall(spec or ""):
            _check_number_text(digits)


def _sandboxed_mod(left: Any, right: Any) -> Any:
    if isinstance(left, str):
        _check_percent_format(left)
    return left % right


GUARDED_BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": _sandboxed_add,
    "*": _sandboxed_mul,
    "**": _sandboxed_pow,
    "%": _sandboxed_mod,
}

_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


def _check_call(function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse a str method call that would allocate beyond the limits (before it runs)."""
    target = getattr(function, "__wrapped__", function)  # jinja2 wraps str.format
    owner, name = getattr(target, "__self__", None), getattr(target, "__name__", "")
    if not isinstance(owner, str):
        return
    if name in _WIDTH_METHODS:
        for width in (*args[:1], *kwargs.values()):
            _check_width(width)
    elif name in ("format", "format_map"):
        _check_str_format(owner)
    elif name == "replace":
        _check_size(_replace_size(owner, *args[:3], *kwargs.values()), "replace()")
    elif name == "join" and args:
        _check_size(_join_size(owner, args[0]), "join()")


def _guarded_format(value: Any, *args: Any, **kwargs: Any) -> str:
    _check_percent_format(str(value))
    return do_format(value, *args, **kwargs)


def _guarded_center(value: Any, width: int = 80) -> str:
    _check_width(width)
    return do_center(value, width)


def _guarded_indent(value: Any, width: Any = 4, first: bool = False, blank: bool = False) -> str:
    _check_width(width if isinstance(width, int) else len(str(width)))
    return do_indent(value, width, first, blank)


@pass_eval_context
def _guarded_replace(eval_ctx: Any, value: Any, old: Any, new: Any, count: Any = None) -> str:
    if isinstance(value, str):
        _check_size(_replace_size(value, old, new, -1 if count is None else count), "replace")
    return do_replace(eval_ctx, value, old, new, count)


@pass_eval_context
def _guarded_join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
    if attribute is None and isinstance(d, str):
        _check_size(_join_size(d, value), "join")
    result: str = do_join(eval_ctx, value, d, attribute)
    _check_size(len(result), "join")
    return result


_GUARDED_FILTERS = {"format": _guarded_format, "center": _guarded_center,
                    "indent": _guarded_indent, "replace": _guarded_replace,
                    "join": _guarded_join}


class _GuardedConcat(CodeGenerator):
    """Jinja2's code generator with ``~`` going through `guarded_concat` (the sandbox intercepts
    binary operators, but ``~`` is not one)."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile or frame.eval_ctx.autoescape:
            super().visit_Concat(node, frame)  # never: the sandbox renders without autoescape
            return
        self.write("environment.guarded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _NativeGuardedConcat(_GuardedConcat, NativeCodeGenerator):
    """The native-types code generator with the guarded ``~``."""


class Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with size guards on ``*``/``**`` and unsafe access raising at once."""

    intercepted_binops = frozenset(GUARDED_BINOPS)
    code_generator_class = _GuardedConcat
    guarded_concat = staticmethod(guarded_concat)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters.update(_GUARDED_FILTERS)
        self.globals["range"] = budgeted_range

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _check_call(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        return GUARDED_BINOPS[operator](left, right)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        kind = type(obj).__name__
        raise SecurityError(f"access to attribute {attribute!r} of {kind!r} object is unsafe")


class _NativeSandbox(Sandbox):
    """The sandbox with Jinja2's native-types code generator (outputs keep their Python type)."""

    code_generator_class = _NativeGuardedConcat
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

