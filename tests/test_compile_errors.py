"""The broken-project corpus: every compiler error code, with its file and line.

Each folder of tests/corpus is a project; its expected.txt lists `CODE file:line`, one a line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.compiler import compile_project
from engine.errors import DefinitionErrors
from engine.loader import MAX_FILE_BYTES

CORPUS = Path(__file__).parent / "corpus"
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "expected.txt").exists())


def _expected(case: Path) -> set[tuple[str, str, int]]:
    found = set()
    for line in (case / "expected.txt").read_text().splitlines():
        code, where = line.split()
        path, lineno = where.rsplit(":", 1)
        found.add((code, path, int(lineno)))
    return found


def _materialise(name: str, tmp_path: Path) -> Path:
    root = tmp_path / name
    shutil.copytree(CORPUS / name, root)
    if name == "yaml_size":
        (root / "defs" / "big.yaml").write_text("# padding\n" * (MAX_FILE_BYTES // 10 + 10))
    return root


@pytest.mark.parametrize("name", CASES)
def test_corpus_case_reports_its_errors(name: str, tmp_path: Path) -> None:
    root = _materialise(name, tmp_path)
    with pytest.raises(DefinitionErrors) as caught:
        compile_project(root, environ={})
    errors = [d for d in caught.value.diagnostics if d.severity == "error"]
    got = {(d.code, d.location.path, d.location.line) for d in errors}
    assert got == _expected(root), "\n".join(d.format() for d in errors)


def test_corpus_covers_every_error_code() -> None:
    codes = {code for case in CASES for code, _, _ in _expected(CORPUS / case)}
    assert codes >= {
        "E_YAML", "E_YAML_TAG", "E_YAML_DUPKEY", "E_YAML_ALIAS", "E_YAML_SIZE", "E_PROJECT",
        "E_KIND", "E_UNKNOWN_FIELD", "E_INVALID", "E_INTERP", "E_DUPLICATE", "E_REF", "E_CYCLE",
        "E_JMESPATH", "E_TEMPLATE", "E_JSONSCHEMA", "E_TARGET", "E_TRIGGER", "E_FIELD",
        "E_OWNERSHIP", "E_SHADOW",
    }


def test_validate_prints_located_sorted_errors_and_exits_1(tmp_path: Path) -> None:
    root = _materialise("ref_operation", tmp_path)
    result = CliRunner().invoke(main, ["validate", str(root)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == ("defs/f.yaml:8:27: error[E_REF] system 'erp' has no operation "
                        "'create-ordr' (did you mean 'create-order'?)")
    assert lines[1].startswith("defs/f.yaml:10:")
    assert lines[-1] == "2 errors"


def test_validate_json_format_lists_diagnostics(tmp_path: Path) -> None:
    root = _materialise("unknown_field", tmp_path)
    result = CliRunner().invoke(main, ["validate", str(root), "--format", "json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["ok"] is False
    assert [(d["code"], d["line"]) for d in report["diagnostics"]] == [
        ("E_UNKNOWN_FIELD", 5), ("E_UNKNOWN_FIELD", 6)]
    assert "did you mean 'maxAttempts'" in report["diagnostics"][0]["message"]


def test_cycle_error_points_at_the_reference_that_closes_it(tmp_path: Path) -> None:
    assert _errors(_materialise("cycle_steps", tmp_path)) == [
        "defs/f.yaml:10:22: error[E_CYCLE] steps form a cycle: b -> a -> b (each needs the next; "
        "step 'b' needing 'a' closes it)"]


def test_cycle_error_points_at_the_needs_entry_that_closes_it(project) -> None:
    steps = """\
        - id: c
          set: {z: data}
        - id: d
          needs: [c]
          set: {y: steps.e.x}
        - id: e
          needs: [c, d]
          set: {x: data}
