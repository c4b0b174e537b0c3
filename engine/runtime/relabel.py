"""A run's metric labels resolved again when a step they read is written (the labels that read
a run's data and steps: engine/compiler/metric_labels.py; the store counts the run under them)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from engine.compiler.metric_labels import FlowLabels
from engine.store.base import Checkpoint

DONE = frozenset({"succeeded", "skipped"})


def relabel(labelling: FlowLabels, flow: str, data: Any, outputs: Mapping[str, Any],
            checkpoints: list[Checkpoint]) -> list[Checkpoint]:
    """`checkpoints` (of steps that ran together), each writing a step the labels read (or a
    metric's beforeStep) carrying the labels resolved from `outputs` with all of their steps."""
    reads = labelling.reads
    if not any(cp.step is not None and cp.step.step_id in reads for cp in checkpoints):
        return checkpoints
    after = dict(outputs)
    for cp in checkpoints:
        if cp.step is not None and cp.step.state in DONE:
            after[cp.step.step_id] = cp.step.output
    labels = labelling.resolve(flow, data, after)
    return [dataclasses.replace(cp, labels=labels)
            if cp.step is not None and cp.step.step_id in reads else cp
            for cp in checkpoints]
