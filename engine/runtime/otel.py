"""OpenTelemetry tracing (the `syncline[otel]` extra), imported only when the OTEL_* variables
ask for traces (see `engine.runtime.tracing`).

Each process owns its `TracerProvider` (no global one), exporting in batches with OTLP over
HTTP (protobuf) to `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT` +
`/v1/traces`, with the headers of `OTEL_EXPORTER_OTLP_(TRACES_)HEADERS` (never logged);
`OTEL_TRACES_EXPORTER=console` prints spans instead (a list may name both). The SDK reads the
rest itself: `_TIMEOUT`, `_COMPRESSION`, `_CERTIFICATE`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`.
Context travels as W3C `traceparent`.

Attributes follow the HTTP semantic conventions (`http.request.method`, `http.route`,
`url.full`, `server.address`, `http.response.status_code`, `error.type`) plus `syncline.*`
names; no body, query string, header value or credential is ever an attribute.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import unquote

import httpx
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from engine import logs
from engine.compiler.compiled import CompiledStep
from engine.errors import UsageError
from engine.runtime.calls import OutboundRequest
from engine.runtime.tracing import Attribute
from engine.store.base import Reason, RunRecord

SCOPE = "syncline"
PROTOCOL = "http/protobuf"
ERROR_STATES = frozenset({"failed", "dead-lettered", "parked", "compensated"})
_PROPAGATOR = TraceContextTextMapPropagator()


def traceparent_of(span: Span) -> str:
    """`span`'s context as a W3C traceparent header value."""
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def _parent(traceparent: str | None) -> Context | None:
    return _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None


class _Note:
    """A span a caller can annotate (the `SpanNote` of engine.runtime.tracing)."""

    __slots__ = ("span", "traceparent")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.traceparent = traceparent_of(span)

    def note(self, attributes: Mapping[str, Attribute]) -> None:
        self.span.set_attributes(attributes)

    def outcome(self, state: str, reason: Reason | None = None) -> None:
        self.span.set_attribute("syncline.state", state)
        if reason is not None:
            self.span.set_attribute("syncline.reason.code", reason.code)
            if reason.step:
                self.span.set_attribute("syncline.reason.step", reason.step)
        if state in ERROR_STATES:
            self.span.set_status(Status(StatusCode.ERROR, reason.code if reason else state))

    def answered(self, status: int | None, error: str | None = None) -> None:
        if status is not None:
            self.span.set_attribute("http.response.status_code", status)
        if error is not None:
            self.span.set_attribute("error.type", error)
            self.span.set_status(Status(StatusCode.ERROR, error))


