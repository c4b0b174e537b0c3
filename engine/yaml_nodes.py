"""YAML text -> plain data with a location for every node, refusing what is not plain data.

`compose_all` composes documents (ruamel's C parser, no object construction); `Converter` turns
a node tree into dicts with string keys, lists, str, int, float, bool and None, typed by the YAML
1.2 core schema, and records each path's (line, col). `Refused` (code, message, node) is what
hostile input raises: custom tags, duplicate keys, recursive aliases, alias expansion beyond
MAX_NODES, nesting beyond MAX_DEPTH, integers beyond 64 bits.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.resolver import BaseResolver
from ruamel.yaml.tag import Tag

MAX_NODES = 100_000           # per document, after alias expansion
MAX_DEPTH = 64
_CORE = "tag:yaml.org,2002:"
_PLAIN = "tag:syncline:plain"   # an untagged plain scalar: typed by _plain(), YAML 1.2 core schema
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^(?:[-+]?[0-9][0-9_]*|0o[0-7_]+|0x[0-9a-fA-F_]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
Path_ = tuple[str | int, ...]


class Refused(Exception):
    def __init__(self, code: str, message: str, node: Node | None) -> None:
        super().__init__(message)
        self.code, self.message, self.node = code, message, node


class Converter:
    """Turns a composed node tree into plain data, recording locations and enforcing limits."""

    def __init__(self) -> None:
        self.nodes = 0
        self.active: set[int] = set()
        self.locations: dict[Path_, tuple[int, int]] = {}

    def convert(self, node: Node, path: Path_, depth: int = 0) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise Refused("E_YAML_ALIAS", f"document expands to more than {MAX_NODES} nodes "
                           "(an alias/anchor bomb?)", node)
        if depth > MAX_DEPTH:
            raise Refused("E_YAML", f"nesting deeper than {MAX_DEPTH} levels", node)
        if id(node) in self.active:
            raise Refused("E_YAML_ALIAS", "an alias refers to a node that contains it", node)
        self.active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, path, depth)
            if isinstance(node, SequenceNode):
                self._check_tag(node, "seq")
                return [self._item(child, path + (i,), depth) for i, child in enumerate(node.value)]
            return _scalar(node)
        finally:
            self.active.discard(id(node))

    def _item(self, node: Node, path: Path_, depth: int) -> Any:
        self.locations.setdefault(path, mark(node))
        return self.convert(node, path, depth + 1)

    def _mapping(self, node: MappingNode, path: Path_, depth: int) -> dict[str, Any]:
        self._check_tag(node, "map")
        result: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.value == "<<" and str(key_node.tag) in (_PLAIN, _CORE + "merge"):
                merged.update(self._merge(value_node, path, depth))
                continue
            if not isinstance(key_node, ScalarNode):
                raise Refused("E_YAML", "mapping keys must be plain scalars", key_node)
            key = _key(key_node)
            if key in result:
                raise Refused("E_YAML_DUPKEY", f"duplicate key '{key}'", key_node)
            self.locations[path + (key,)] = mark(key_node)
            result[key] = self.convert(value_node, path + (key,), depth + 1)
        return {**{k: v for k, v in merged.items() if k not in result}, **result}

    def _merge(self, node: Node, path: Path_, depth: int) -> dict[str, Any]:
        sources = node.value if isinstance(node, SequenceNode) else [node]
        merged: dict[str, Any] = {}
        for source in reversed(sources):
            if not isinstance(source, MappingNode):
                message = "a merge key '<<' takes a mapping or a list of them"
                raise Refused("E_YAML", message, source)
            merged.update(self.convert(source, path, depth + 1))
        return merged

    @staticmethod
    def _check_tag(node: Node, expected: str) -> None:
        tag = str(node.tag)
        if tag != _CORE + expected:
            raise Refused("E_YAML_TAG", f"tag '{tag}' is not allowed (plain YAML data only)", node)


def mark(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _key(node: ScalarNode) -> str:
    value = _scalar(node)
    if isinstance(value, bool | float) or value is None:
        return str(node.value)
    return str(value)


def _scalar(node: Node) -> Any:
    text: str = node.value
    if node.ctag is _PLAIN_TAG:
        return _plain(text, node)
    tag = str(node.tag)
    if tag in (_CORE + "str", _CORE + "timestamp", "!"):
        return text
    if tag == _CORE + "null":
        return None
    if tag == _CORE + "bool":
        return text.lower() in ("true", "yes", "on", "y")
    if tag == _CORE + "int":
        return _int(text, node)
    if tag == _CORE + "float":
        return _float(text, node)
    raise Refused("E_YAML_TAG", f"tag '{tag}' is not allowed (plain YAML data only)", node)


def _plain(text: str, node: Node) -> Any:
    if _NULL.match(text):
        return None
    if _BOOL.match(text):
        return text.lower() == "true"
    if _INT.match(text):
        return _int(text, node)
    if _FLOAT.match(text):
        return _float(text, node)
    return text


MAX_INT = 2**64  # beyond it an integer is no JSON number other systems read (quote it)


def _int(text: str, node: Node) -> int:
    digits = text.replace("_", "")
    try:
        value = int(digits, 0) if len(digits) < 100 else MAX_INT
    except ValueError:
        try:
            value = int(digits, 10)
        except ValueError as exc:
            raise Refused("E_YAML", f"'{text}' is not an integer", node) from exc
    if abs(value) >= MAX_INT:
        shown = text if len(text) <= 24 else text[:24] + "..."
        raise Refused("E_YAML", f"integer '{shown}' is out of range (at most 64 bits; quote it "
                       "to keep it as text)", node)
    return value


def _float(text: str, node: Node) -> float:
    lowered = text.replace("_", "").lower()
    specials = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}
    if lowered in specials:
        return specials[lowered]
    try:
        return float(lowered)
    except ValueError as exc:
        raise Refused("E_YAML", f"'{text}' is not a number", node) from exc


class _PlainResolver(BaseResolver):
    """Tags every untagged plain scalar `_PLAIN`; `_plain` types it (ruamel's resolver is the
    slowest part of loading)."""

    def __init__(self, version: Any = None, loader: Any = None, loadumper: Any = None) -> None:
        super().__init__(loadumper=loader or loadumper)

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is ScalarNode:
            return _PLAIN_TAG if implicit[0] else _STR_TAG
        return _SEQ_TAG if kind is SequenceNode else _MAP_TAG


# One Tag each, shared by every node: a Tag decodes its text char by char on first str().
_PLAIN_TAG, _STR_TAG, _SEQ_TAG, _MAP_TAG = (
    Tag(suffix=suffix) for suffix in (_PLAIN, _CORE + "str", _CORE + "seq", _CORE + "map")
)


_local = threading.local()


def compose_all(text: str) -> Iterator[Node | None]:
    # The C parser (ruamel.yaml.clib) composes ~5x faster than the pure one and keeps marks;
    # composing (not constructing) means no tag is ever turned into an object.
    yaml = getattr(_local, "yaml", None)
    if yaml is None:
        yaml = _local.yaml = YAML(typ="safe", pure=False)
        yaml.Resolver = _PlainResolver
    yield from yaml.compose_all(text)
