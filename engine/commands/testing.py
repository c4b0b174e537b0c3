"""`syncline test`: run every Mapping's and Flow's `tests:` against a compiled Plan.

Results are values; the CLI prints them. Each carries where its test is written (the `- name:`
entry), and a mismatch carries a readable unified diff. Flow tests run through the real runtime
(`engine.commands.flowtests`).
"""

from __future__ import annotations

import difflib
import fnmatch
import json
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

    kind: str  # mapping | flow
    owner: str  # e.g. opportunity-to-order@2
    name: str
    passed: bool
    detail: str = ""  # diff or error text when it failed
    location: SourceLocation | None = None  # the test's entry in its definition

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.owner}::{self.name}"


def run_tests(plan: Plan, root: Path, pattern: str | None = None) -> list[TestResult]:
    """Every test of the plan whose id matches `pattern` (substring or glob): the Mappings'
    first, then the Flows'."""
    from engine.commands.flowtests import run_flow_tests

    results = [
        _run_mapping_test(mapping, test, where, root)
        for mapping in plan.mappings.values()
        for test, where in located(mapping.tests, mapping.test_locations, mapping.location)
        if selected(f"mapping:{mapping.ident}::{test.name}", pattern)
    ]
    results.extend(run_flow_tests(plan, root, pattern))
    return results


def located(tests: Any, locations: Any, fallback: SourceLocation | None) -> list[Any]:
    """(test, where it is written) pairs; `fallback` where a location is unknown."""
    return [(t, locations[i] if i < len(locations) else fallback) for i, t in enumerate(tests)]


def selected(test_id: str, pattern: str | None) -> bool:
    return pattern is None or pattern in test_id or fnmatch.fnmatch(test_id, pattern)


def fixture_base(root: Path, location: SourceLocation | None) -> Path:
    """The folder a definition's `inputFile`/`expectFile` paths are relative to: its own."""
    return root / Path(location.path).parent if location else root


def _run_mapping_test(
    mapping: CompiledMapping, test: Any, where: SourceLocation | None, root: Path
) -> TestResult:
    def result(passed: bool, detail: str = "") -> TestResult:
        return TestResult("mapping", mapping.ident, test.name, passed, detail, where)

    base = fixture_base(root, mapping.location)
    try:
        data = load_fixture(test.input, test.input_file, base)
        expected = load_fixture(test.expect, test.expect_file, base)
    except SynclineError as exc:
        return result(False, str(exc))
    try:
        actual = mapping.apply(data)
    except MappingError as exc:
        codes = sorted({p.code for p in exc.problems})
        if test.expect_error and test.expect_error in codes:
            return result(True)
        if test.expect_error:
            return result(
                False, f"expected error {test.expect_error}, got {', '.join(codes)}: {exc}"
            )
        return result(False, f"raised {', '.join(codes)}: {exc}")
    if test.expect_error:
        return result(False, f"expected error {test.expect_error}, got:\n{_pretty(actual)}")
    if actual != expected:
        return result(False, diff(expected, actual))
    return result(True)


def load_fixture(inline: Any, file: str | None, base: Path) -> Any:
    """A test's inline value, or the JSON/YAML file it names (relative to `base`, the folder of
    its definition)."""
    if file is None:
        return inline
    path = (base / file).resolve()
    try:
        text = path.read_text()
    except OSError as exc:
        raise SynclineError(f"cannot read fixture {file} ({path}): {exc.strerror}") from exc
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise SynclineError(f"{path}:{exc.lineno}:{exc.colno}: {exc.msg}") from exc
    docs, problems = load_yaml(text, str(path))
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
