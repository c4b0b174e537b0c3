"""`syncline promote`: the target's pins become the source's, the rest of syncline.yaml stays
byte for byte, and a second run changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.compiler import compile_project
from engine.errors import UsageError
from engine.gitops.promote import promote_text
from tests.gitops_kit import FILES, FLOW, run, write

ODD = """\
# Acme's integrations.   Keep this header!
apiVersion: "syncline/v1"
kind:   Project    # odd spacing stays

metadata: { name: 'shop',  owner: "tests" }
spec:
    paths: [flows,   mappings ,policies]

    environments:
        # dev runs whatever is newest, pinned by hand
        dev:
            vars: {ERP_URL: "http://127.0.0.1:9"}   # local sandbox
            pins:
                order-flow:   2     # the new one


        staging:
            vars:
                ERP_URL: 'https://erp.staging.example.com'
        # prod: change only through promote
        prod:
            vars: { ERP_URL: "https://erp.example.com" }
            pins: {order-flow: 1}   # pinned after the incident
# end
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    flow_v2 = FLOW.replace("version: 1", "version: 2").replace("body: steps.order", "body: data")
    write(tmp_path, {**FILES, "syncline.yaml": ODD, "flows/order-flow-v2.yaml": flow_v2})
    return tmp_path


def test_promote_changes_only_the_pins(project: Path) -> None:
    result = run("promote", "--from", "dev", "--to", "prod", "--project", str(project))
    assert result.exit_code == 0, result.output
    expected = ODD.replace("pins: {order-flow: 1}   # pinned", "pins: {order-flow: 2}   # pinned")
    assert (project / "syncline.yaml").read_text() == expected
    lines = result.output.splitlines()
    assert lines[0] == (
        "promote dev -> prod: pins {'order-flow': 1} -> {'order-flow': 2}; wrote syncline.yaml"
    )
    assert lines[1] == "Plan for shop [prod]: prod before -> prod now"
    assert "  ~ environment prod\n      ~ pins.order-flow: 1 -> 2\n" in result.output
    assert "Active versions:\n  ~ Flow order-flow: 1 -> 2\n" in result.output
    assert lines[-1] == "Plan: 0 to add, 1 to change, 0 to remove; 0 breaking."


def test_promoting_twice_changes_nothing_the_second_time(project: Path) -> None:
    assert run("promote", "--from", "dev", "--to", "prod", "--project", str(project)).exit_code == 0
    once = (project / "syncline.yaml").read_bytes()
    stamp = (project / "syncline.yaml").stat().st_mtime_ns
    result = run("promote", "--from", "dev", "--to", "prod", "--project", str(project))
    assert result.exit_code == 0, result.output
    assert (project / "syncline.yaml").read_bytes() == once
    assert (project / "syncline.yaml").stat().st_mtime_ns == stamp  # not even rewritten
    assert result.output.splitlines()[0] == (
        "promote dev -> prod: pins {'order-flow': 2} -> {'order-flow': 2}; syncline.yaml unchanged"
    )
    assert "No changes." in result.output


def test_promote_into_an_environment_without_pins(project: Path) -> None:
    result = run("promote", "--from", "dev", "--to", "staging", "--project", str(project))
    assert result.exit_code == 0, result.output
    expected = ODD.replace(
        "                ERP_URL: 'https://erp.staging.example.com'\n",
        "                ERP_URL: 'https://erp.staging.example.com'\n"
        "            pins:\n"
        "                order-flow: 2\n",
    )
    assert (project / "syncline.yaml").read_text() == expected
    assert "  ~ environment staging\n      + pins.order-flow: 2\n" in result.output
    assert "Active versions:" not in result.output  # staging already ran the newest version


def test_promote_pins_what_an_unpinned_source_runs(project: Path) -> None:
    # staging pins nothing and runs the newest order-flow (2): prod is pinned to 2, not left
    # unpinned, where it would float to whatever version is merged next without a promotion
    result = run("promote", "--from", "staging", "--to", "prod", "--project", str(project))
    assert result.exit_code == 0, result.output
    expected = ODD.replace("pins: {order-flow: 1}   # pinned", "pins: {order-flow: 2}   # pinned")
    assert (project / "syncline.yaml").read_text() == expected
    flow_v3 = (project / "flows/order-flow-v2.yaml").read_text().replace("version: 2", "version: 3")
    (project / "flows/order-flow-v3.yaml").write_text(flow_v3)
    plan = compile_project(project, environment="prod", environ={})
    assert plan.flows["order-flow"].version == 2  # merged, not promoted: prod stays
    again = run("promote", "--from", "staging", "--to", "prod", "--project", str(project))
    assert "pins {'order-flow': 2} -> {'order-flow': 3}; wrote syncline.yaml" in again.output


def test_promote_from_an_unpinned_source_pins_every_flow_it_runs(project: Path) -> None:
    result = run("promote", "--from", "staging", "--to", "dev", "--project", str(project))
    assert result.exit_code == 0, result.output
    assert "pins {'order-flow': 2} -> {'order-flow': 2}; syncline.yaml unchanged" in result.output
    assert (project / "syncline.yaml").read_text() == ODD


