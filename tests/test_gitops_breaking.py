"""Breaking schema changes: one test per kind through `syncline plan` between two commits, the
in-place edit error, and what is not breaking."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.gitops.breaking import breaking_changes
from tests.gitops_kit import FILES, MAPPING, SCHEMA, commit, new_repo, run

V2 = SCHEMA.replace("version: 1", "version: 2")


def plan_after(tmp_path: Path, order_v2: str, mapping: str = MAPPING) -> str:
    """Commit the project, then order@2 (the mapping moved to it); the plan's output, which
    must fail with --fail-on breaking."""
    _, project = new_repo(tmp_path)
    commit(project, "order@1", dict(FILES))
    commit(
        project,
        "order@2",
        {
            "mappings/order-v2.yaml": order_v2,
            "mappings/to-order.yaml": mapping.replace("order@1", "order@2"),
        },
    )
    result = run("plan", str(project), "--base", "HEAD~1", "--fail-on", "breaking")
    assert result.exit_code == 1, result.output
    assert "Active versions:\n  ~ Schema order: 1 -> 2\n" in result.output
    return result.output


def test_removed_field(tmp_path: Path) -> None:
    output = plan_after(
        tmp_path,
        V2.replace("      amount: {type: number}\n", ""),
        MAPPING.replace("    amount: Amount\n", ""),
    )
    assert "  ! Schema order@1 -> order@2: removed field 'amount'\n" in output


def test_renamed_field(tmp_path: Path) -> None:
    output = plan_after(
        tmp_path,
        V2.replace("amount: {type: number}", "total: {type: number}"),
        MAPPING.replace("amount: Amount", "total: Amount"),
    )
    assert "  ! Schema order@1 -> order@2: renamed field 'amount' to 'total'\n" in output
    assert "removed field" not in output


def test_changed_type(tmp_path: Path) -> None:
    output = plan_after(tmp_path, V2.replace("amount: {type: number}", "amount: {type: string}"))
    assert "  ! Schema order@1 -> order@2: changed type of 'amount': number -> string\n" in output


def test_newly_required_field(tmp_path: Path) -> None:
    output = plan_after(tmp_path, V2.replace("required: [id]", "required: [id, amount]"))
    assert "  ! Schema order@1 -> order@2: 'amount' is newly required\n" in output


def test_narrowed_enum(tmp_path: Path) -> None:
    output = plan_after(tmp_path, V2.replace("enum: [open, won, lost]", "enum: [open, won]"))
    assert (
        "  ! Schema order@1 -> order@2: narrowed the enum of 'status': 'lost' no longer allowed\n"
    ) in output


def test_editing_a_schema_in_place_incompatibly_is_an_error(tmp_path: Path) -> None:
    _, project = new_repo(tmp_path)
    commit(project, "order@1", dict(FILES))
    commit(
        project,
        "edit order@1",
        {
            "mappings/order.yaml": SCHEMA.replace(
                "amount: {type: number}", "amount: {type: string}"
            ),
        },
    )
    result = run("plan", str(project), "--base", "HEAD~1")  # an error even without --fail-on
    assert result.exit_code == 1, result.output
    assert (
        "  ! Schema order@1 (edited in place): changed type of 'amount': number -> string\n"
        in result.output
    )
    assert (
        "mappings/order.yaml:11:16: error[E_SCHEMA_INPLACE] Schema 'order@1' was changed "
        "incompatibly in place (changed type of 'amount': number -> string): keep order@1 "
        "as it was and add the change as metadata.version 2, then move the mappings and "
        "flows that need it to order@2\n"
    ) in result.output


def test_a_compatible_in_place_edit_is_fine(tmp_path: Path) -> None:
    _, project = new_repo(tmp_path)
    commit(project, "order@1", dict(FILES))
    commit(
        project,
        "optional note",
        {
            "mappings/order.yaml": SCHEMA + "      note: {type: string}\n",
        },
    )
    result = run("plan", str(project), "--base", "HEAD~1", "--fail-on", "breaking")
    assert result.exit_code == 0, result.output
    assert result.output.endswith("Plan: 0 to add, 1 to change, 0 to remove; 0 breaking.\n")


OLD = {
    "type": "object",
    "required": ["id"],
    "properties": {
        "id": {"type": "string"},
        "qty": {"type": "integer"},
        "kind": {"type": "string", "enum": ["a", "b"]},
        "lines": {
            "type": "array",
            "items": {"type": "object", "properties": {"sku": {"type": "string"}}},
        },
    },
}


def _with(**changes: object) -> dict[str, object]:
    properties = {**OLD["properties"], **changes}  # type: ignore[dict-item]
    return {**OLD, "properties": {k: v for k, v in properties.items() if v is not None}}


@pytest.mark.parametrize(
    "new",
    [
        _with(note={"type": "string"}),  # a new optional field
        _with(qty={"type": "number"}),  # integer -> number widens
        _with(kind={"type": "string", "enum": ["a", "b", "c"]}),  # a wider enum
        _with(kind={"type": "string"}),  # no enum any more
        {**OLD, "required": []},  # nothing required
    ],
    ids=["optional-field", "integer-to-number", "wider-enum", "enum-dropped", "less-required"],
)
def test_not_breaking(new: dict[str, object]) -> None:
    assert breaking_changes(OLD, new) == []


@pytest.mark.parametrize(
    "new, expected",
    [
        ({**_with(note={"type": "string"}), "required": ["id", "note"]}, ("required", "note")),
        (_with(qty={"type": "integer", "enum": [1, 2]}), ("enum", "qty")),
        (_with(kind={"type": "string", "const": "a"}), ("enum", "kind")),
        (_with(qty={"type": ["integer", "null"]}), None),
        (_with(qty={"type": "string"}), ("type", "qty")),
        (_with(id={}), None),
        (_with(qty=None), ("removed", "qty")),
    ],
    ids=["new-required-field", "enum-where-none", "const", "nullable", "int-to-string",
         "type-dropped", "removed"],
)
def test_breaking(new: dict[str, object], expected: tuple[str, str] | None) -> None:
    found = [(c.kind, c.field) for c in breaking_changes(OLD, new)]
    assert found == ([expected] if expected else [])


def test_nested_fields_are_named_by_path() -> None:
    new = _with(
        lines={
            "type": "array",
            "items": {"type": "object", "properties": {"sku": {"type": "integer"}}},
        }
    )
    (change,) = breaking_changes(OLD, new)
    assert (change.kind, change.field) == ("type", "lines[].sku")
    assert change.path == ("properties", "lines", "items", "properties", "sku", "type")


def test_a_lookalike_elsewhere_is_a_removal_not_a_rename() -> None:
    new = _with(id=None, status={"type": "string"})
    kinds = [(c.kind, c.field) for c in breaking_changes(OLD, new)]
    assert kinds == [("removed", "id")]


def test_a_rename_in_place_keeps_its_neighbour() -> None:
    properties = dict(OLD["properties"])  # type: ignore[call-overload]
    renamed = {("count" if k == "qty" else k): v for k, v in properties.items()}
    (change,) = breaking_changes(OLD, {**OLD, "properties": renamed})
    assert (change.kind, change.field, change.message) == (
        "renamed",
        "qty",
        "renamed field 'qty' to 'count'",
    )
