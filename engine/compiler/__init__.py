"""The compiler: loaded documents -> an immutable Plan. Pure functions; no files are written."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.compiler.plan import Plan, build_plan
from engine.loader import Document, LoadedProject, load_project

__all__ = ["Plan", "build_plan", "compile_bundle", "compile_loaded", "compile_project"]


def compile_loaded(loaded: LoadedProject, *, environment: str | None = None,
                   environ: Mapping[str, str] | None = None) -> Plan:
    """Compile what `load_project` read. Raises DefinitionErrors with every diagnostic."""
    return build_plan(loaded.project, loaded.documents, environment=environment,
                      environ=environ, diagnostics=loaded.diagnostics,
                      unloaded=loaded.unloaded)


def compile_project(root: str | Path, *, environment: str | None = None,
                    environ: Mapping[str, str] | None = None) -> Plan:
    """`build_plan(load_project(root))`: the whole compiler in one call."""
    return compile_loaded(load_project(root), environment=environment, environ=environ)


def compile_bundle(bundle: Mapping[str, Any]) -> Plan:
    """Rebuild a Plan from the bundle a store kept by digest (the same digest comes out)."""
    project = Document("<bundle>/syncline.yaml", 0, {
        "apiVersion": "syncline/v1", "kind": "Project",
        "metadata": {"name": bundle["project"]},
        "spec": {
            "defaults": bundle.get("defaults", {}),
            "environments": {bundle["environment"]: {"vars": bundle.get("vars", {}),
                                                     "pins": bundle.get("pins", {})}},
        },
    })
    documents = [Document("<bundle>", i, data) for i, data in enumerate(bundle["documents"])]
    return build_plan(project, documents, environment=bundle["environment"], environ={})
