"""The change preview for people (text) and for a pull request comment (markdown)."""

from __future__ import annotations

import json
from typing import Any

from engine.gitops.preview import Preview, StepPreview

SHOWN = 5        # samples listed per step and kind; the rest are counted


def _value(entry: dict[str, Any], side: str) -> str:
    return json.dumps(entry[side], default=str) if side in entry else "(absent)"


def _summary(step: StepPreview) -> str:
    if step.not_previewed:
        return f"not previewed: {step.not_previewed}"
    parts = [f"{step.count('unchanged')} unchanged", f"{step.count('changed')} changed",
             f"{step.count('newly_failing')} newly failing",
             f"{step.count('newly_passing')} newly passing"]
    if step.count("still_failing"):
        parts.append(f"{step.count('still_failing')} still failing")
    return ", ".join(parts)


def _title(step: StepPreview) -> str:
    return f"{step.flow}/{step.step}: {step.old or '(new step)'} -> {step.new}"


def render_text(preview: Preview) -> str:
    lines = [f"Preview on {preview.sample_count} samples:"]
    if not preview.steps:
        lines.append("  no mapping step changed.")
    for step in preview.steps:
        lines.append(f"  ~ {_title(step)}: {_summary(step)}")
        for kind in ("changed", "newly_failing", "newly_passing"):
            hits = [c for c in step.changes if c.kind == kind]
            for change in hits[:SHOWN]:
                lines.append(f"      {kind.replace('_', ' ')} {change.sample}")
                lines.extend(f"        {f['path']}: {_value(f, 'old')} -> {_value(f, 'new')}"
                             for f in change.fields)
                if change.error:
                    lines.append(f"        {'was' if kind == 'newly_passing' else 'error'}: "
                                 f"{change.error}")
            if len(hits) > SHOWN:
                lines.append(f"      ... and {len(hits) - SHOWN} more {kind.replace('_', ' ')}")
    for unmatched in preview.unmatched:
        lines.append(f"  ? {unmatched}")
    return "\n".join(lines) + "\n"


def render_markdown(preview: Preview | None, plan_text: str) -> str:
    """The plan in a code block, then (with samples) the preview's tables."""
    out = ["## Syncline plan", "", "```", plan_text.rstrip("\n"), "```"]
    if preview is None:
        return "\n".join(out) + "\n"
    out += ["", f"### Preview on {preview.sample_count} recorded samples", ""]
    if not preview.steps:
        out.append("No mapping step changed.")
    else:
        out += ["| step | mapping | unchanged | changed | newly failing | newly passing |",
                "| --- | --- | ---: | ---: | ---: | ---: |"]
        for s in preview.steps:
            if s.not_previewed:
                out.append(f"| `{s.flow}/{s.step}` | {s.old or 'new'} → {s.new} | "
                           f"not previewed: {s.not_previewed} | | | |")
                continue
            out.append(f"| `{s.flow}/{s.step}` | {s.old or 'new'} → {s.new} | "
                       f"{s.count('unchanged')} | {s.count('changed')} | "
                       f"{s.count('newly_failing')} | {s.count('newly_passing')} |")
    for s in preview.steps:
        notable = [c for c in s.changes if c.kind in ("changed", "newly_failing", "newly_passing")]
        if not notable:
            continue
        out += ["", f"<details><summary><code>{s.flow}/{s.step}</code>: "
                f"{len(notable)} samples differ</summary>", "",
                "| sample | field | old | new |", "| --- | --- | --- | --- |"]
        for change in notable[:SHOWN * 4]:
            if change.fields:
                out += [f"| {change.sample} | `{f['path']}` | `{_value(f, 'old')}` | "
                        f"`{_value(f, 'new')}` |" for f in change.fields]
            else:
                label = "now fails" if change.kind == "newly_failing" else "now passes"
                error = (change.error or "").replace("|", "\\|")
                out.append(f"| {change.sample} | {label} | {error} | |")
        out += ["", "</details>"]
    if preview.unmatched:
        out += ["", f"{len(preview.unmatched)} samples match no flow:", ""]
        out += [f"- {u}" for u in preview.unmatched]
    return "\n".join(out) + "\n"
