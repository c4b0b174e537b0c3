"""`syncline test`: run every Mapping's (and Flow's) `tests:` against a compiled Plan.

Results are values; the CLI prints them. A mismatch carries a readable unified diff.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.compiler.compiled import CompiledMapping
from engine.compiler.plan import Plan
from engine.errors import MappingError, SynclineError
from engine.loader import load_yaml
from engine.source import SourceLocation


@dataclass(frozen=True)
class TestResult:
    """One test's outcome."""

    kind: str            # mapping | flow
    owner: str           # e.g. opportunity-to-order@2
    name: str
    passed: bool
    detail: str = ""     # diff or error text when it failed
    location: SourceLocation | None = None

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.owner}::{self.name}"


FlowRunner = Callable[[Plan, Path, str | None], Iterator[TestResult]]


def run_tests(plan: Plan, root: Path, pattern: str | None = None,
              flow_runner: FlowRunner | None = None) -> list[TestResult]:
    """Every test of the plan whose id matches `pattern` (substring or glob)."""
    results = [r for r in _mapping_tests(plan, root) if _selected(r.id, pattern)]
    if flow_runner is not None:
        results.extend(flow_runner(plan, root, pattern))
    return results


def _selected(test_id: str, pattern: str | None) -> bool:
    return pattern is None or pattern in test_id or fnmatch.fnmatch(test_id, pattern)


def _mapping_tests(plan: Plan, root: Path) -> Iterator[TestResult]:
    for mapping in plan.mappings.values():
        for test in mapping.tests:
            yield _run_mapping_test(mapping, test, root)


def _run_mapping_test(mapping: CompiledMapping, test: Any, root: Path) -> TestResult:
    base = root / Path(mapping.location.path).parent if mapping.location else root

    def result(passed: bool, detail: str = "") -> TestResult:
        return TestResult("mapping", mapping.ident, test.name, passed, detail, mapping.location)

    try:
        data = load_fixture(test.input, test.input_file, base)
        expected = load_fixture(test.expect, test.expect_file, base)
    except SynclineError as exc:
        return result(False, str(exc))
    try:
        actual = mapping.apply(data)
    except MappingError as exc:
        codes = {p.code for p in exc.problems}
        if test.expect_error and test.expect_error in codes:
            return result(True)
        return result(False, f"raised {exc}")
    if test.expect_error:
        return result(False, f"expected error {test.expect_error}, got:\n{_pretty(actual)}")
    if actual != expected:
        return result(False, diff(expected, actual))
    return result(True)


def load_fixture(inline: Any, file: str | None, base: Path) -> Any:
    """A test's inline value, or the JSON/YAML file it names (relative to its definition)."""
    if file is None:
        return inline
    path = (base / file).resolve()
    try:
        text = path.read_text()
    except OSError as exc:
        raise SynclineError(f"cannot read fixture {file}: {exc.strerror}") from exc
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise SynclineError(f"{file}:{exc.lineno}:{exc.colno}: {exc.msg}") from exc
    docs, problems = load_yaml(text, file)
    if problems:
        raise SynclineError(problems[0].format())
    return docs[0].data if docs else None


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def diff(expected: Any, actual: Any) -> str:
    """A unified diff of two JSON values, expected first."""
    lines = difflib.unified_diff(
        _pretty(expected).splitlines(), _pretty(actual).splitlines(),
        fromfile="expected", tofile="actual", lineterm="",
    )
    return "\n".join(lines)
