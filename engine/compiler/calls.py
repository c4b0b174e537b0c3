"""Compile a step's `call` (and `compensate`): to one System, or routed by an expression to one
of several (every routed System must have the operation and the params its own path needs), and
a `shadow` mirroring a write to a candidate System. Functions of a FlowCompiler, which reports
their errors and resolves their references."""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

from engine.compiler.compiled import CallAction, CallRoute, CallShadow
from engine.model import flow as m
from engine.model.base import suggest

if TYPE_CHECKING:
    from engine.compiler.flow import FlowCompiler

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
Loc = tuple[Any, ...]


def compile_call(fc: FlowCompiler, spec: m.CallSpec, loc: Loc, sid: str) -> CallAction | None:
    """A `call` or `compensate`: to one System, or routed to one of several."""
    params = fc.values(spec.params, loc + ("params",), sid)
    query = fc.values(spec.query, loc + ("query",), sid)
    headers = fc.values(spec.headers, loc + ("headers",), sid)
    body = fc.value(spec.body, loc + ("body",), sid) if spec.body is not None else None
    if isinstance(spec.system, m.RouteSpec):
        return _routed(fc, spec, spec.system, loc, sid, (params, query, headers, body))
    return _target(fc, spec, spec.system, loc + ("system",), loc,
                       (params, query, headers, body))


def _routed(fc: FlowCompiler, spec: m.CallSpec, route: m.RouteSpec, loc: Loc, sid: str,
           values: tuple[Any, ...]) -> CallAction | None:
    """A call whose System the route expression picks; every System must have the operation
    (with the params its path needs)."""
    where = loc + ("system",)
    expression = fc.expr(route.route, where + ("route",), sid)
    cases = {value: _target(fc, spec, ref, where + ("cases", value), loc, values)
             for value, ref in route.cases.items()}
    default = (_target(fc, spec, route.default, where + ("default",), loc, values)
               if route.default else None)
    if expression is None or None in cases.values() or (route.default and default is None):
        return None
    chosen = {k: v for k, v in cases.items() if v is not None}
    first = default or next(iter(chosen.values()))
    return dataclasses.replace(first, route=CallRoute(expression, chosen, default))


def _target(fc: FlowCompiler, spec: m.CallSpec, ref: str, system_loc: Loc, loc: Loc,
           values: tuple[Any, ...],
           why: str = " (every System a call routes to needs it)") -> CallAction | None:
    params, query, headers, body = values
    system = fc.system(ref, system_loc)
    if system is None:
        return None
    operation = system.operations.get(spec.operation)
    routed = system_loc != loc + ("system",)
    if operation is None:
        hint = suggest(spec.operation, sorted(system.operations))
        fc.error(system_loc if routed else loc + ("operation",), "E_REF",
                   f"system '{system.name}' has no operation '{spec.operation}'{hint}"
                   + (why if routed else ""))
        return None
    missing = [p for p in PLACEHOLDER.findall(operation.path) if p not in spec.params]
    if missing:
        fc.error(loc + ("params",), "E_REF", f"operation '{spec.operation}' of system "
                   f"'{system.name}' path '{operation.path}' needs params: "
                   f"{', '.join(missing)}")
        return None
    return CallAction(system, spec.operation, operation.method, operation.path, params,
                      query, headers, body, operation.is_write)


def compile_shadow(fc: FlowCompiler, step: m.Step, action: Any, loc: Loc) -> CallAction | None:
    """A call mirrored to a candidate System: only a write, never to a System the call may
    go to itself, and the candidate must have the operation."""
    spec, where = step.shadow, loc + ("shadow",)
    assert spec is not None
    compare = fc.expr(spec.compare, where + ("compare",))
    if step.call is None:
        fc.error(where, "E_SHADOW", f"step '{step.id}' has a shadow but no call to mirror")
        return None
    if not isinstance(action, CallAction):
        return None
    own = ({action.system.name} if action.route is None or action.route.default else set()) | (
        {c.system.name for c in action.route.cases.values()} if action.route else set())
    if not action.is_write:
        fc.error(where, "E_SHADOW", f"step '{step.id}' shadows '{step.call.operation}', "
                   "which writes nothing: shadows compare writes (a read has no effect to "
                   "rehearse)")
        return None
    candidate = _target(fc, step.call, spec.system, where + ("system",), loc + ("call",),
                            (action.params, action.query, action.headers, action.body),
                            " (a shadow's System needs the call's operation)")
    if candidate is None or compare is None:
        return None
    if own == {candidate.system.name}:  # routed elsewhere too: skipped for that run
        fc.error(where + ("system",), "E_SHADOW", f"step '{step.id}' shadows its call onto "
                   f"'{candidate.system.name}', which the call itself goes to")
        return None
    timeout = spec.timeout if spec.timeout is not None else candidate.system.timeout
    return dataclasses.replace(action, shadow=CallShadow(candidate, compare, timeout))
