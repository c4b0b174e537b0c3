"""The plan: references, step graph from expression ASTs, environments, secrets, the digest."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterator, Mapping
from pathlib import Path

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from ruamel.yaml import YAML

from engine.compiler import compile_bundle, compile_project
from engine.compiler.graph import DependencyGraph
from engine.errors import DefinitionErrors

ROOT = Path(__file__).parent.parent

SYSTEM = """\
apiVersion: syncline/v1
kind: System
metadata: {name: erp, owner: finance}
spec:
  baseUrl: ${env.TARGET_URL}
  auth: {type: bearer, token: "${secret.ERP_TOKEN}"}
  operations:
    create: {method: POST, path: /orders}
    cancel: {method: POST, path: "/orders/{id}/cancel"}
"""

FLOW = """\
apiVersion: syncline/v1
kind: Flow
metadata: {name: f, owner: revops}
spec:
  trigger: {event: com.acme.order.placed}
  steps:
    - id: a
      set: {x: data.x}
    - id: b
      set: {lines: "data.items[].steps.a"}        # inside a projection: not a step reference
    - id: c
      when: "steps.a.x > `1`"
      call: {system: erp, operation: create, body: {template: "{{ steps.b.lines }}"}}
      compensate: {system: erp, operation: cancel, params: {id: steps.c.body.id}}
    - id: d
      needs: [b]
      emit: {type: com.acme.order.synced, data: "{id: steps.c.body.id}"}
