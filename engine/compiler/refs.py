"""What an expression reads from its root document: the field paths, found by walking its AST.

``root_paths`` lists every path read from the root (``steps.order.lines[0].sku`` reads
``("steps", "order", "lines", ITEM, "sku")``); a ``steps`` field of some nested object, or a
field read from a function's result, is not a root path. ``template_root_paths`` does the same
for a Jinja2 template's attribute chains. The compiler derives a step's implicit
dependencies (``step_refs``) and the field references it checks against schemas from them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jinja2 import nodes
from jmespath.lexer import Lexer

__all__ = ["ITEM", "FieldPath", "path_offset", "root_paths", "step_refs", "template_root_paths",
           "template_whole_names"]

ITEM = 0  #: a path segment meaning "each element of the array" (an index or a projection)
FieldPath = tuple[str | int, ...]
JPNode = dict[str, Any]
_Against = FieldPath | None  # what a node is evaluated against: a path from the root, or unknown


def root_paths(ast: JPNode) -> frozenset[FieldPath]:
    """Every field path the expression reads from its root document, prefixes included."""
    found: set[FieldPath] = set()
    _walk(ast, (), found)
    return frozenset(found)


def step_refs(paths: frozenset[FieldPath]) -> frozenset[str]:
    """Step ids read as ``steps.<id>`` from the root (``steps.a | steps.b`` reads only a)."""
    return frozenset(
        str(path[1]) for path in paths
        if len(path) >= 2 and path[0] == "steps" and isinstance(path[1], str)
    )


def _walk(node: JPNode, against: _Against, found: set[FieldPath]) -> _Against:
    """Record the root paths ``node`` reads; return the path of its result (None: unknown)."""
    walker = _WALKERS.get(node["type"], _walk_children)
    return walker(node, against, found)


def _walk_field(node: JPNode, against: _Against, found: set[FieldPath]) -> _Against:
    if against is None:
        return None
    path = (*against, str(node["value"]))
    found.add(path)
    return path


def _walk_chain(node: JPNode, against: _Against, found: set[FieldPath]) -> _Against:
    for child in node["children"]:
        against = _walk(child, against, found)
    return against


def _walk_index(node: JPNode, against: _Against, found: set[FieldPath]) -> _Against:
    return None if against is None else (*against, ITEM)


def _walk_same(node: JPNode, against: _Against, found: set[FieldPath]) -> _Against:
    """A node whose result is its input's elements as a list (a slice, a flatten)."""
    for child in node.get("children", ()):
        if isinstance(child, dict):
            against = _walk(child, against, found)
    return against


def _walk_projection(node: JPNode, against: _Against, found: set[FieldPath]) -> _Against:
    left, *per_element = node["children"]
    base = _walk(left, against, found)
    element = None if base is None or node["type"] == "value_projection" else (*base, ITEM)
    for child in per_element:
        _walk(child, element, found)
    return None


def _walk_current(node: JPNode, against: _Against, found: set[FieldPath]) -> _Against:
    return against


def _walk_expref(node: JPNode, against: _Against, found: set[FieldPath]) -> _Against:
    return _walk_children(node, None, found)


def _walk_children(node: JPNode, against: _Against, found: set[FieldPath]) -> _Against:
    for child in node.get("children", ()):
        if isinstance(child, dict):  # slice children are plain ints
            _walk(child, against, found)
    return None


_WALKERS: dict[str, Callable[[JPNode, _Against, set[FieldPath]], _Against]] = {
    "field": _walk_field,
    "subexpression": _walk_chain,
    "index_expression": _walk_chain,
    "pipe": _walk_chain,
    "index": _walk_index,
    "slice": _walk_same,
    "flatten": _walk_same,
    "projection": _walk_projection,
    "value_projection": _walk_projection,
    "filter_projection": _walk_projection,
    "current": _walk_current,
    "identity": _walk_current,
    "expref": _walk_expref,
}


def path_offset(text: str, path: FieldPath) -> int | None:
    """The 0-based column of the last field of ``path`` where the text spells it as a dotted
    chain of names (``steps.a.b``), or None."""
    names = [part for part in path if isinstance(part, str)]
    try:
        tokens = [t for t in Lexer().tokenize(text) if t["type"] != "eof"]
    except Exception:  # noqa: BLE001 - the text parsed once already; a position is a nicety
        return None
    for start in range(len(tokens)):
        at, matched = start, 0
        for name in names:
            if at < len(tokens) and tokens[at]["type"] in ("lbracket", "flatten", "filter"):
                while at < len(tokens) and tokens[at]["type"] not in ("rbracket", "dot"):
                    at += 1  # skip an index or projection written between two names
                at += 1 if at < len(tokens) and tokens[at]["type"] == "rbracket" else 0
            if at < len(tokens) and tokens[at]["type"] == "dot" and matched:
                at += 1
            if at >= len(tokens) or tokens[at]["value"] != name:
                break
            matched, at = matched + 1, at + 1
        if matched == len(names):
            return int(tokens[at - 1]["start"])
    return None


def template_root_paths(ast: nodes.Template) -> frozenset[FieldPath]:
    """Every path a template reads as a chain of attributes or constant items from a variable
    (``steps.order.lines[0].sku`` reads ``("steps", "order", "lines", ITEM, "sku")``)."""
    found = set()
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        path = _jinja_path(node)
        if path is not None:
            found.add(path)
    return frozenset(found)


def template_whole_names(ast: nodes.Template) -> frozenset[str]:
    """The variables a template uses whole (``{{ data | tojson }}``), not only as the start of
    an attribute chain."""
    chained = {id(node.node) for node in ast.find_all(nodes.Getattr)}
    chained |= {id(node.node) for node in ast.find_all(nodes.Getitem)}
    return frozenset(node.name for node in ast.find_all(nodes.Name)
                     if node.ctx == "load" and id(node) not in chained)


def _jinja_path(node: nodes.Node) -> FieldPath | None:
    parts: list[str | int] = []
    while isinstance(node, (nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, (str, int)):
            parts.append(node.arg.value if isinstance(node.arg.value, str) else ITEM)
        else:
            return None
        node = node.node
    if not isinstance(node, nodes.Name):
        return None
    return (node.name, *reversed(parts))
