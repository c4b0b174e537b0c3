"""The Plan: an immutable, content-addressed compilation of a project for one environment,
and `build_plan`, the function that makes it from loaded documents."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from engine.compiler.adapters import compile_adapters
from engine.compiler.alerts import CompiledAlert, compile_alerts
from engine.compiler.codegen import GeneratedMapping
from engine.compiler.compiled import (
    CompiledFlow,
    CompiledMapping,
    CompiledRetry,
    CompiledSchema,
    CompiledSystem,
)
from engine.compiler.echo import attach_echo_reads, system_echo
from engine.compiler.expressions import Expression
from engine.compiler.flow import FlowCompiler
from engine.compiler.governance import check_registry
from engine.compiler.graph import DependencyGraph
from engine.compiler.interpolate import Interpolation
from engine.compiler.mapping import compile_mapping, compile_schema
from engine.compiler.metric_labels import FlowLabels, flow_labels
from engine.compiler.metrics import CompiledMetric, compile_metrics
from engine.compiler.ownership import check_ownership
from engine.compiler.parse import parse_document, parse_project
from engine.compiler.reconciliation import CompiledReconciliation, compile_reconciliation
from engine.compiler.records import breaker_record, nats_record, retry_record, system_records
from engine.compiler.resolve import Registry
from engine.compiler.templates import Template
from engine.errors import DefinitionErrors
from engine.loader import Document
from engine.model import Flow, Project, Reconciliation, RetryPolicy, Schema, System
from engine.model import Mapping as MappingModel
from engine.source import Diagnostic, SourceLocation

Key = tuple[str, int]


@dataclass(frozen=True)
class Plan:
    """Everything the runtime needs, compiled. Equal definitions give an equal `digest`."""

    digest: str
    project: str
    environment: str
    env: Mapping[str, Any]                       # {"name": ..., "vars": {...}} for expressions
    bundle_json: str = field(repr=False, compare=False)  # the source, stored by digest
    flows: Mapping[str, CompiledFlow] = field(repr=False)          # active version per name
    flow_versions: Mapping[Key, CompiledFlow] = field(repr=False)
    mappings: Mapping[Key, CompiledMapping] = field(repr=False)
    schemas: Mapping[Key, CompiledSchema] = field(repr=False)
    systems: Mapping[Key, CompiledSystem] = field(repr=False)
    retries: Mapping[Key, CompiledRetry] = field(repr=False)
    webhooks: Mapping[str, CompiledFlow] = field(repr=False)       # path -> active flow
    apis: Mapping[str, CompiledFlow] = field(repr=False)           # path -> active flow
    subscriptions: Mapping[str, tuple[CompiledFlow, ...]] = field(repr=False)  # type -> flows
    secret_names: frozenset[str] = frozenset()
    warnings: tuple[Diagnostic, ...] = ()
    metrics: Mapping[str, CompiledMetric] = field(default_factory=dict, repr=False)  # by name
    # flow -> the metric labels its runs resolve from their data and steps (metric_labels.py)
    run_labels: Mapping[str, FlowLabels] = field(default_factory=dict, repr=False)
    reconciliations: Mapping[str, CompiledReconciliation] = field(  # highest version per name
        default_factory=lambda: MappingProxyType({}), repr=False
    )
    alerts: Mapping[str, CompiledAlert] = field(  # active version per name
        default_factory=lambda: MappingProxyType({}), repr=False
    )

    @property
    def bundle(self) -> dict[str, Any]:
        """The canonical source the plan was compiled from (a fresh copy: the plan's own is an
        immutable JSON text); `compile_bundle` turns it back into an equal plan."""
        loaded: dict[str, Any] = json.loads(self.bundle_json)
        return loaded

    def flow(self, name: str, version: int | None = None) -> CompiledFlow:
        return self.flows[name] if version is None else self.flow_versions[(name, version)]

    def system(self, name: str) -> CompiledSystem:
        return self.systems[max((k for k in self.systems if k[0] == name), key=lambda k: k[1])]

    def warm(self) -> int:
        """Compile every generated function now; returns how many.

        Generated Python is compiled by CPython on first use, so `validate` never pays for it;
        a server warms a new plan off the event loop before it serves it.
        """
        count = 0
        for item in _compiled_parts((self.flow_versions, self.mappings), set()):
            item.warm()
            count += 1
        return count


_LEAVES = (str, bytes, int, float, bool, type(None), CompiledSchema)  # nothing compiled inside


def _compiled_parts(
    node: Any, seen: set[int]
) -> Iterator[Expression | Template | GeneratedMapping]:
    if id(node) in seen or isinstance(node, _LEAVES):
        return
    seen.add(id(node))
    if isinstance(node, Expression | Template | GeneratedMapping):
        yield node
    elif isinstance(node, Mapping):
        for value in node.values():
            yield from _compiled_parts(value, seen)
    elif isinstance(node, tuple | list | frozenset | set):
        for value in node:
            yield from _compiled_parts(value, seen)
    elif dataclasses.is_dataclass(node) and not isinstance(node, type):
        for f in dataclasses.fields(node):
            yield from _compiled_parts(getattr(node, f.name), seen)


@dataclass
class _Build:
    environment: str
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def report(self, diagnostic: Diagnostic) -> None:
        self.diagnostics.append(diagnostic)


def select_environment(project: Project, requested: str | None, where: Document | None,
                       report: Any) -> str:
    envs = project.spec.environments
    if requested is None:
        return next(iter(envs), "default")
    if requested not in envs:
        loc = where.locate(("spec", "environments")) if where else SourceLocation("syncline.yaml")
        report(Diagnostic(loc, "E_ENV", f"unknown environment '{requested}' "
                          f"(known: {', '.join(envs) or 'none'})"))
    return requested


def build_plan(
    project_doc: Document | None,
    documents: tuple[Document, ...] | list[Document],
    *,
    environment: str | None = None,
    environ: Mapping[str, str] | None = None,
    diagnostics: tuple[Diagnostic, ...] | list[Diagnostic] = (),
    unloaded: Iterable[tuple[str, str]] = (),
) -> Plan:
    """Compile documents into a Plan for one environment, or raise DefinitionErrors with every
    diagnostic found. Pure: reads nothing but its arguments. `unloaded` names the definitions
    (kind, name) that failed to load: references to them are not reported again."""
    build = _Build(environment or "")
    build.diagnostics.extend(diagnostics)
    project = _project(project_doc, build)
    env_name = select_environment(project, environment, project_doc, build.report)
    env = project.spec.environments.get(env_name)
    variables = dict(env.vars) if env else {}
    interpolation = Interpolation(variables, allowed_environ(project, environ or {}))
    resolved = [interpolation.document(doc) for doc in documents]
    build.diagnostics.extend(interpolation.diagnostics)

    registry = Registry(pins=dict(env.pins) if env else {}, broken=set(unloaded))
    for doc in resolved:
        resource, problems = parse_document(doc)
        build.diagnostics.extend(problems)
        if resource is not None:
            registry.add(resource, doc)
        else:
            registry.add_broken(doc)
    registry.check_pins(project_doc, env_name)
    seen_as_project = {  # what GovernancePolicy asserts see as `project`
        "name": project.name,
        "environment": env_name,
        "defaults": project.spec.defaults.model_dump(by_alias=True, exclude_none=True),
    }
    build.diagnostics.extend(check_registry(registry, env_name, seen_as_project))
    build.diagnostics.extend(check_ownership(registry))
    plan = _compile(registry, project, env_name, variables, resolved, build)
    build.diagnostics.extend(registry.diagnostics)
    if any(d.severity == "error" for d in build.diagnostics):
        raise DefinitionErrors(build.diagnostics)
    return plan


def _project(doc: Document | None, build: _Build) -> Project:
    if doc is not None:
        project, problems = parse_project(doc)
        build.diagnostics.extend(problems)
        if project is not None:
            return project
    return Project.model_validate({"apiVersion": "syncline/v1", "kind": "Project",
                                   "metadata": {"name": "unnamed"}})


def _compile(registry: Registry, project: Project, env_name: str, variables: dict[str, Any],
             documents: list[Document], build: _Build) -> Plan:
    report = build.report
    retries = {
        (r.name, r.version): CompiledRetry(r.name, r.version, retry_record(r.spec))
        for r, _ in registry.all("RetryPolicy") if isinstance(r, RetryPolicy)
    }
    schemas = {}
    for resource, doc in registry.all("Schema"):
        assert isinstance(resource, Schema)
        if (compiled := compile_schema(resource, doc, report)) is not None:
            schemas[(resource.name, resource.version)] = compiled
    mappings = {}
    for resource, doc in registry.all("Mapping"):
        assert isinstance(resource, MappingModel)
        if (mapping := compile_mapping(resource, doc, registry, schemas, report)) is not None:
            mappings[(resource.name, resource.version)] = mapping
    systems = _systems(registry, retries, schemas, report, mappings)
    default_retry = None
    if project.spec.defaults.retry:
        found = registry.lookup("RetryPolicy", project.spec.defaults.retry,
                                SourceLocation("syncline.yaml"), "defaults.retry")
        default_retry = retries.get((found.name, found.version)) if found else None
    flow_versions: dict[Key, CompiledFlow] = {}
    for resource, doc in registry.all("Flow"):
        assert isinstance(resource, Flow)
        compiler = FlowCompiler(resource, doc, registry, schemas, mappings, systems, retries,
                                default_retry, report)
        if (flow := compiler.compile()) is not None:
            flow_versions[(flow.name, flow.version)] = flow
    active = _active(registry, flow_versions)
    subscriptions = _subscriptions(active, report)
    attach_echo_reads(active, subscriptions)
    flow_versions.update({(f.name, f.version): f for f in active.values()})
    webhooks, apis = _routes(active, registry, report)
    metrics = compile_metrics(registry, active, report)
    alerts = compile_alerts(registry, active, metrics, systems, default_retry, report)
    bundle = make_bundle(project, env_name, variables, documents)
    return Plan(
        digest=digest(bundle), project=project.name, environment=env_name,
        env=MappingProxyType({"name": env_name, "vars": dict(variables)}),
        bundle_json=json.dumps(bundle, ensure_ascii=False, default=str),
        flows=MappingProxyType(active), flow_versions=MappingProxyType(flow_versions),
        mappings=MappingProxyType(mappings), schemas=MappingProxyType(schemas),
        systems=MappingProxyType(systems), retries=MappingProxyType(retries),
        webhooks=MappingProxyType(webhooks), apis=MappingProxyType(apis),
        subscriptions=MappingProxyType(subscriptions),
        secret_names=frozenset(_secret_names(documents)),
        warnings=tuple(d for d in build.diagnostics if d.severity == "warning"),
        metrics=MappingProxyType(metrics),
        run_labels=MappingProxyType(flow_labels(metrics, active)),
        reconciliations=MappingProxyType(
            _reconciliations(registry, systems, default_retry, report)
        ),
        alerts=MappingProxyType(alerts),
    )


def _reconciliations(registry: Registry, systems: dict[Key, CompiledSystem],
                     default_retry: CompiledRetry | None, report: Any
                     ) -> dict[str, CompiledReconciliation]:
    compiled = {}
    for resource, doc in registry.all("Reconciliation"):
        assert isinstance(resource, Reconciliation)
        if registry.active("Reconciliation", resource.name) != (resource, doc):
            continue
        found = compile_reconciliation(resource, doc, registry, systems, default_retry, report)
        if found is not None:
            compiled[resource.name] = found
    return compiled


def allowed_environ(project: Project, environ: Mapping[str, str]) -> dict[str, str]:
    """The process variables `${env.X}` may read: those `spec.processEnv` names, never a
    SYNCLINE_* credential (a definition must not be able to read the server's secrets)."""
    return {name: environ[name] for name in project.spec.process_env
            if name in environ and not name.upper().startswith("SYNCLINE_")}


def _systems(registry: Registry, retries: dict[Key, CompiledRetry],
             schemas: dict[Key, CompiledSchema], report: Any,
             mappings: dict[Key, CompiledMapping]) -> dict[Key, CompiledSystem]:
    systems = {}
    by_ref = {ref: schema for (name, version), schema in sorted(schemas.items())
              for ref in (name, f"{name}@{version}")}  # a bare name: its latest version
    for resource, doc in registry.all("System"):
        assert isinstance(resource, System)
        spec = resource.spec
        retry = None
        if spec.retry:
            found = registry.lookup("RetryPolicy", spec.retry, doc.locate(("spec", "retry")),
                                    f"system '{resource.name}'")
            retry = retries.get((found.name, found.version)) if found else None
        auth, rate_limit, operations, webhooks = system_records(spec)
        window, records = system_echo(resource, doc, by_ref, report)
        systems[(resource.name, resource.version)] = CompiledSystem(
            resource.name, resource.version, spec.base_url.rstrip("/"), auth, spec.timeout,
            rate_limit, retry, spec.idempotency_header, MappingProxyType(dict(spec.headers)),
            operations, webhooks, doc.locate(), breaker_record(spec), nats_record(spec),
            window, MappingProxyType(records),
            compile_adapters(resource, doc, registry, mappings),
        )
    return systems


def _active(registry: Registry, flows: dict[Key, CompiledFlow]) -> dict[str, CompiledFlow]:
    active = {}
    for name in sorted({k[0] for k in flows}):
        chosen = registry.active("Flow", name)
        if chosen is not None and (name, chosen[0].version) in flows:
            active[name] = flows[(name, chosen[0].version)]
    return active


def _routes(active: dict[str, CompiledFlow], registry: Registry,
            report: Any) -> tuple[dict[str, CompiledFlow], dict[str, CompiledFlow]]:
    webhooks: dict[str, CompiledFlow] = {}
    apis: dict[str, CompiledFlow] = {}
    for flow in active.values():
        path = flow.trigger.path
        if path is None:
            continue
        taken = webhooks.get(path) or apis.get(path)
        if taken is not None:
            report(Diagnostic(flow.location or SourceLocation("?"), "E_TRIGGER",
                              f"flow '{flow.name}' uses path '{path}', already taken by flow "
                              f"'{taken.name}'"))
            continue
        (webhooks if flow.trigger.kind == "webhook" else apis)[path] = flow
    return webhooks, apis


def _subscriptions(active: dict[str, CompiledFlow], report: Any
                   ) -> dict[str, tuple[CompiledFlow, ...]]:
    """Event type -> the flows it triggers; a loop of flows triggering each other is E_CYCLE
    unless every flow in it allows it."""
    subscriptions: dict[str, list[CompiledFlow]] = {}
    for flow in active.values():
        if flow.trigger.event:
            subscriptions.setdefault(flow.trigger.event, []).append(flow)
    graph = DependencyGraph(f"flow:{name}" for name in active)
    for flow in active.values():
        for event_type in flow.emits:
            graph.add_node(f"event:{event_type}")
            graph.add_dependency(f"event:{event_type}", f"flow:{flow.name}")
            for target in subscriptions.get(event_type, []):
                graph.add_dependency(f"flow:{target.name}", f"event:{event_type}")
    for cycle in graph.cycles():
        nodes = cycle[:-1]
        start = nodes.index(min(n for n in nodes if n.startswith("flow:")))
        loop = nodes[start:] + nodes[:start] + [nodes[start]]
        flows = [n.removeprefix("flow:") for n in loop[:-1] if n.startswith("flow:")]
        if all(active[f].allow_loop for f in flows):
            continue
        path = " -> ".join(n.split(":", 1)[1] for n in loop)
        report(Diagnostic(active[flows[0]].location or SourceLocation("?"), "E_CYCLE",
                          f"flows trigger each other in a loop: {path} (set allowLoop: true on "
                          "every flow in it if the loop is intended)"))
    return {k: tuple(v) for k, v in subscriptions.items()}


def _secret_names(documents: list[Document]) -> set[str]:
    from engine.compiler.interpolate import secret_refs

    names: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            names.update(secret_refs(value))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for doc in documents:
        walk(doc.data)
    return names


def make_bundle(project: Project, env_name: str, variables: Mapping[str, Any],
                documents: list[Document]) -> dict[str, Any]:
    """The plan's canonical source: documents in a stable order, paths and comments excluded."""
    env = project.spec.environments.get(env_name)
    docs = sorted((doc.data for doc in documents), key=_canonical)
    return {
        "project": project.name,
        "environment": env_name,
        "vars": dict(variables),
        "pins": dict(env.pins) if env else {},
        "defaults": project.spec.defaults.model_dump(by_alias=True, exclude_none=True),
        "documents": docs,
    }


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)


def digest(bundle: Mapping[str, Any]) -> str:
    """sha256 over the canonical JSON of a bundle."""
    return "sha256:" + hashlib.sha256(_canonical(bundle).encode()).hexdigest()