"""
    root = project({"flows/f.yaml": FLOW_WITH.format(extra=steps)})
    assert _errors(root) == [
        "flows/f.yaml:15:18: error[E_CYCLE] steps form a cycle: e -> d -> e (each needs the "
        "next; step 'e' needing 'd' closes it)"]


def test_unknown_environment_is_an_error(tmp_path: Path) -> None:
    root = _materialise("ref_step", tmp_path)
    result = CliRunner().invoke(main, ["validate", str(root), "--env", "prood"])
    assert result.exit_code == 1
    assert "error[E_ENV] unknown environment 'prood' (known: dev)" in result.output


def test_webhook_from_a_system_without_webhooks_block(project) -> None:
    root = project({
        "flows/f.yaml": """\
            apiVersion: syncline/v1
            kind: System
            metadata: {name: quiet}
            spec: {baseUrl: "http://127.0.0.1:9"}
            ---
            apiVersion: syncline/v1
            kind: Flow
            metadata: {name: f}
            spec:
              trigger: {webhook: {path: /hooks/q, system: quiet}}
              steps: [{id: s, set: {x: data}}]
        """,
    })
    with pytest.raises(DefinitionErrors) as caught:
        compile_project(root, environ={})
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == "E_TRIGGER"
    assert diagnostic.location.line == 10
    assert "system 'quiet' has no webhooks block" in diagnostic.message


def test_missing_project_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert "error[E_PROJECT] no syncline.yaml" in result.output


def _errors(root: Path) -> list[str]:
    with pytest.raises(DefinitionErrors) as caught:
        compile_project(root, environ={})
    return [d.format() for d in caught.value.diagnostics if d.severity == "error"]


FLOW_WITH = """\
    apiVersion: syncline/v1
    kind: Flow
    metadata: {{name: f}}
    spec:
      trigger: {{event: x.y}}
      steps:
        - id: s
          set: {{a: data}}
{extra}"""


@pytest.mark.parametrize(("when", "column"), [
    ("  when: data.a == ", 22),            # plain: the value at column 13, the end at offset 9
    ("  when: 'data.a == '", 24),          # quoted: the value at 14, offset 10 (a kept blank)
    ('  when: "data.(a"', 19),             # the stray '(' at offset 5
])
def test_expression_errors_point_inside_the_expression(project, when: str, column: int) -> None:
    step = f"        - id: t\n          set: {{b: data}}\n        {when}\n"
    root = project({"flows/f.yaml": FLOW_WITH.format(extra=step)})
    (error,) = _errors(root)
    assert error.startswith(f"flows/f.yaml:11:{column}: error[E_JMESPATH] invalid JMESPath")


def test_expression_error_in_a_block_scalar_points_at_the_field(project) -> None:
    step = "        - id: t\n          set: {b: data}\n          when: |\n            data.a ==\n"
    root = project({"flows/f.yaml": FLOW_WITH.format(extra=step)})
    (error,) = _errors(root)
    assert error.startswith("flows/f.yaml:11:7: error[E_JMESPATH]")  # the field: see README
    assert "incomplete expression at column 11" in error


def test_mapping_and_template_errors_point_inside_the_text(project) -> None:
    root = project({"mappings/m.yaml": """\
        apiVersion: syncline/v1
        kind: Mapping
        metadata: {name: m}
        spec:
          fields:
            a: "b[?"
            c: {expr: "length(d, e)"}
            f: {template: "{{ x | nosuchfilter }}"}
    """})
    assert _errors(root) == [
        "mappings/m.yaml:6:12: error[E_JMESPATH] invalid JMESPath: incomplete expression at "
        "column 4 of 'b[?'",
        "mappings/m.yaml:7:16: error[E_JMESPATH] invalid JMESPath: length() takes 1 argument, "
        "got 2 at column 1 of 'length(d, e)'",
        "mappings/m.yaml:8:20: error[E_TEMPLATE] invalid template: No filter named "
        "'nosuchfilter'. at line 1 of template '{{ x | nosuchfilter }}'",
    ]


def test_field_references_are_checked_against_what_the_step_produces(tmp_path: Path) -> None:
    errors = _errors(_materialise("field", tmp_path))
    assert errors[0] == ("defs/f.yaml:33:21: error[E_FIELD] the source Schema 'invoice@1' has no "
                         "field 'account', so this is always null")
    assert errors[3] == (
        "defs/f.yaml:48:28: error[E_FIELD] steps.payment has no field 'crm_acount_id' (did you "
        "mean 'crm_account_id'?), so this is always null")
    assert errors[1] == ("defs/f.yaml:41:26: error[E_FIELD] data.lines[] has no field 'skew', "
                         "so this is always null")


def test_field_references_stay_silent_where_the_shape_is_open_or_unknown(project) -> None:
    root = project({"flows/f.yaml": """\
        apiVersion: syncline/v1
        kind: Schema
        metadata: {name: open}
        spec: {jsonSchema: {type: object, properties: {a: {type: object}}}}
        ---
        apiVersion: syncline/v1
        kind: Mapping
        metadata: {name: m}
        spec: {source: open, fields: {a: a}}
        ---
        apiVersion: syncline/v1
        kind: Flow
        metadata: {name: f}
        spec:
          trigger: {event: x.y}
          filter: "data.anything"
          steps:
            - {id: m, map: m}
            - {id: v, validate: {schema: open, input: data}}
            - {id: s, set: {x: "steps.m.a.deep.er", y: "steps.v.b", z: "steps.m.a[0]"}}
            - {id: t, set: {w: "steps.s.x.y", q: "length(steps.s) > `0`"}}
    """})
    compile_project(root, environ={})


CASCADE = {
    "flows/a.yaml": """\
        apiVersion: syncline/v1
        kind: Flow
        metadata: {name: f}
        spec:
          trigger: {event: x.y}
          steps:
            - {id: order, map: to-order}
            - {id: check, validate: {schema: order}}
            - {id: again, set: {x: {map: to-order, input: data}}}
            - {id: sub, map: to-subscription}
            - {id: typo, map: to-ordr}
    """,
    "mappings/z.yaml": """\
        apiVersion: syncline/v1
        kind: Schema
        metadata: {name: order}
        spec:
          jsonSchema: {type: object}
          jsonSchema: {type: string}
        ---
        apiVersion: syncline/v1
        kind: Mapping
        metadata:
          name: to-order
        spec: {target: order, fields: {id: Id}}
    """,
    "mappings/y.yaml": """\
        apiVersion: syncline/v1
        kind: Mapping
        metadata: {name: to-subscription}
        spec: {fields: {id: Id}, feilds: {}}
    """,
}


def test_a_document_that_fails_to_load_causes_no_other_errors_and_comes_first(project) -> None:
    errors = _errors(project(CASCADE))
    assert [e.split(" ", 2)[:2] for e in errors] == [
        ["mappings/z.yaml:6:3:", "error[E_YAML_DUPKEY]"],
        ["mappings/y.yaml:4:26:", "error[E_UNKNOWN_FIELD]"],
        ["flows/a.yaml:11:18:", "error[E_REF]"],  # to-ordr: a real unknown name
    ]


def test_a_field_in_the_wrong_place_says_where_it_belongs(project) -> None:
    root = project({"flows/f.yaml": FLOW_WITH.format(extra="""\
        - id: t
          call: {system: erp, operation: create, retry: saas-api}
          retyr: saas-api
""")})
    assert _errors(root) == [
        "flows/f.yaml:10:46: error[E_UNKNOWN_FIELD] spec.steps[1].call: unknown field 'retry' "
        "('retry' belongs to the step, not to call:)",
        "flows/f.yaml:11:7: error[E_UNKNOWN_FIELD] spec.steps[1]: unknown field 'retyr' "
        "(did you mean 'retry'?)",
    ]


def test_a_typo_in_a_mapping_target_field_suggests_the_schema_field(tmp_path: Path) -> None:
    errors = _errors(_materialise("target", tmp_path))
    assert errors[0] == ("defs/s.yaml:18:5: error[E_TARGET] target field 'customer.nmae' does "
                         "not exist in schema 'order@1' (did you mean 'customer.name'?)")
