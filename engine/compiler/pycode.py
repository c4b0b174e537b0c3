"""Python source under construction, for the functions the compiler generates.

Expressions, templates and mappings are compiled to Python functions: a ``PythonBuilder`` writes
their source, a ``Program`` compiles it with CPython when it is first called.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["UNCOMPILABLE", "Program", "PythonBuilder", "emit_constant", "helpers", "scalar_repr"]




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


def scalar_repr(value: Any) -> str | None:
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
    literal = scalar_repr(value)
    if literal is not None:
        return f"({literal})"
    name = b.bind(value, "lit")
    if not isinstance(value, (list, dict)):
        return name
    out = b.fresh()
    b.line(f"{out} = {b.helper('_deepcopy', copy.deepcopy)}({name})")
    return out


def helpers(b: PythonBuilder) -> tuple[str, str, str]:
    return b.helper("_isinstance", isinstance), b.helper("_dict", dict), b.helper("_list", list)


# -- JMESPath -> Python ---------------------------------------------------------------------
