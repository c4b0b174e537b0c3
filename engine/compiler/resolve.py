"""Index the parsed resources by kind, name and version, and resolve `name` / `name@N` references.

A reference without a version means the highest version in the bundle, or for a Flow the version
the environment pins. Two documents with the same kind+name+version and different content are an
error; identical copies are harmless.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.loader import Document
from engine.model.base import split_ref, suggest
from engine.model.resource import Resource
from engine.source import Diagnostic, SourceLocation


@dataclass
class Registry:
    """Every resource of a bundle, with the documents they came from."""

    pins: Mapping[str, int] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    #: (kind, name) of definitions that failed to load or parse: a reference to one is no E_REF
    #: (their own error is the cause, reported already)
    broken: set[tuple[str, str]] = field(default_factory=set)
    _by_kind: dict[str, dict[str, dict[int, tuple[Resource, Document]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(dict))
    )

    def add(self, resource: Resource, doc: Document) -> None:
        versions = self._by_kind[_kind(resource)][resource.name]
        existing = versions.get(resource.version)
        if existing is None:
            versions[resource.version] = (resource, doc)
        elif existing[1].data != doc.data:
            first = existing[1].locate()
            self.diagnostics.append(Diagnostic(
                doc.locate(("metadata", "name")), "E_DUPLICATE",
                f"{_kind(resource)} '{resource.ident}' is defined twice with different content "
                f"(first at {first}); bump metadata.version for a new version",
            ))

    def add_broken(self, doc: Document) -> None:
        """Note a document that did not parse into a resource, if it names its kind and name."""
        data = doc.data if isinstance(doc.data, dict) else {}
        metadata = data.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        if isinstance(data.get("kind"), str) and isinstance(name, str):
            self.broken.add((data["kind"], name))

    def all(self, kind: str) -> list[tuple[Resource, Document]]:
        """Every resource of a kind, sorted by name then version."""
        found = self._by_kind.get(kind, {})
        return [found[name][v] for name in sorted(found) for v in sorted(found[name])]

    def versions(self, kind: str, name: str) -> dict[int, tuple[Resource, Document]]:
        return dict(self._by_kind.get(kind, {}).get(name, {}))

    def active(self, kind: str, name: str) -> tuple[Resource, Document] | None:
        """The pinned (flows) or highest version."""
        versions = self._by_kind.get(kind, {}).get(name)
        if not versions:
            return None
        pinned = self.pins.get(name) if kind == "Flow" else None
        return versions.get(pinned) if pinned is not None else versions[max(versions)]

    def lookup(self, kind: str, ref: str, where: SourceLocation, what: str) -> Any:
        """Resolve a reference or record an E_REF naming the nearest valid name."""
        name, version = split_ref(ref)
        versions = self._by_kind.get(kind, {}).get(name)
        if not versions and (kind, name) in self.broken:
            return None
        if not versions:
            hint = suggest(name, sorted(self._by_kind.get(kind, {})))
            self._missing(where, f"{what} refers to unknown {kind} '{ref}'{hint}")
            return None
        if version is None:
            return versions[max(versions)][0]
        if version not in versions:
            known = ", ".join(f"@{v}" for v in sorted(versions))
            self._missing(where, f"{what} refers to {kind} '{ref}', which has versions {known}")
            return None
        return versions[version][0]

    def _missing(self, where: SourceLocation, message: str) -> None:
        self.diagnostics.append(Diagnostic(where, "E_REF", message))

    def check_pins(self, project_doc: Document | None, environment: str) -> None:
        for name, version in self.pins.items():
            if version not in self.versions("Flow", name) and ("Flow", name) not in self.broken:
                where = (project_doc.locate(("spec", "environments", environment, "pins", name))
                         if project_doc else SourceLocation("syncline.yaml"))
                self._missing(where, f"environment '{environment}' pins Flow '{name}@{version}', "
                              "which does not exist")


def _kind(resource: Resource) -> str:
    return str(resource.kind)  # type: ignore[attr-defined]
