"""`${env.NAME}` and `${secret.NAME}` in definition strings.

Environment values are substituted when a plan is made for an environment. Secrets are never
substituted into a plan: their references stay in place (so no plan, digest or message can hold a
value) and the runtime resolves them when it builds a System's client. They are allowed only where
the runtime resolves them: a System's `auth`, `headers` and `webhooks.secret`. `$${` is a literal
`${`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.loader import Document
from engine.source import Diagnostic

PLACEHOLDER = re.compile(r"\$(\$?)\{\s*([A-Za-z_]+)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}")
SECRET_PLACES = (("spec", "auth"), ("spec", "headers"), ("spec", "webhooks", "secret"))


@dataclass
class Interpolation:
    """Collects what interpolation found across documents."""

    variables: Mapping[str, Any]
    environ: Mapping[str, str]
    diagnostics: list[Diagnostic] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)

    def document(self, doc: Document) -> Document:
        data = self._value(doc.data, (), doc)
        return Document(doc.path, doc.index, data, doc.locations, doc.source)

    def _value(self, value: Any, path: tuple[Any, ...], doc: Document) -> Any:
        if isinstance(value, str):
            return self._string(value, path, doc) if "${" in value else value
        if isinstance(value, dict):
            return {k: self._value(v, path + (k,), doc) for k, v in value.items()}
        if isinstance(value, list):
            return [self._value(v, path + (i,), doc) for i, v in enumerate(value)]
        return value

    def _string(self, text: str, path: tuple[Any, ...], doc: Document) -> Any:
        whole = PLACEHOLDER.fullmatch(text)
        if whole and not whole[1] and whole[2] == "env":
            return self._env(whole[3], path, doc, whole[0])  # keeps the variable's own type
        return PLACEHOLDER.sub(lambda m: self._replace(m, path, doc), text)

    def _replace(self, match: re.Match[str], path: tuple[Any, ...], doc: Document) -> str:
        escaped, namespace, name = match[1], match[2], match[3]
        if escaped:
            return match[0][1:]
        if namespace == "env":
            return str(self._env(name, path, doc, match[0]))
        if namespace == "secret":
            self._secret(name, path, doc)
            return match[0]
        hint = "use ${env.NAME} or ${secret.NAME}"
        self._error(doc, path, f"unknown placeholder '{match[0]}' ({hint})")
        return match[0]

    def _env(self, name: str, path: tuple[Any, ...], doc: Document, text: str) -> Any:
        if name in self.variables:
            return self.variables[name]
        if name in self.environ:
            return self.environ[name]
        self._error(doc, path, f"'{text}' is not set: add it to the environment's vars in "
                    "syncline.yaml, or list it in spec.processEnv and set it in the process "
                    "environment")
        return text

    def _secret(self, name: str, path: tuple[Any, ...], doc: Document) -> None:
        kind = doc.data.get("kind") if isinstance(doc.data, dict) else None
        if kind == "System" and any(path[: len(p)] == p for p in SECRET_PLACES):
            self.secrets.add(name)
            return
        self._error(doc, path, f"secret '{name}' used here: secrets may only appear in a System's "
                    "auth, headers and webhooks.secret")

    def _error(self, doc: Document, path: tuple[Any, ...], message: str) -> None:
        self.diagnostics.append(Diagnostic(doc.locate(path), "E_INTERP", message))


def secret_refs(text: str) -> list[str]:
    """Names of the secrets a string refers to."""
    return [m[3] for m in PLACEHOLDER.finditer(text) if not m[1] and m[2] == "secret"]


def resolve_secrets(text: str, secrets: Mapping[str, str]) -> str:
    """Substitute secret values (runtime only). Missing names raise KeyError."""
    return PLACEHOLDER.sub(
        lambda m: m[0][1:] if m[1] else secrets[m[3]] if m[2] == "secret" else m[0], text
    )
