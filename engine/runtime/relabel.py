"""A run's metric labels resolved again when a step they read is written (the labels that read
a run's data and steps: engine/compiler/metric_labels.py; the store counts the run under them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engine.compiler.metric_labels import FlowLabels, RunLabels
from engine.store.base import StepRecord

DONE = frozenset({"succeeded", "skipped"})


def relabel(labelling: FlowLabels, flow: str, data: Any, outputs: Mapping[str, Any],
            records: Sequence[StepRecord]) -> RunLabels | None:
    """The labels the checkpoints of `records` (steps that ran together) carry: resolved from
    `outputs` with those steps when one is a step the labels read (or a metric's beforeStep),
    else None (the run's labels stay as they are). Every checkpoint of the batch carries them:
    they commit in any order, and the same labels written twice move nothing."""
    reads = labelling.reads
    if not any(record.step_id in reads for record in records):
        return None
    after = dict(outputs)
    for record in records:
        if record.state in DONE:
            after[record.step_id] = record.output
    return labelling.resolve(flow, data, after)