"""


def test_reference_project_compiles() -> None:
    plan = compile_project(ROOT, environ={})
    assert "closed-won-to-order" in plan.flows
    assert plan.digest.startswith("sha256:")


def test_implicit_dependencies_come_from_expression_and_template_asts(project) -> None:
    plan = compile_project(project({"flows/s.yaml": SYSTEM, "flows/f.yaml": FLOW}), environ={})
    flow = plan.flows["f"]
    needs = {s.id: set(s.needs) for s in flow.steps}
    assert needs == {"a": set(), "b": set(), "c": {"a", "b"}, "d": {"b", "c"}}
    assert [s.id for s in flow.steps] == ["a", "b", "c", "d"]
    assert flow.emits == ("com.acme.order.synced",)


def test_plan_is_immutable(project) -> None:
    plan = compile_project(project({"flows/s.yaml": SYSTEM, "flows/f.yaml": FLOW}), environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.digest = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        plan.flows["g"] = plan.flows["f"]  # type: ignore[index]


def _reachable(root: object) -> Iterator[object]:
    """Every object reachable from `root` through fields, mappings and sequences."""
    seen: set[int] = set()
    todo = [root]
    while todo:
        node = todo.pop()
        if id(node) in seen or isinstance(node, (str, bytes, int, float, type(None))):
            continue
        seen.add(id(node))
        yield node
        if isinstance(node, Mapping):
            todo.extend(node.keys())
            todo.extend(node.values())
        elif isinstance(node, (list, tuple, set, frozenset)):
            todo.extend(node)
        elif dataclasses.is_dataclass(node) and not isinstance(node, type):
            todo.extend(getattr(node, f.name) for f in dataclasses.fields(node))
        elif hasattr(node, "__dict__") and not callable(node):
            todo.extend(vars(node).values())


def test_a_plan_holds_no_pydantic_model_and_no_graph() -> None:
    plan = compile_project(ROOT, environ={})
    found = {type(node).__name__ for node in _reachable(plan)
             if isinstance(node, (BaseModel, nx.Graph, DependencyGraph))}
    assert found == set()
    records = {type(node).__name__ for node in _reachable(plan)}
    assert {"RetryPolicySpec", "Operation", "Auth", "FlowTest", "MappingTest"} <= records


def test_the_bundle_inside_a_plan_cannot_be_changed(project) -> None:
    plan = compile_project(project({"flows/s.yaml": SYSTEM, "flows/f.yaml": FLOW}), environ={})
    bundle = plan.bundle
    bundle["documents"].clear()
    bundle["project"] = "other"
    assert plan.bundle["project"] != "other" and plan.bundle["documents"]
    assert compile_bundle(plan.bundle).digest == plan.digest


def test_environment_values_are_resolved_and_secrets_never_are(project) -> None:
    root = project({"flows/s.yaml": SYSTEM, "flows/f.yaml": FLOW})
    plan = compile_project(root, environ={"SYNCLINE_SECRET_ERP_TOKEN": "s3cr3t-value"})
    system = plan.system("erp")
    assert system.base_url == "http://127.0.0.1:9"
    assert system.auth.token == "${secret.ERP_TOKEN}"
    assert plan.secret_names == {"ERP_TOKEN"}
    assert "s3cr3t-value" not in json.dumps(dict(plan.bundle), default=str)


def test_process_environment_fills_missing_vars_the_project_allows(project) -> None:
    root = project({"flows/s.yaml": SYSTEM.replace("TARGET_URL", "OTHER_URL")})
    with pytest.raises(DefinitionErrors, match="list it in spec.processEnv"):
        compile_project(root, environ={"OTHER_URL": "http://other"})   # not allowed: unread
    allowing = (root / "syncline.yaml").read_text().replace(
        "  paths:", "  processEnv: [OTHER_URL]\n  paths:")
    (root / "syncline.yaml").write_text(allowing)
    plan = compile_project(root, environ={"OTHER_URL": "http://other"})
    assert plan.system("erp").base_url == "http://other"


def test_a_definition_never_reads_a_syncline_credential_from_the_process(project) -> None:
    leak = "tok-9f8e7d6c5b4a"
    root = project({"mappings/m.yaml": """\
        apiVersion: syncline/v1
        kind: Mapping
        metadata: {name: m}
        spec: {fields: {a: {const: "${env.SYNCLINE_SECRET_TOP}"}}}
    """})
    environ = {"SYNCLINE_SECRET_TOP": leak, "SYNCLINE_ADMIN_TOKEN": leak}
    with pytest.raises(DefinitionErrors) as caught:
        compile_project(root, environ=environ)
    assert [d.code for d in caught.value.diagnostics] == ["E_INTERP"]
    assert leak not in str(caught.value)
    listing = (root / "syncline.yaml").read_text().replace(
        "  paths:", "  processEnv: [SYNCLINE_SECRET_TOP]\n  paths:")
    (root / "syncline.yaml").write_text(listing)
    with pytest.raises(DefinitionErrors, match="never a SYNCLINE_\\* credential"):
        compile_project(root, environ=environ)


def test_bundle_recompiles_to_the_same_digest(project) -> None:
    plan = compile_project(project({"flows/s.yaml": SYSTEM, "flows/f.yaml": FLOW}), environ={})
    again = compile_bundle(json.loads(json.dumps(dict(plan.bundle))))
    assert again.digest == plan.digest
    assert list(again.flows) == ["f"]


def test_pins_choose_the_active_flow_version(project) -> None:
    v2 = FLOW.replace("name: f, owner", "name: f, version: 2, owner")
    root = project({"flows/s.yaml": SYSTEM, "flows/f1.yaml": FLOW, "flows/f2.yaml": v2})
    assert compile_project(root, environ={}).flows["f"].version == 2
    pinned = (root / "syncline.yaml").read_text() + "      pins: {f: 1}\n"
    (root / "syncline.yaml").write_text(pinned)
    plan = compile_project(root, environ={})
    assert plan.flows["f"].version == 1
    assert set(plan.flow_versions) == {("f", 1), ("f", 2)}


def test_identical_duplicate_documents_are_harmless(project) -> None:
    root = project({"flows/s.yaml": SYSTEM, "flows/copy.yaml": SYSTEM})
    assert len(compile_project(root, environ={}).systems) == 1


def test_step_references_in_trigger_expressions_are_refused(project) -> None:
    flow = FLOW.replace("trigger: {event: com.acme.order.placed}",
                        "trigger: {event: com.acme.order.placed}\n  filter: steps.a.x")
    with pytest.raises(DefinitionErrors) as caught:
        compile_project(project({"flows/s.yaml": SYSTEM, "flows/f.yaml": flow}), environ={})
    assert "steps.a is not available here" in str(caught.value)


# --- the digest ---------------------------------------------------------------------------

DOCS = [SYSTEM, FLOW, """\
apiVersion: syncline/v1
kind: RetryPolicy
metadata: {name: r, owner: platform}
spec: {maxAttempts: 3, backoff: {initial: 1s, max: 1m}}
"""]


def _write(root: Path, docs: list[str], rng: random.Random) -> None:
    """Spread documents over files in random order, reformatted with shuffled keys."""
    yaml = YAML()
    yaml.default_flow_style = rng.choice([False, None])
    files: dict[int, list[str]] = {}
    for text in rng.sample(docs, len(docs)):
        data = yaml.load(text)
        data = _shuffled(data, rng)
        files.setdefault(rng.randrange(3), []).append(data)
    for n, items in files.items():
        path = root / "flows" / f"file{n}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as fh:
            fh.write(f"# generated {rng.random()}\n")
            yaml.dump_all(items, fh)


def _shuffled(value, rng):
    if isinstance(value, dict):
        keys = list(value)
        rng.shuffle(keys)
        return {k: _shuffled(value[k], rng) for k in keys}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


@settings(max_examples=15, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_digest_is_stable_under_file_order_key_order_comments_and_style(tmp_path_factory, seed):
    from tests.projectkit import PROJECT_FILE

    digests = set()
    for attempt in range(2):
        root = tmp_path_factory.mktemp(f"p{attempt}")
        (root / "syncline.yaml").write_text(PROJECT_FILE)
        _write(root, DOCS, random.Random(seed + attempt))
        digests.add(compile_project(root, environ={}).digest)
    assert len(digests) == 1


@pytest.mark.parametrize("old, new", [
    ("maxAttempts: 3", "maxAttempts: 4"),
    ("path: /orders}", "path: /orders/}"),
    ("set: {x: data.x}", "set: {x: data.y}"),
    ("owner: finance", "owner: billing"),
])
def test_digest_changes_with_any_semantic_value(project, old, new) -> None:
    base = {"flows/s.yaml": SYSTEM, "flows/f.yaml": FLOW, "policies/r.yaml": DOCS[2]}
    before = compile_project(project(base), environ={}).digest
    changed = {k: v.replace(old, new) for k, v in base.items()}
    assert changed != base
    after = compile_project(project(changed), environ={}).digest
    assert before != after


def test_digest_covers_environment_values_but_not_secret_values(project) -> None:
    root = project({"flows/s.yaml": SYSTEM})
    one = compile_project(root, environ={"SYNCLINE_SECRET_ERP_TOKEN": "a"}).digest
    two = compile_project(root, environ={"SYNCLINE_SECRET_ERP_TOKEN": "b"}).digest
    assert one == two
    text = (root / "syncline.yaml").read_text().replace("127.0.0.1:9", "127.0.0.1:10")
    (root / "syncline.yaml").write_text(text)
    assert compile_project(root, environ={}).digest != one


def test_generated_python_compiles_on_first_use_or_when_the_plan_is_warmed() -> None:
    plan = compile_project(ROOT, environ={})
    transforms = [mapping.transform for mapping in plan.mappings.values()]
    assert transforms and all(t._function is None for t in transforms)  # validate pays nothing
    count = plan.warm()
    assert count >= len(transforms)
    assert all(t._function is not None for t in transforms)
    assert plan.warm() == count  # warming twice finds the same functions, compiles nothing new
    flow = plan.flow("closed-won-to-order")
    assert flow.idempotency_key is not None
    assert "_evaluate" in vars(flow.idempotency_key)  # compiled, cached on the expression


def test_serve_warms_the_plan_it_serves(project, tmp_path: Path) -> None:
    from engine.server.config import ServerConfig
    from engine.server.serve import build_server

    fresh = FLOW.replace("> `1`", "> `424242`")  # a text no other test compiled (nor warmed)
    root = project({"flows/s.yaml": SYSTEM, "flows/f.yaml": fresh})
    config = ServerConfig.from_environ({}, project=root, environment=None, watch=False)
    _, state = build_server(
        config, environ={}, secrets={"ERP_TOKEN": "t"}, database=str(tmp_path / "s.db")
    )
    [step] = [step for step in state.runtime.plan.flow("f").steps if step.id == "c"]
    assert "_evaluate" in vars(step.when)  # compiled before any event arrives
