"""`syncline graph`: a Plan's flows, steps, systems and events as mermaid, dot or JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from engine.compiler.compiled import CallAction, PublishAction
from engine.compiler.plan import Plan


@dataclass(frozen=True)
class Node:
    id: str
    kind: str        # flow | step | system | event
    label: str


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    kind: str        # contains | depends | calls | emits | triggers | receives | case | shadow
    label: str = ""  # a routed call's case value ("default" for its default)


def plan_graph(plan: Plan) -> tuple[list[Node], list[Edge]]:
    """The nodes and edges of the whole plan (active flow versions only)."""
    nodes: dict[str, Node] = {}
    edges: list[Edge] = []

    def node(node_id: str, kind: str, label: str) -> str:
        nodes.setdefault(node_id, Node(node_id, kind, label))
        return node_id

    for flow in plan.flows.values():
        fid = node(f"flow:{flow.name}", "flow", flow.ident)
        trigger = flow.trigger
        if trigger.event:
            event_id = node(f"event:{trigger.event}", "event", trigger.event)
            edges.append(Edge(event_id, fid, "triggers"))
        elif trigger.system is not None:
            sys_id = node(f"system:{trigger.system.name}", "system", trigger.system.name)
            edges.append(Edge(sys_id, fid, "triggers"))
        for step in flow.steps:
            sid = node(f"step:{flow.name}.{step.id}", "step", f"{step.id} ({step.kind})")
            edges.append(Edge(fid, sid, "contains"))
            edges.extend(Edge(f"step:{flow.name}.{d}", sid, "depends") for d in sorted(step.needs))
            for call in (step.action, step.compensate):
                if isinstance(call, CallAction):
                    edges.extend(_call_edges(sid, call, node))
            if isinstance(step.action, PublishAction):
                backbone = step.action.system.name
                edges.append(Edge(sid, node(f"system:{backbone}", "system", backbone),
                                  "publishes", step.action.subject))
            if step.kind == "emit":
                event_type = step.action.type  # type: ignore[union-attr]
                edges.append(Edge(sid, node(f"event:{event_type}", "event", event_type), "emits"))
    unique = list(dict.fromkeys(edges))
    return sorted(nodes.values(), key=lambda n: n.id), unique


def _call_edges(sid: str, call: CallAction, node: Any) -> list[Edge]:
    """A call's arrow to its System; a routed call branches: step -> route -> each System; a
    shadow is a dotted arrow to its candidate."""
    shadow = [] if call.shadow is None else [Edge(sid, node(
        f"system:{call.shadow.call.system.name}", "system", call.shadow.call.system.name),
        "shadow")]
    if call.route is None:
        system = call.system.name
        return [Edge(sid, node(f"system:{system}", "system", system), "calls"), *shadow]
    text = call.route.expression.text
    route_id = node(f"route:{sid}.{call.operation}", "route", f"route {text}")
    cases = [(value, case.system.name) for value, case in call.route.cases.items()]
    if call.route.default is not None:
        cases.append(("default", call.route.default.system.name))
    return [Edge(sid, route_id, "calls"), *shadow] + [
        Edge(route_id, node(f"system:{name}", "system", name), "case", value)
        for value, name in cases]


def _safe(node_id: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in node_id)


SHAPES = {"flow": ('[["', '"]]'), "step": ('["', '"]'), "system": ('[("', '")]'),
          "event": ('>"', '"]'), "route": ('{"', '"}')}


def to_mermaid(plan: Plan) -> str:
    nodes, edges = plan_graph(plan)
    lines = ["flowchart LR"]
    for n in nodes:
        left, right = SHAPES[n.kind]
        lines.append(f"  {_safe(n.id)}{left}{n.label}{right}")
    arrows = {"depends": "-->", "contains": "-.->", "calls": "==>", "emits": "-->",
              "triggers": "-->", "case": "==>", "shadow": "-.->", "publishes": "==>"}
    for e in edges:
        label = f'"{e.label}"' if e.label else e.kind
        lines.append(f"  {_safe(e.source)} {arrows[e.kind]}|{label}| {_safe(e.target)}")
    return "\n".join(lines) + "\n"


def to_dot(plan: Plan) -> str:
    nodes, edges = plan_graph(plan)
    shapes = {"flow": "box3d", "step": "box", "system": "cylinder", "event": "cds",
              "route": "diamond"}
    lines = [f'digraph "{plan.project}" {{', "  rankdir=LR;"]
    for n in nodes:
        lines.append(f'  "{n.id}" [label="{n.label}", shape={shapes[n.kind]}];')
    for e in edges:
        style = ', style=dashed' if e.kind in ("contains", "shadow") else ""
        lines.append(f'  "{e.source}" -> "{e.target}" [label="{e.label or e.kind}"{style}];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_json(plan: Plan) -> str:
    nodes, edges = plan_graph(plan)
    return json.dumps({
        "digest": plan.digest,
        "nodes": [n.__dict__ for n in nodes],
        "edges": [e.__dict__ for e in edges],
    }, indent=2) + "\n"


RENDERERS = {"mermaid": to_mermaid, "dot": to_dot, "json": to_json}
