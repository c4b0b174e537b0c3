"""Which handler executes each step kind (engine/runtime/steps.py: local steps and calls;
engine/runtime/publishing.py: the backbone), each wrapped to skip on `when`, time the step and
build its record."""

from __future__ import annotations

from engine.runtime.publishing import run_publish
from engine.runtime.steps import (
    Handler,
    Wrapped,
    conditional,
    recorded,
    run_call,
    run_emit,
    run_map,
    run_park,
    run_set,
    run_validate,
)


def _wrap(handler: Handler) -> Wrapped:
    return recorded(conditional(handler))


HANDLERS: dict[str, Wrapped] = {
    "map": _wrap(run_map),
    "validate": _wrap(run_validate),
    "call": _wrap(run_call),
    "emit": _wrap(run_emit),
    "publish": _wrap(run_publish),
    "set": _wrap(run_set),
    "park": _wrap(run_park),
}
