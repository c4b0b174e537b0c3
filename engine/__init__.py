"""Syncline: declarative integration-as-code for quote-to-cash.

    plan = compile_project("path/to/project", environment="dev")

The pipeline is load -> model -> compile -> plan -> runtime -> server/CLI; this module exports the
names a user of the library needs.
"""

from __future__ import annotations

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