class OtelTracing:
    """The `Tracing` of a process with the OpenTelemetry SDK."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer(SCOPE)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], version: str = "") -> OtelTracing:
        """A provider exporting as the OTEL_* variables say (UsageError for unusable ones)."""
        logs.redact(_headers(environ).values())  # a collector's API key is never printed
        provider = TracerProvider(
            resource=Resource.create(_resource(environ, version)), shutdown_on_exit=False
        )
        for exporter in _exporters(environ):
            provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider)

    @contextlib.contextmanager
    def ingest(self, method: str, route: str, headers: dict[str, str]) -> Iterator[_Note]:
        attributes = {
            "http.request.method": method,
            "http.route": route,
            "url.path": route,
            "url.scheme": "http",
        }
        parent = _PROPAGATOR.extract(headers)
        with self.tracer.start_as_current_span(
            f"{method} {route}", context=parent, kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            note = _Note(span)
            headers["traceparent"] = note.traceparent
            headers.pop("tracestate", None)  # the sender's vendor state is not ours to relay
            yield note

    def annotate(self, attributes: Mapping[str, Attribute | None]) -> None:
        """Attributes on the current span (the delivery's, in an ingest handler)."""
        span = get_current_span()
        span.set_attributes({k: v for k, v in attributes.items() if v is not None})

    @contextlib.contextmanager
    def run(self, run: RunRecord) -> Iterator[_Note]:
        attributes: dict[str, Any] = {
            "syncline.flow": run.flow,
            "syncline.flow.version": run.flow_version,
            "syncline.run.id": run.id,
            "syncline.run.generation": run.generation,
            "syncline.correlation_id": run.correlation_id,
        }
        with self.tracer.start_as_current_span(
            f"run {run.flow}", context=_parent(run.traceparent), attributes=attributes
        ) as span:
            yield _Note(span)

    @contextlib.contextmanager
    def step(self, run: RunRecord, step: CompiledStep) -> Iterator[_Note]:
        attributes = {"syncline.step.id": step.id, "syncline.step.kind": step.kind,
                      "syncline.run.id": run.id}  # fmt: skip
        with self.tracer.start_as_current_span(f"step {step.id}", attributes=attributes) as span:
            yield _Note(span)

    @contextlib.contextmanager
    def call(self, request: OutboundRequest) -> Iterator[_Note]:
        with self.tracer.start_as_current_span(
            f"{request.method} {request.template or request.path}",
            kind=SpanKind.CLIENT,
            attributes=_call_attributes(request),
        ) as span:
            yield _Note(span)

    def current_traceparent(self) -> str | None:
        span = get_current_span()
        return traceparent_of(span) if span.get_span_context().is_valid else None

    def shutdown(self) -> None:
        self.provider.shutdown()


def _call_attributes(request: OutboundRequest) -> dict[str, Any]:
    url = httpx.URL(request.url).copy_with(username=None, password=None, query=None)
    attributes: dict[str, Any] = {
        "http.request.method": request.method,
        "url.full": str(url),
        "server.address": url.host,
        "server.port": url.port or (443 if url.scheme == "https" else 80),
        "syncline.system": request.system.name,
        "syncline.operation": request.operation,
    }
    if request.template:
        attributes["url.template"] = request.template
    if request.run_id:
        attributes["syncline.run.id"] = request.run_id
    return attributes


def _resource(environ: Mapping[str, str], version: str) -> dict[str, Any]:
    """service.name `syncline` unless OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES name one."""
    attributes: dict[str, Any] = {}
    for pair in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            attributes[key.strip()] = unquote(value.strip())
    if environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = environ["OTEL_SERVICE_NAME"]
    attributes.setdefault("service.name", SCOPE)
    if version:
        attributes.setdefault("service.version", version)
    return attributes


def _exporters(environ: Mapping[str, str]) -> list[SpanExporter]:
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    exporters: list[SpanExporter] = []
    for name in filter(None, names):
        if name == "otlp":
            exporters.append(
                OTLPSpanExporter(endpoint=_endpoint(environ), headers=_headers(environ))
            )
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        else:
            raise UsageError(
                f"OTEL_TRACES_EXPORTER: '{name}' is not supported (use otlp, console or none)"
            )
    return exporters


def _headers(environ: Mapping[str, str]) -> dict[str, str]:
    """OTEL_EXPORTER_OTLP_TRACES_HEADERS, else OTEL_EXPORTER_OTLP_HEADERS: `k=v,k2=v2`."""
    text = environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or environ.get(
        "OTEL_EXPORTER_OTLP_HEADERS", ""
    )
    pairs = (pair.partition("=") for pair in text.split(","))
    return {unquote(k.strip()).lower(): unquote(v.strip()) for k, sep, v in pairs if sep}


def _endpoint(environ: Mapping[str, str]) -> str:
    """The traces URL; only OTLP over HTTP with protobuf is spoken."""
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = environ.get(name, "").strip()
        if protocol and protocol != PROTOCOL:
            raise UsageError(f"{name}={protocol} is not supported: Syncline exports {PROTOCOL}")
        if protocol:
            break
    own = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    endpoint = own or (base.rstrip("/") + "/v1/traces" if base else "http://localhost:4318/v1/traces")
    if not endpoint.startswith(("http://", "https://")):
        variable = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" if own else "OTEL_EXPORTER_OTLP_ENDPOINT"
        raise UsageError(f"{variable} must be an http:// or https:// URL, got {endpoint!r}")
    return endpoint
