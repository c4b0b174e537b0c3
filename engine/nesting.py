"""How deep a YAML text nests, bounded before the parser sees it.

The C parser recurses once per nesting level and overflows the C stack (SIGSEGV) somewhere past
100,000 levels, so the loader must refuse such a text without parsing it. `too_deep` reads it
line by line: block levels are the stack of increasing indentations, compact ``- `` / ``? ``
indicators at the start of a line add one level each, and flow ``[``/``{`` add one until closed
(outside quoted strings and comments). It over-estimates rather than under-estimates, so the
limit is far above the loader's semantic limit (`yaml_nodes.MAX_DEPTH`).
"""

from __future__ import annotations

import re

__all__ = ["MAX_PARSE_DEPTH", "too_deep"]

MAX_PARSE_DEPTH = 1000

_COMPACT = re.compile(r"(?:[-?](?: +|$))*")
_NOISE = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"\\]|\\.)*\"|(?:^|\s)#.*")
_BRACKETS = re.compile(r"[\[\]{}]")


def too_deep(text: str, limit: int = MAX_PARSE_DEPTH) -> tuple[int, int] | None:
    """(line, column) where `text` first nests deeper than `limit` levels, or None."""
    if text.count("\n") + text.count("[") + text.count("{") + text.count("- ") \
            + text.count("? ") < limit:
        return None                  # fewer openers than levels: cannot be too deep
    indents: list[int] = []
    flow = 0
    for lineno, line in enumerate(text.split("\n"), 1):
        body = line.lstrip(" ")
        if not body or body[0] == "#":
            continue
        indent = len(line) - len(body)
        if flow == 0:
            while indents and indents[-1] >= indent:
                indents.pop()
            indents.append(indent)
        compact = _COMPACT.match(body)
        depth = len(indents) + (compact[0].count("-") + compact[0].count("?") if compact else 0)
        if depth + flow > limit:
            return lineno, indent + 1
        if "[" not in body and "{" not in body and flow == 0:
            continue
        code = _NOISE.sub(lambda m: " " * len(m[0]), body)
        for bracket in _BRACKETS.finditer(code):
            flow = flow + 1 if bracket[0] in "[{" else max(flow - 1, 0)
            if depth + flow > limit:
                return lineno, indent + bracket.start() + 1
    return None
