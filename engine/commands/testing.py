"""`syncline test`: run every Mapping's and Flow's `tests:` against a compiled Plan.

Results are values (`engine.commands.results`); the CLI prints them. Each carries where its test
is written (the `- name:` entry), and a mismatch carries a readable unified diff. Flow tests run
through the real runtime (`engine.commands.flowtests`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.commands.flowtests import run_flow_tests
from engine.commands.results import (
    TestResult,
    diff,
    fixture_base,
    load_fixture,
    located,
    pretty,
    selected,
)
from engine.compiler.compiled import CompiledMapping
from engine.compiler.plan import Plan
from engine.errors import MappingError, SynclineError
from engine.source import SourceLocation


def run_tests(plan: Plan, root: Path, pattern: str | None = None) -> list[TestResult]:
    """Every test of the plan whose id matches `pattern` (substring or glob): the Mappings'
    first, then the Flows'."""
    results = [
        _run_mapping_test(mapping, test, where, root)
        for mapping in plan.mappings.values()
        for test, where in located(mapping.tests, mapping.test_locations, mapping.location)
        if selected(f"mapping:{mapping.ident}::{test.name}", pattern)
    ]
    results.extend(run_flow_tests(plan, root, pattern))
    return results


def _run_mapping_test(
    mapping: CompiledMapping, test: Any, where: SourceLocation | None, root: Path
) -> TestResult:
    def result(passed: bool, detail: str = "") -> TestResult:
        return TestResult("mapping", mapping.ident, test.name, passed, detail, where)

    base = fixture_base(root, mapping.location)
    try:
        data = load_fixture(test.input, test.input_file, base, root)
        expected = load_fixture(test.expect, test.expect_file, base, root)
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
        return result(False, f"expected error {test.expect_error}, got:\n{pretty(actual)}")
    if actual != expected:
        return result(False, diff(expected, actual))
    return result(True)
