"""GovernancePolicy: house rules the compiler checks over every definition.

A rule `match`es resources by kind (or "*"), a name glob, labels and optionally the environments
it applies to; its `assert` is a JMESPath expression over the whole resource as written, after
`${env.NAME}` interpolation (so a rule about `baseUrl` sees the environment's URL; secrets stay
references). Beside the resource's own `apiVersion`, `kind`, `metadata` and `spec`, the expression
sees `project`: `{name, environment, defaults}` of `syncline.yaml`, for rules about what a
resource inherits (a System's calls fall back to `project.defaults.retry`). A falsy result (null,
false, "", [] or {}, as JMESPath counts truth) is a violation, reported like a compile error at
the resource: E_POLICY for `severity: error` (fails validate), W_POLICY for `severity: warning`
(printed only). An `assert` that does not compile is E_JMESPATH at the rule.

    kind: GovernancePolicy
    metadata: {name: house-rules, owner: platform}
    spec:
      rules:
        - id: prod-https
          match: {kind: System, environments: [prod]}
          assert: "starts_with(spec.baseUrl, 'https://')"
          message: prod systems use https
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from engine.compiler.expressions import Expression, compile_expression
from engine.compiler.resolve import Registry
from engine.errors import ExpressionError, ExpressionSyntaxError
from engine.loader import Document
from engine.model import MODELS, GovernancePolicy, Resource
from engine.model.base import suggest
from engine.model.policy import GovernanceRule, RuleMatch
from engine.source import Diagnostic

Located = tuple[Resource, Document]
CODES = {"error": "E_POLICY", "warning": "W_POLICY"}


@dataclass(frozen=True)
class CompiledRule:
    """One rule, its `assert` compiled once."""

    policy: str  # the GovernancePolicy's name
    rule: GovernanceRule
    expression: Expression
    focus: tuple[str | int, ...]  # where a violation points: the path the assert reads


def check_governance(
    policies: Iterable[Located],
    resources: Iterable[Located],
    environment: str | None = None,
    project: Mapping[str, Any] | None = None,
) -> list[Diagnostic]:
    """Every violation of every rule by every resource, plus the rules' own errors. `project`
    is what an assert sees as `project` (name, environment, defaults)."""
    rules, diagnostics = compile_rules(policies)
    context = dict(project or {"environment": environment})
    for resource, doc in resources:
        applicable = [c for c in rules if matches(c.rule.match, resource, environment)]
        if not applicable:
            continue
        seen = {**doc.data, "project": context} if isinstance(doc.data, dict) else doc.data
        for compiled in applicable:
            diagnostics.extend(_check(compiled, resource, doc, seen))
    return diagnostics


def check_registry(
    registry: Registry, environment: str, project: Mapping[str, Any] | None = None
) -> list[Diagnostic]:
    """`check_governance` over every resource of a bundle (the Project file is not a
    definition and is not checked, but its name, environment and defaults are `project`)."""
    resources = [item for kind in MODELS for item in registry.all(kind)]
    return check_governance(registry.all("GovernancePolicy"), resources, environment, project)


def compile_rules(policies: Iterable[Located]) -> tuple[list[CompiledRule], list[Diagnostic]]:
    """Compile each rule's `assert`; a bad expression or an unknown kind is reported at the rule."""
    rules: list[CompiledRule] = []
    diagnostics: list[Diagnostic] = []
    for policy, doc in policies:
        assert isinstance(policy, GovernancePolicy)
        for index, rule in enumerate(policy.spec.rules):
            where = ("spec", "rules", index)
            kind = rule.match.kind
            if kind != "*" and kind not in MODELS:
                diagnostics.append(
                    Diagnostic(
                        doc.locate(where + ("match", "kind")),
                        "E_POLICY",
                        f"{rule.id}: unknown kind '{kind}'{suggest(kind, list(MODELS))}",
                    )
                )
            try:
                expression = compile_expression(rule.assert_)
            except ExpressionSyntaxError as exc:
                diagnostics.append(exc.at(
                    doc.locate_in(where + ("assert",), exc.offset),
                    f"{rule.id}: invalid JMESPath '{rule.assert_}': {exc.message}",
                ))
                continue
            rules.append(CompiledRule(policy.name, rule, expression, leading_path(expression.ast)))
    return rules, diagnostics


def matches(match: RuleMatch, resource: Resource, environment: str | None) -> bool:
    """Whether a rule applies to a resource (in an environment)."""
    kind = str(getattr(resource, "kind", ""))
    if match.kind not in ("*", kind):
        return False
    if match.name is not None and not fnmatchcase(resource.name, match.name):
        return False
    labels = resource.metadata.labels
    if any(labels.get(key) != value for key, value in match.labels.items()):
        return False
    return not match.environments or environment in match.environments


def _check(
    compiled: CompiledRule, resource: Resource, doc: Document, seen: Any
) -> list[Diagnostic]:
    rule = compiled.rule
    try:
        result = compiled.expression.search(seen)
        problem = ""
    except ExpressionError as exc:
        result, problem = None, f" (the assert could not be evaluated: {exc})"
    if truthy(result):
        return []
    what = f"{getattr(resource, 'kind', '')} '{resource.ident}'"
    message = f"{rule.id}: {rule.message} ({what}, policy '{compiled.policy}'){problem}"
    return [
        Diagnostic(
            doc.locate(compiled.focus or ("metadata",)),
            CODES[rule.severity],
            message,
            rule.severity,
        )
    ]


def truthy(value: Any) -> bool:
    """JMESPath truth: null, false, "", [] and {} are false; 0 is true."""
    return not (value is None or value is False or value in ("", [], {}))


def leading_path(node: Any) -> tuple[str | int, ...]:
    """The first field path an expression reads from the resource (`metadata.owner`,
    `spec.baseUrl` inside `starts_with(...)`), so a violation points at the closest line."""
    kind = node.get("type")
    children = [c for c in node.get("children", ()) if isinstance(c, dict)]
    if kind == "field":
        return (node["value"],)
    if kind == "subexpression" and children:
        path = leading_path(children[0])
        for child in children[1:]:
            if child.get("type") != "field":
                break
            path += (child["value"],)
        return path
    if kind == "index_expression" and len(children) == 2:
        index = children[1].get("value")
        return leading_path(children[0]) + ((index,) if isinstance(index, int) else ())
    for child in children:
        if path := leading_path(child):
            return path
    return ()