def test_block_pins_keep_their_indentation() -> None:
    text = (
        "spec:\n  environments:\n    dev:\n      pins:\n        a: 3\n        b: 1\n"
        "    prod:\n      pins:\n        a: 1   # old\n      vars: {}\n"
    )
    promoted = promote_text(text, "dev", "prod")
    assert promoted.text == (
        "spec:\n  environments:\n    dev:\n      pins:\n        a: 3\n"
        "        b: 1\n    prod:\n      pins:\n        a: 3   # old\n        b: 1\n"
        "      vars: {}\n"
    )


def test_the_targets_pins_keep_their_order_comments_and_quoting() -> None:
    """A kept pin changes its version in place; a dropped pin loses its own line only; a new
    pin goes after the last one."""
    text = (
        "spec:\n  environments:\n    dev: {pins: {c: 4, a: 2, b: 7}}\n    prod:\n      pins:\n"
        "        # reviewed by finance\n        b: '1'    # b, quoted\n"
        "        x: 1  # retired\n\n        a: 1 # a\n      vars: {}\n"
    )
    assert promote_text(text, "dev", "prod").text == (
        "spec:\n  environments:\n    dev: {pins: {c: 4, a: 2, b: 7}}\n    prod:\n      pins:\n"
        "        # reviewed by finance\n        b: 7    # b, quoted\n"
        "\n        a: 2 # a\n        c: 4\n      vars: {}\n"
    )
    flow = "spec:\n  environments:\n    dev: {pins: {a: 2}}\n    prod: {pins: {'a': 1}}  # !\n"
    assert promote_text(flow, "dev", "prod").text == flow.replace("'a': 1", "'a': 2")
    reordered = flow.replace("{pins: {a: 2}}", "{pins: {b: 3, a: 2}}")
    assert promote_text(reordered, "dev", "prod").text == reordered.replace(
        "{'a': 1}", "{a: 2, b: 3}"
    )


def test_a_file_without_a_final_line_break_keeps_it_so() -> None:
    text = "spec:\n  environments:\n    dev: {pins: {c: 4}}\n    prod:\n      pins:\n        a: 1"
    assert promote_text(text, "dev", "prod").text == text.replace("a: 1", "c: 4")


def test_windows_line_endings_are_kept() -> None:
    text = "spec:\r\n  environments:\r\n    dev: {pins: {a: 2}}\r\n    prod:\r\n      vars: {}\r\n"
    promoted = promote_text(text, "dev", "prod")
    assert promoted.text == text + "      pins:\r\n        a: 2\r\n"


def test_flow_style_environments() -> None:
    text = "spec:\n  environments: {dev: {pins: {a: 2}}, prod: { vars: {X: 1} }, qa: {}}\n"
    assert promote_text(text, "dev", "prod").text == (
        "spec:\n  environments: {dev: {pins: {a: 2}}, prod: { vars: {X: 1}, pins: {a: 2} }, "
        "qa: {}}\n"
    )
    assert promote_text(text, "dev", "qa").text == (
        "spec:\n  environments: {dev: {pins: {a: 2}}, prod: { vars: {X: 1} }, qa: {pins: {a: 2}}}\n"
    )


def test_unknown_environment_is_a_usage_error(project: Path) -> None:
    result = run("promote", "--from", "dev", "--to", "prood", "--project", str(project))
    assert result.exit_code == 2
    assert "unknown environment 'prood' (known: dev, staging, prod)" in result.output
    assert (project / "syncline.yaml").read_text() == ODD
    with pytest.raises(UsageError, match="same environment"):
        promote_text(ODD, "dev", "dev")


def test_nothing_is_written_when_the_source_does_not_compile(project: Path) -> None:
    (project / "flows/order-flow-v2.yaml").unlink()  # dev pins a version that is gone
    result = run("promote", "--from", "dev", "--to", "prod", "--project", str(project))
    assert result.exit_code == 1
    assert "dev does not compile; nothing written:" in result.output
    assert "error[E_REF] environment 'dev' pins Flow 'order-flow@2'" in result.output
    assert (project / "syncline.yaml").read_text() == ODD


def test_json_format(project: Path) -> None:
    result = run(
        "promote", "--from", "dev", "--to", "prod", "--project", str(project), "--format", "json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["changed"], report["old_pins"], report["new_pins"]) == (
        True, {"order-flow": 1}, {"order-flow": 2}
    )
    assert report["plan"]["environment"] == "prod"
    assert report["plan"]["active"] == [{"kind": "Flow", "name": "order-flow", "old": 1, "new": 2}]
    again = json.loads(run(
        "promote", "--from", "dev", "--to", "prod", "--project", str(project), "--format", "json"
    ).output)
    assert again["changed"] is False and again["plan"]["summary"]["change"] == 0
