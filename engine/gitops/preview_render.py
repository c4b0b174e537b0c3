"""The change preview for people (text) and for a pull request comment (markdown)."""

from __future__ import annotations

import json
from typing import Any

from engine.gitops.compare import Change
from engine.gitops.flow_preview import FlowPreview
from engine.gitops.preview import Preview, StepPreview

SHOWN = 5          # samples listed per step and kind; the rest are counted
FIELDS_SHOWN = 12  # fields listed per sample in text


def _value(entry: dict[str, Any], side: str) -> str:
    return json.dumps(entry[side], default=str) if side in entry else "(absent)"


def _summary(step: StepPreview | FlowPreview) -> str:
    if isinstance(step, StepPreview) and step.not_previewed:
        return f"not previewed: {step.not_previewed}"
    parts = [f"{step.count('unchanged')} unchanged", f"{step.count('changed')} changed",
             f"{step.count('newly_failing')} newly failing",
             f"{step.count('newly_passing')} newly passing"]
    for kind in ("still_failing", "not_previewed"):
        if step.count(kind):
            parts.append(f"{step.count(kind)} {kind.replace('_', ' ')}")
    return ", ".join(parts)


def _flow_title(flow: FlowPreview) -> str:
    return f"flow {flow.flow}: {flow.old or '(new flow)'} -> {flow.new}"


def _samples_text(changes: list[Change]) -> list[str]:
    lines = []
    for kind in ("changed", "newly_failing", "newly_passing", "not_previewed"):
        hits = [c for c in changes if c.kind == kind]
        for change in hits[:SHOWN]:
            lines.append(f"      {kind.replace('_', ' ')} {change.sample}")
            lines.extend(f"        {f['path']}: {_value(f, 'old')} -> {_value(f, 'new')}"
                         for f in change.fields[:FIELDS_SHOWN])
            if len(change.fields) > FIELDS_SHOWN:
                lines.append(f"        ... and {len(change.fields) - FIELDS_SHOWN} more fields "
                             "(--format json lists them all)")
            if change.error:
                label = {"newly_passing": "was", "not_previewed": "why"}.get(kind, "error")
                lines.append(f"        {label}: {change.error}")
        if len(hits) > SHOWN:
            lines.append(f"      ... and {len(hits) - SHOWN} more {kind.replace('_', ' ')}")
    return lines


def _title(step: StepPreview) -> str:
    return f"{step.flow}/{step.step}: {step.old or '(new step)'} -> {step.new}"


def render_text(preview: Preview) -> str:
    lines = [f"Preview on {preview.sample_count} samples:"]
    if not preview.steps:
        lines.append("  no mapping step changed.")
    for step in preview.steps:
        lines.append(f"  ~ {_title(step)}: {_summary(step)}")
        lines.extend(_samples_text(step.changes))
    for flow in preview.flows:
        lines.append(f"  ~ {_flow_title(flow)}: {_summary(flow)}")
        lines.extend(_samples_text(flow.changes))
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
    if preview.flows:
        out += ["", "| flow | version | unchanged | changed | newly failing | newly passing | "
                "not previewed |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        out += [f"| `{f.flow}` | {f.old or 'new'} → {f.new} | {f.count('unchanged')} | "
                f"{f.count('changed')} | {f.count('newly_failing')} | "
                f"{f.count('newly_passing')} | {f.count('not_previewed')} |"
                for f in preview.flows]
    for label, changes in [*((f"{s.flow}/{s.step}", s.changes) for s in preview.steps),
                           *((f"flow {f.flow}", f.changes) for f in preview.flows)]:
        out += _details_markdown(label, changes)
    if preview.unmatched:
        out += ["", f"{len(preview.unmatched)} samples match no flow:", ""]
        out += [f"- {u}" for u in preview.unmatched]
    return "\n".join(out) + "\n"


def _details_markdown(label: str, changes: list[Change]) -> list[str]:
    notable = [c for c in changes if c.kind not in ("unchanged", "still_failing")]
    if not notable:
        return []
    out = ["", f"<details><summary><code>{label}</code>: {len(notable)} samples differ"
           "</summary>", "", "| sample | field | old | new |", "| --- | --- | --- | --- |"]
    for change in notable[:SHOWN * 4]:
        out += [f"| {change.sample} | `{f['path']}` | `{_cell(_value(f, 'old'))}` | "
                f"`{_cell(_value(f, 'new'))}` |" for f in change.fields]
        if change.error or not change.fields:
            label_ = {"newly_failing": "now fails", "newly_passing": "now passes",
                      "not_previewed": "not previewed"}.get(change.kind, change.kind)
            out.append(f"| {change.sample} | {label_} | {_cell(change.error or '')} | |")
    return [*out, "", "</details>"]


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell (and inside a code span)."""
    return text.replace("|", "\\|").replace("`", "'").replace("\n", " ")
