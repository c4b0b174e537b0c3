"""Compile a JMESPath expression once (``compile_expression``); evaluate it many times.

The expression is parsed with ``jmespath`` and its AST is compiled to Python source
(``jmespath_python``), so a field path runs as a few dict lookups instead of a walk of the tree
interpreter. Covered: fields, sub-expressions, indexes, slices, literals, ``@``, multi-select
lists and hashes, list/value/filter projections, flatten, comparators, ``&&``/``||``/``!``, pipes
and function calls without ``&expref`` arguments. Any other node (``sort_by(a, &b)``, a bare
``&a``) is evaluated by the jmespath interpreter for that node only. Results equal
``jmespath.search(text, data)``, except on purpose:

- unknown functions and wrong argument counts are compile errors (jmespath raises them when the
  call is evaluated);
- a list or object literal is copied on each evaluation, so callers may mutate results.

Functions: the jmespath built-ins (``length``, ``join``, ``to_string``, ``to_number``,
``not_null`` ...) plus those of ``jmespath_runtime``: ``lower(s)``, ``upper(s)`` (``null``
stays ``null``, so a mapping's ``default`` still applies), ``coalesce(a, b, ...)`` (the first
argument that is not ``null``) and ``round(n, digits)`` (half away from zero on the decimal
digits you see: ``round(`2.675`, `2`)`` is ``2.68``).

``paths`` lists the field paths an expression reads from its root document and ``step_refs``
the steps it reads as ``steps.<id>`` (``refs``). Templates are ``templates.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jmespath import exceptions as jp_exceptions
from jmespath.lexer import Lexer
from jmespath.parser import Parser

from engine.compiler.jmespath_python import JPNode, emit_jmespath, is_fallback
from engine.compiler.jmespath_runtime import EVALUATION_ERRORS, FUNCTIONS, INTERPRETER
from engine.compiler.pycode import UNCOMPILABLE, Program, PythonBuilder
from engine.compiler.refs import FieldPath, root_paths, step_refs
from engine.errors import ExpressionError, ExpressionSyntaxError

__all__ = ["MAX_EXPRESSION_CHARS", "MAX_EXPRESSION_DEPTH", "Expression", "compile_expression"]

MAX_EXPRESSION_CHARS = 10_000  #: longer expressions are refused before they are parsed
MAX_EXPRESSION_DEPTH = 100     #: levels of the parsed tree, literal values included


@dataclass(frozen=True)
class Expression:
    """A compiled JMESPath expression."""

    text: str  #: the expression as written
    step_refs: frozenset[str]  #: step ids read as ``steps.<id>`` from the root document
    paths: frozenset[FieldPath] = field(repr=False, compare=False)  #: root paths it reads
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
        return functools.partial(INTERPRETER.visit, self.ast)

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
    paths = root_paths(ast)
    refs = step_refs(paths)
    if is_fallback(ast):
        return Expression(text, refs, paths, ast, None)
    try:
        b = PythonBuilder()
        b.line(f"return {emit_jmespath(b, ast, 'data')}")
    except UNCOMPILABLE:
        return Expression(text, refs, paths, ast, None)
    program = b.program("expression", "data", "<syncline expression>")
    return Expression(text, refs, paths, ast, program)


def _parse_jmespath(text: str) -> JPNode:
    if len(text) > MAX_EXPRESSION_CHARS:
        message = f"expression is {len(text)} characters long; the limit is {MAX_EXPRESSION_CHARS}"
        raise ExpressionSyntaxError(message, text=text[:80], offset=0)
    try:
        parsed: JPNode = Parser().parse(text).parsed
    except RecursionError as exc:  # the parser recurses once per nesting level
        raise _too_deep(text) from exc
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
    if _depth(parsed) > MAX_EXPRESSION_DEPTH:
        raise _too_deep(text)
    return parsed


def _too_deep(text: str) -> ExpressionSyntaxError:
    message = f"expression nests deeper than {MAX_EXPRESSION_DEPTH} levels"
    return ExpressionSyntaxError(message, text=text, offset=0)


def _depth(root: Any) -> int:
    """How deep a parsed tree (or a literal's value) nests, counted without recursion."""
    deepest, stack = 0, [(root, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_EXPRESSION_DEPTH:
            break
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
    return deepest


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

