"""`syncline owners`: the domain ownership matrix as text, JSON, a markdown table or mermaid.

Each row is an entity's field (`*`: every field its owner masters), the owning System, and the
writes of it: `copy` into another System (the normal sync), `owner` (the owner's own change
written back to it), `override` (a step with `authority: {override: reason}`) and `unknown`
(the compiler cannot tell which fields the write sets).
"""

from __future__ import annotations

import json

from engine.compiler.ownership import FieldRow, Write


def _write(write: Write, kind: str) -> str:
    text = f"{write.flow} {write.step} -> {write.system} ({kind}"
    return text + (f": {write.override})" if kind == "override" else ")")


def to_text(rows: list[FieldRow]) -> str:
    if not rows:
        return "no Schema declares an owner\n"
    header = ("ENTITY", "FIELD", "OWNER")
    widths = [max(len(h), *(len(v) for v in values)) for h, values in zip(
        header, zip(*((r.entity, r.field, r.owner) for r in rows), strict=True), strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + "  WRITTEN BY"]
    for row in rows:
        cells = "  ".join(v.ljust(w) for v, w in zip((row.entity, row.field, row.owner), widths,
                                                     strict=True))
        writes = [_write(w, kind) for w, kind in row.writes] or ["-"]
        lines.append(f"{cells}  {writes[0]}")
        lines.extend(" " * len(cells) + f"  {w}" for w in writes[1:])
    return "\n".join(lines) + "\n"


def to_json(rows: list[FieldRow]) -> str:
    return json.dumps([r.as_dict() for r in rows], indent=2) + "\n"


def to_markdown(rows: list[FieldRow]) -> str:
    lines = ["| Entity | Field | Owner | Written by |", "| --- | --- | --- | --- |"]
    for row in rows:
        writes = "<br>".join(_write(w, kind) for w, kind in row.writes) or "-"
        field = "all others" if row.field == "*" else f"`{row.field}`"
        lines.append(f"| {row.entity} | {field} | **{row.owner}** | {writes} |")
    return "\n".join(lines) + "\n"


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)


def to_mermaid(rows: list[FieldRow]) -> str:
    """Owners own fields (thick arrows); flows write copies into other Systems (thin arrows),
    overrides into the owner (dotted)."""
    lines = ["flowchart LR"]
    systems = sorted({r.owner for r in rows} | {w.system for r in rows for w, _ in r.writes})
    lines.extend(f'  sys_{_safe(s)}[("{s}")]' for s in systems)
    for row in rows:
        node = f"f_{_safe(row.entity)}_{_safe(row.field)}"
        label = row.entity if row.field == "*" else f"{row.entity} {row.field}"
        lines.append(f'  {node}["{label}"]')
        lines.append(f"  sys_{_safe(row.owner)} ==>|owns| {node}")
        for write, kind in row.writes:
            arrow = "-.->" if kind in ("override", "unknown") else "-->"
            lines.append(f'  {node} {arrow}|"{write.flow} {write.step} ({kind})"| '
                         f"sys_{_safe(write.system)}")
    return "\n".join(lines) + "\n"


RENDERERS = {"text": to_text, "json": to_json, "markdown": to_markdown, "mermaid": to_mermaid}
