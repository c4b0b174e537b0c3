"""What a test of `syncline test` yields and the pieces Mapping and Flow tests share: selecting
by id, where a test is written, reading fixtures, diffing expected and actual."""

from __future__ import annotations

import difflib
import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import SynclineError
from engine.loader import load_yaml
from engine.source import SourceLocation


@dataclass(frozen=True)
class TestResult:
    """One test's outcome."""

    kind: str  # mapping | flow
    owner: str  # e.g. opportunity-to-order@2
    name: str
    passed: bool
    detail: str = ""  # diff or error text when it failed
    location: SourceLocation | None = None  # the test's entry in its definition

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.owner}::{self.name}"


def located(tests: Any, locations: Any, fallback: SourceLocation | None) -> list[Any]:
    """(test, where it is written) pairs; `fallback` where a location is unknown."""
    return [(t, locations[i] if i < len(locations) else fallback) for i, t in enumerate(tests)]


def selected(test_id: str, pattern: str | None) -> bool:
    return pattern is None or pattern in test_id or fnmatch.fnmatch(test_id, pattern)


def fixture_base(root: Path, location: SourceLocation | None) -> Path:
    """The folder a definition's `inputFile`/`expectFile` paths are relative to: its own."""
    return root / Path(location.path).parent if location else root


MAX_FIXTURE_BYTES = 1024 * 1024


def load_fixture(inline: Any, file: str | None, base: Path, root: Path | None = None) -> Any:
    """A test's inline value, or the JSON/YAML file it names (relative to `base`, the folder of
    its definition). With `root` (the project) the file must stay inside it (symlinks resolved)
    and be a regular file; any file is read up to MAX_FIXTURE_BYTES."""
    if file is None:
        return inline
    path = (base / file).resolve()
    if root is not None and not path.is_relative_to(root.resolve()):
        raise SynclineError(f"fixture {file} is outside the project")
    try:
        if root is not None and path.exists() and not path.is_file():
            raise SynclineError(f"fixture {file} is not a regular file")
        with path.open("rb") as handle:
            content = handle.read(MAX_FIXTURE_BYTES + 1)
    except OSError as exc:
        raise SynclineError(f"cannot read fixture {file} ({path}): {exc.strerror}") from exc
    if len(content) > MAX_FIXTURE_BYTES:
        raise SynclineError(f"fixture {file} is larger than {MAX_FIXTURE_BYTES} bytes")
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SynclineError(f"fixture {file} is not UTF-8 text: {exc.reason}") from exc
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise SynclineError(f"{path}:{exc.lineno}:{exc.colno}: {exc.msg}") from exc
        except RecursionError as exc:
            raise SynclineError(f"{path}: nested too deeply") from exc
    docs, problems = load_yaml(text, str(path))
    if problems:
        raise SynclineError(problems[0].format())
    return docs[0].data if docs else None


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def diff(expected: Any, actual: Any) -> str:
    """A unified diff of two JSON values, expected first."""
    lines = difflib.unified_diff(
        pretty(expected).splitlines(), pretty(actual).splitlines(),
        fromfile="expected", tofile="actual", lineterm="",
    )
    return "\n".join(lines)
