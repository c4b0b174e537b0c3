"""Files -> raw documents with locations. Safe YAML; no validation of meaning.

Only plain data comes out: dicts with string keys, lists, str, int, float, bool, None. Each
document keeps a map from its data paths to (line, col), so every later stage can say where a
problem is. Hostile input is refused with a diagnostic, never a hang or a crash: custom tags,
duplicate keys, recursive aliases, alias expansion beyond a node budget, oversized files and
over-deep nesting.
"""

from __future__ import annotations

import posixpath
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import Node

from engine.nesting import MAX_PARSE_DEPTH, too_deep
from engine.source import Diagnostic, SourceLocation
from engine.yaml_nodes import Converter, Path_, Refused, compose_all, mark

MAX_FILE_BYTES = 1024 * 1024
PROJECT_FILE = "syncline.yaml"
YAML_SUFFIXES = (".yaml", ".yml")
FIXTURE_DIR = "fixtures"      # test inputs/expectations live here; they are not definitions


@dataclass(frozen=True)
class Document:
    """One YAML document: its plain data and where each part of it stands in the file."""

    path: str                                  # relative to the project root, '/'-separated
    index: int                                 # 0-based position of the document in its file
    data: Any
    locations: Mapping[Path_, tuple[int, int]] = field(default_factory=dict, repr=False)
    source: str = field(default="", repr=False, compare=False)  #: the text of its file

    def locate(self, loc: Sequence[Any] = ()) -> SourceLocation:
        """The location of `loc`, or of its nearest ancestor that has one."""
        parts = tuple(loc)
        while parts:
            if parts in self.locations:
                line, col = self.locations[parts]
                return SourceLocation(self.path, line, col)
            parts = parts[:-1]
        line, col = self.locations.get((), (1, 1))
        return SourceLocation(self.path, line, col)

    def locate_in(self, loc: Sequence[Any], offset: int | None) -> SourceLocation:
        """The location of column `offset` (0-based; None: its start) in the string value at `loc`.

        Exact where the value stands as written on the line of its key (a one-line plain or
        quoted scalar without escapes, not changed by interpolation); otherwise (block scalars,
        escapes, a value on the next line) the location of `loc` itself. Found when asked, so
        loading pays nothing for it.
        """
        where, text = self.locate(loc), self._value(loc)
        if not isinstance(text, str) or "\n" in text or tuple(loc) not in self.locations:
            return where
        lines = self.source.splitlines()
        if not 0 < where.line <= len(lines):
            return where
        line = lines[where.line - 1]
        after_key = where.col - 1 + (0 if isinstance(loc[-1], int) else len(str(loc[-1])))
        start = line.find(text, after_key) if text else -1
        if start < 0 or line[after_key:start].strip(" \t:-'\"") != "":
            return where
        return SourceLocation(self.path, where.line, start + 1 + min(offset or 0, len(text)))

    def _value(self, loc: Sequence[Any]) -> Any:
        node = self.data
        for part in loc:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return None
        return node


@dataclass(frozen=True)
class LoadedProject:
    """Everything read from a project directory, plus what could not be read."""

    root: Path
    project: Document | None
    documents: tuple[Document, ...]
    diagnostics: tuple[Diagnostic, ...]
    unloaded: tuple[tuple[str, str], ...] = ()   # (kind, name) of definitions that did not load


