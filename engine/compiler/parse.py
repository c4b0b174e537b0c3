"""Raw documents -> typed models, with pydantic's errors translated to located diagnostics."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from engine.loader import Document
from engine.model import MODELS, Project, Resource
from engine.model.base import suggest
from engine.model.resource import KINDS
from engine.source import Diagnostic

Parsed = tuple[Resource, Document]


def parse_document(doc: Document) -> tuple[Resource | None, list[Diagnostic]]:
    """Validate one document against the model of its kind."""
    data = doc.data
    if not isinstance(data, dict):
        return None, [Diagnostic(doc.locate(), "E_KIND", "a definition must be a mapping with "
                                 "apiVersion, kind, metadata and spec")]
    kind = data.get("kind")
    model = MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        hint = suggest(str(kind), list(MODELS)) if kind else ""
        message = f"unknown kind '{kind}'{hint}" if kind else "missing 'kind'"
        return None, [Diagnostic(doc.locate(("kind",)), "E_KIND", message)]
    return validate_model(model, doc)


def parse_project(doc: Document) -> tuple[Project | None, list[Diagnostic]]:
    if isinstance(doc.data, dict) and doc.data.get("kind") != "Project":
        message = f"{doc.path} must be a Project (kind: Project), not '{doc.data.get('kind')}'"
        return None, [Diagnostic(doc.locate(("kind",)), "E_PROJECT", message)]
    project, diagnostics = validate_model(Project, doc)
    return project, diagnostics


def validate_model(model: type[BaseModel], doc: Document) -> tuple[Any, list[Diagnostic]]:
    context: dict[str, Any] = {"fields": {}}
    try:
        return model.model_validate(doc.data, context=context), []
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        return None, [_diagnostic(error, doc, context["fields"]) for error in errors]


def _diagnostic(error: Any, doc: Document, fields: dict[int, list[str]]) -> Diagnostic:
    loc = _data_path(doc.data, error["loc"])
    if error["type"] == "extra_forbidden":
        parent = _node(doc.data, loc[:-1])
        key = str(loc[-1])
        hint = _belongs_elsewhere(key, doc.data, loc[:-1], fields)
        hint = hint or suggest(key, fields.get(id(parent), []))
        message = f"{_where(loc[:-1])}unknown field '{key}'{hint}"
        return Diagnostic(doc.locate(loc), "E_UNKNOWN_FIELD", message)
    if error["type"] == "literal_error" and loc == ("kind",):
        return Diagnostic(doc.locate(loc), "E_KIND", f"kind must be one of {', '.join(KINDS)}")
    return Diagnostic(doc.locate(loc), "E_INVALID", f"{_where(loc)}{_message(error)}")


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """pydantic's loc as a path into the data: union tags dropped, a missing last part kept."""
    path: list[Any] = []
    node = data
    for i, part in enumerate(loc):
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]
        elif i < len(loc) - 1:
            continue  # a union tag or validator name, not a key
        path.append(part)
    return tuple(path)


def _belongs_elsewhere(key: str, data: Any, parent: tuple[Any, ...],
                       fields: dict[int, list[str]]) -> str:
    """' ('retry' belongs to the step, not to call:)' when an enclosing object takes `key`."""
    for depth in range(len(parent) - 1, -1, -1):
        if key in fields.get(id(_node(data, parent[:depth])), ()):
            return f" ('{key}' belongs to {_describe(parent[:depth])}, not to {_describe(parent)})"
    return ""


def _describe(path: tuple[Any, ...]) -> str:
    """How a user names the object at `path`: `the step`, `call:`, `the document`."""
    if not path:
        return "the document"
    if isinstance(path[-1], int) and len(path) > 1:
        return f"the {str(path[-2]).removesuffix('s')}"
    return f"{path[-1]}:"


def _node(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


def _where(loc: tuple[Any, ...]) -> str:
    if not loc:
        return ""
    text = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")
    return f"{text}: "


def _message(error: Any) -> str:
    if error["type"] == "missing":
        return "required field is missing"
    return str(error["msg"]).removeprefix("Value error, ")
