"""Operation adapters: a System whose API has another shape than the one the flows speak (a
cloud ERP taking over from the old one) declares, per operation, a Mapping from the call's body
to its own request (`request:`) and one from its successful answer back to the fields the flows
read (`response:`). A routed or shadowed call then sends one body and reads one shape, whichever
System answers, and the flows never learn a second API."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from engine.compiler.compiled import CompiledMapping, OperationAdapter
from engine.compiler.resolve import Registry
from engine.loader import Document
from engine.model import System

Key = tuple[str, int]


def compile_adapters(system: System, doc: Document, registry: Registry,
                     mappings: Mapping[Key, CompiledMapping]) -> Mapping[str, OperationAdapter]:
    """The adapters of `system`'s operations that declare one; an unknown Mapping is an E_REF
    located at the operation's `request`/`response`."""
    adapters = {}
    for name, operation in system.spec.operations.items():
        if operation.request is None and operation.response is None:
            continue
        found = {}
        for side in ("request", "response"):
            ref = getattr(operation, side)
            if ref is None:
                continue
            where = doc.locate(("spec", "operations", name, side))
            resource = registry.lookup("Mapping", ref, where,
                                       f"operation '{name}' of system '{system.name}'")
            if resource is not None:
                found[side] = mappings.get((resource.name, resource.version))
        adapters[name] = OperationAdapter(found.get("request"), found.get("response"))
    return MappingProxyType(adapters)
