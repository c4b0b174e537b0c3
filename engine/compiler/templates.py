"""Compile a sandboxed Jinja2 template once (``compile_template``); render it many times.

``source`` is the input document. ``native=True`` gives Jinja2's native types (``{{ "123" }}``
is the number 123, ``"00123"`` stays a string); ``native=False`` gives the text, as the plain
environment renders it. Undefined values are chainable: ``source.Account.Name`` with no
``Account`` is undefined, not an error.

A template is *missing* (``render`` returns ``None``, so a mapping's default applies) when it
uses an undefined value in an operation (``{{ source.Term__c | int * 12 }}`` without
``Term__c``: Jinja2 raises UndefinedError there), when it is one ``{{ expression }}`` whose
value is ``none`` or undefined, or, native, when it produces no output. Printing an undefined
value inside text prints nothing, as in Jinja2. Expression-only templates are compiled to Python
(``jinja_python``); the others are rendered by Jinja2. The sandbox is ``sandbox.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2 import TemplateSyntaxError, UndefinedError, nodes

from engine.compiler.budget import Budget, collect
from engine.compiler.jinja_python import compile_fast, emit_template_value
from engine.compiler.pycode import UNCOMPILABLE, Program, PythonBuilder
from engine.compiler.refs import (
    FieldPath,
    step_refs,
    template_root_paths,
    template_whole_names,
)
from engine.compiler.sandbox import (
    NATIVE_ENV,
    STRING_ENV,
    Sandbox,
    native_concat,
    native_value,
    string_value,
)
from engine.errors import ExpressionError, ExpressionSyntaxError

__all__ = ["Template", "compile_template", "emit_template"]

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
    paths: frozenset[FieldPath] = field(default=frozenset(), repr=False, compare=False)
    """The attribute chains it reads from its variables (``refs.template_root_paths``)."""
    whole: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    """The variables it uses whole (``refs.template_whole_names``)."""

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
    paths = template_root_paths(ast)
    refs = step_refs(paths)
    whole = template_whole_names(ast)
    fast = None if expression is None else compile_fast(expression, native)
    if fast is not None:
        return Template(text, native, refs, expression, fast, None, paths, whole)
    jinja = _compile_jinja(_template_env(native, expression), text)
    return Template(text, native, refs, expression, None, jinja, paths, whole)


def _template_env(native: bool, expression: nodes.Expr | None) -> Sandbox:
    return NATIVE_ENV if native or expression is not None else STRING_ENV


def _parse_template(text: str) -> nodes.Template:
    try:
        return NATIVE_ENV.parse(text)
    except TemplateSyntaxError as exc:
        raise _template_syntax_error(text, exc) from exc


def _compile_jinja(env: Sandbox, text: str) -> Any:
    try:
        return env.from_string(text)
    except TemplateSyntaxError as exc:  # also unknown filters and tests
        raise _template_syntax_error(text, exc) from exc
    except RecursionError as exc:
        raise ExpressionSyntaxError("template is nested too deeply", text=text,
                                    code="E_TEMPLATE") from exc


def _template_syntax_error(text: str, exc: TemplateSyntaxError) -> ExpressionSyntaxError:
    message = f"{exc.message} at line {exc.lineno} of template {text!r}"
    return ExpressionSyntaxError(message, text=text, code="E_TEMPLATE", lineno=exc.lineno)


def _expression_only(ast: nodes.Template) -> nodes.Expr | None:
    """The expression of a template that is exactly one ``{{ expression }}``, else None."""
    if len(ast.body) != 1 or not isinstance(ast.body[0], nodes.Output):
        return None
    outputs = ast.body[0].nodes
    if len(outputs) != 1 or isinstance(outputs[0], nodes.TemplateData):
        return None
    return outputs[0]




def _render(template: Any, context: Mapping[str, Any]) -> list[Any]:
    """Jinja2's output pieces, within the rendering budget (`budget.py`)."""
    with Budget():
        return collect(template.root_render_func(template.new_context(dict(context))))


def _render_one(template: Any, finish: Callable[[Any], Any], context: Mapping[str, Any]) -> Any:
    outputs = _render(template, context)
    return finish(outputs[0] if outputs else None)


def _render_native(template: Any, context: Mapping[str, Any]) -> Any:
    return native_concat(iter(_render(template, context)))


def _render_string(template: Any, context: Mapping[str, Any]) -> str:
    return "".join(_render(template, context))


def emit_template(b: PythonBuilder, template: Template, names: Mapping[str, str]) -> str | None:
    """Inline an expression-only template (see PythonBuilder); None if it is not compiled."""
    if template.python is None or template.expression is None:
        return None
    return emit_template_value(b, template.expression, template.native, names)

