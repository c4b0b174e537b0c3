"""Syncline: declarative integration-as-code for quote-to-cash.

    plan = compile_project("path/to/project", environment="dev")

The pipeline is load -> model -> compile -> plan -> runtime -> server/CLI; this module exports the
names a user of the library needs.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from engine.compiler import compile_bundle, compile_project
    from engine.compiler.plan import Plan
    from engine.errors import (
        CallError,
        DefinitionError,
        DefinitionErrors,
        ExecutionError,
        MappingError,
        ParkRequested,
        StoreError,
        SynclineError,
        UsageError,
        ValidationFailed,
    )
    from engine.loader import load_project
    from engine.source import Diagnostic, SourceLocation

# Imported on first use, so that a process needing one part (the SQLite writer process needs only
# the store) does not pay for the compiler's imports.
_HOMES = {
    "compile_bundle": "engine.compiler",
    "compile_project": "engine.compiler",
    "Plan": "engine.compiler.plan",
    "load_project": "engine.loader",
    "Diagnostic": "engine.source",
    "SourceLocation": "engine.source",
}

__all__ = [
    "CallError",
    "DefinitionError",
    "DefinitionErrors",
    "Diagnostic",
    "ExecutionError",
    "MappingError",
    "ParkRequested",
    "Plan",
    "SourceLocation",
    "StoreError",
    "SynclineError",
    "UsageError",
    "ValidationFailed",
    "compile_bundle",
    "compile_project",
    "load_project",
]


def __getattr__(name: str) -> _typing.Any:
    if name in __all__:
        value = getattr(_importlib.import_module(_HOMES.get(name, "engine.errors")), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
