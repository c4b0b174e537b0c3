"""The event backbone's side of a flow, compiled: a `publish` step (a CloudEvent onto a NATS
JetStream subject) and a `stream` trigger (a durable consumer of subjects on that stream). Both
name a System with `nats`; naming an HTTP System is a located error."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.compiler.compiled import CompiledStream, CompiledSystem, CompiledTrigger, PublishAction
from engine.model import flow as m
from engine.model.triggers import StreamTrigger

if TYPE_CHECKING:
    from engine.compiler.flow import FlowCompiler


def compile_publish(compiler: FlowCompiler, spec: m.PublishSpec, loc: tuple[Any, ...],
                    sid: str) -> PublishAction | None:
    system = _backbone(compiler, spec.system, loc + ("system",), "publish to")
    data = compiler.value(spec.data, loc + ("data",), sid)
    if system is None or data is None:
        return None
    return PublishAction(system, spec.subject, spec.type, data)


def compile_stream(compiler: FlowCompiler, spec: StreamTrigger) -> CompiledTrigger | None:
    loc = ("trigger", "stream")
    system = _backbone(compiler, spec.system, loc + ("system",), "stream from")
    if system is None:
        return None
    stream = CompiledStream(system, spec.subject, spec.ack_wait)
    return CompiledTrigger("stream", system=system, stream=stream)


def _backbone(compiler: FlowCompiler, ref: str, loc: tuple[Any, ...],
              verb: str) -> CompiledSystem | None:
    system = compiler.system(ref, loc)
    if system is not None and system.nats is None:
        compiler.error(loc, "E_BACKBONE", f"system '{system.name}' is an HTTP API; a step can "
                       f"only {verb} a System with a `nats` block (an event backbone)")
        return None
    return system