def load_yaml(text: str, path: str) -> tuple[list[Document], list[Diagnostic]]:
    """Parse every document of one file. Returns what parsed and one diagnostic per refusal."""
    documents: list[Document] = []
    deep = too_deep(text)
    if deep is not None:
        message = f"nesting deeper than {MAX_PARSE_DEPTH} levels (refused before parsing)"
        return documents, [Diagnostic(SourceLocation(path, *deep), "E_YAML_DEPTH", message)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for index, node in enumerate(compose_all(text)):
                if node is None:
                    continue
                documents.append(_document(node, path, index, text))
    except Refused as exc:
        where = mark(exc.node) if exc.node is not None else (1, 1)
        return documents, [Diagnostic(SourceLocation(path, *where), exc.code, exc.message)]
    except MarkedYAMLError as exc:
        return documents, [_syntax_diagnostic(exc, path, text)]
    except (YAMLError, RecursionError, ValueError, TypeError, AttributeError, IndexError) as exc:
        # ruamel raises plain Python errors on some malformed inputs; they are still bad YAML.
        message = "nesting too deep" if isinstance(exc, RecursionError) else str(exc)
        return documents, [Diagnostic(SourceLocation(path), "E_YAML", f"invalid YAML: {message}")]
    return documents, []


def _document(node: Node, path: str, index: int, text: str) -> Document:
    converter = Converter()
    converter.locations[()] = mark(node)
    data = converter.convert(node, ())
    return Document(path, index, data, converter.locations, text)


def _syntax_diagnostic(exc: MarkedYAMLError, path: str, text: str) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    problem = exc.problem or exc.context or "syntax error"
    hint = _yaml_hint(problem, text.splitlines()[line - 1:line])
    return Diagnostic(SourceLocation(path, line, col), "E_YAML", f"invalid YAML: {problem}{hint}")


_KEY_VALUE = re.compile(r"^\s*(?:-\s+)?([^\s#'\"][^:#]*?):\s+(\S.*?)\s*$")
_EXPRESSION_CHARS = frozenset("[]{}`")
_INDENTATION_PROBLEMS = ("did not find expected", "mapping values are not allowed",
                         "expected <block end>", "could not find expected ':'")


def _yaml_hint(problem: str, lines: list[str]) -> str:
    """What probably went wrong on the line of a YAML syntax error, as a hint, or ''."""
    line = lines[0] if lines else ""
    if "\t" in line[:len(line) - len(line.lstrip())]:
        return " (hint: indent with spaces; YAML does not allow tabs)"
    match = _KEY_VALUE.match(line)
    value = match[2] if match else ""
    collection = value[:1] + value[-1:] in ("{}", "[]")  # YAML flow style, likely meant so
    if value and value[0] not in "'\"|>&*!" and not collection and (
            ": " in value or _EXPRESSION_CHARS & set(value)):
        quoted = value.replace("\\", "\\\\").replace('"', '\\"')
        return (f" (hint: an expression holding [ ] {{ }} : or ` must be quoted: "
                f"{match[1] if match else 'key'}: \"{quoted}\")")
    if any(p in problem for p in _INDENTATION_PROBLEMS):
        return " (hint: check this line's indentation against the lines above it)"
    return ""


class Parsed(NamedTuple):
    """One file: the documents that loaded, the refusals, and the (kind, name) of the
    definitions that did not load, as far as a lenient reading of the text can tell."""

    documents: list[Document]
    diagnostics: list[Diagnostic]
    unloaded: tuple[tuple[str, str], ...] = ()


def read_file(file: Path, root: Path) -> Parsed:
    """Read one definition file (size-bounded) and parse it."""
    rel = file.relative_to(root).as_posix()
    try:
        size = file.stat().st_size
        if size > MAX_FILE_BYTES:
            return Parsed([], [_too_big(rel, size)])
        content = file.read_bytes()
    except OSError as exc:
        return Parsed([], [Diagnostic(SourceLocation(rel), "E_PROJECT",
                                      f"cannot read: {exc.strerror}")])
    return parse_content(content, rel)


def parse_content(content: bytes | str, rel: str) -> Parsed:
    """Parse one file's content (size-bounded, UTF-8) as read from disk or from git."""
    if len(content) > MAX_FILE_BYTES:
        return Parsed([], [_too_big(rel, len(content))])
    try:
        text = content if isinstance(content, str) else content.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Parsed([], [Diagnostic(SourceLocation(rel), "E_YAML",
                                      f"not UTF-8 text: {exc.reason}")])
    documents, diagnostics = load_yaml(text, rel)
    unloaded = _unloaded_names(text, documents) if diagnostics else ()
    return Parsed(documents, diagnostics, unloaded)


_KIND_LINE = re.compile(r"^kind:\s*['\"]?([A-Za-z]+)", re.MULTILINE)
_NAME_LINE = re.compile(
    r"^metadata:\s*\{[^}\n]*?\bname:\s*['\"]?([a-z0-9][a-z0-9.-]*)"           # flow style
    r"|^metadata:\s*\n(?:[ \t]+.*\n)*?[ \t]+name:\s*['\"]?([a-z0-9][a-z0-9.-]*)",  # block style
    re.MULTILINE,
)
_SEPARATOR = re.compile(r"^---[ \t]*(?:#.*)?$", re.MULTILINE)


def _unloaded_names(text: str, loaded: list[Document]) -> tuple[tuple[str, str], ...]:
    """(kind, name) of the definitions in a file that did not load, read from its text line by
    line: references to them are not reported as unknown (the load error is the cause)."""
    found = []
    for chunk in _SEPARATOR.split(text):
        kind, name = _KIND_LINE.search(chunk), _NAME_LINE.search(chunk)
        if kind and name:
            found.append((kind[1], name[1] or name[2]))
    have = {(d.data.get("kind"), _name_of(d.data)) for d in loaded if isinstance(d.data, dict)}
    return tuple(pair for pair in found if pair not in have)


def _name_of(data: dict[str, Any]) -> Any:
    metadata = data.get("metadata")
    return metadata.get("name") if isinstance(metadata, dict) else None


def _too_big(rel: str, size: int) -> Diagnostic:
    message = f"file is {size} bytes; definitions files are limited to {MAX_FILE_BYTES}"
    return Diagnostic(SourceLocation(rel), "E_YAML_SIZE", message)


def definition_files(root: Path, paths: Sequence[str]) -> list[Path]:
    """Every YAML file under the project's `paths`, sorted; the project file and anything in a
    `fixtures/` folder (test data) excluded."""
    found: set[Path] = set()
    for entry in paths:
        base = root / entry
        candidates = [base] if base.is_file() else sorted(base.rglob("*")) if base.is_dir() else []
        for file in candidates:
            if file.is_file() and is_definition_file(file.relative_to(root).as_posix()):
                found.add(file)
    return sorted(found)


def is_definition_file(rel: str) -> bool:
    """A YAML file that is neither the project file nor test data in a `fixtures/` folder."""
    parts = rel.split("/")
    return (parts[-1].endswith(YAML_SUFFIXES) and parts[-1] != PROJECT_FILE
            and FIXTURE_DIR not in parts)


def load_project(root: str | Path) -> LoadedProject:
    """Read `syncline.yaml` and every definition file under its `spec.paths`."""
    root = Path(root).resolve()
    project_file = root / PROJECT_FILE
    if not project_file.is_file():
        return _no_project(root)
    return _assemble(root, read_file(project_file, root),
                     lambda paths: (read_file(f, root) for f in definition_files(root, paths)))


def load_files(root: str | Path, files: Mapping[str, bytes | str]) -> LoadedProject:
    """`load_project` over files held in memory (e.g. read from a git commit): `files` maps paths
    relative to the project root ('/'-separated) to their content; `root` only labels them."""
    root = Path(root)
    if PROJECT_FILE not in files:
        return _no_project(root)
    return _assemble(root, parse_content(files[PROJECT_FILE], PROJECT_FILE),
                     lambda paths: (parse_content(files[n], n) for n in select_files(files, paths)))


def select_files(names: Iterable[str], paths: Sequence[str]) -> list[str]:
    """The names under the project's `paths` that `definition_files` would pick, sorted."""
    found: set[str] = set()
    for entry in paths:
        base = posixpath.normpath(entry)
        for name in names:
            inside = base == "." or name == base or name.startswith(base + "/")
            if inside and is_definition_file(name):
                found.add(name)
    return sorted(found)


def _no_project(root: Path) -> LoadedProject:
    missing = Diagnostic(SourceLocation(PROJECT_FILE), "E_PROJECT",
                         f"no {PROJECT_FILE} in {root} (is this a Syncline project?)")
    return LoadedProject(root, None, (), (missing,))


def _assemble(root: Path, project_file: Parsed,
              read_definitions: Callable[[list[str]], Iterable[Parsed]]) -> LoadedProject:
    """The shared tail of `load_project` and `load_files`: the project document, then every
    definition file under its paths."""
    docs, diagnostics, unloaded = project_file
    project = docs[0] if docs else None
    if len(docs) > 1:
        diagnostics.append(Diagnostic(docs[1].locate(), "E_PROJECT",
                                      f"{PROJECT_FILE} must hold exactly one document"))
    documents: list[Document] = []
    names = list(unloaded)
    for file_docs, file_diagnostics, file_unloaded in read_definitions(_paths(project)):
        documents.extend(file_docs)
        diagnostics.extend(file_diagnostics)
        names.extend(file_unloaded)
    return LoadedProject(root, project, tuple(documents), tuple(diagnostics), tuple(names))


def _paths(project: Document | None) -> list[str]:
    """`spec.paths`, read leniently: the model checks it properly later."""
    default = ["flows", "mappings", "policies"]
    if project is None or not isinstance(project.data, dict):
        return default
    spec = project.data.get("spec")
    paths = spec.get("paths", default) if isinstance(spec, dict) else default
    if not isinstance(paths, list):
        return default
    return [p for p in paths  # inside the project: the model reports the others
            if isinstance(p, str) and not Path(p).is_absolute() and ".." not in Path(p).parts]
