"""Traces: whether this process exports them, and the one interface the runtime and server use.

Tracing is configured only through the standard OpenTelemetry variables. It is on when
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) or `OTEL_TRACES_EXPORTER`
is set, unless `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`; it then needs the
`syncline[otel]` extra. Off, `tracing_from_environ` answers None, nothing of OpenTelemetry is
imported, and every caller's only cost is an `is None` test.

On, a run is one trace of spans (see `engine.runtime.otel`):

    POST /hooks/crm            SERVER   the delivery (child of the sender's `traceparent`)
      run closed-won-to-order  INTERNAL one execution of the run (its stored traceparent is the
                                        ingest span's, so a worker elsewhere continues the trace)
        step create-order      INTERNAL
          POST /sales-orders   CLIENT   the outbound call; its context goes out as `traceparent`
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

from engine.errors import UsageError

if TYPE_CHECKING:
    from engine.compiler.compiled import CompiledStep
    from engine.runtime.calls import OutboundRequest
    from engine.store.base import Reason, RunRecord

Attribute = str | int | float | bool


class SpanNote(Protocol):
    """What a caller may say about the span it is in."""

    def note(self, attributes: Mapping[str, Attribute]) -> None:
        """Add attributes (None values are left out by the callers)."""

    def outcome(self, state: str, reason: Reason | None = None) -> None:
        """The run's or step's resulting state; failures mark the span as an error."""


class HttpSpan(SpanNote, Protocol):
    """The span of one HTTP exchange: a delivery, or an outbound call."""

    traceparent: str  # this span's context (a call sends it as its `traceparent`)

    def answered(self, status: int | None, error: str | None = None) -> None:
        """The response status (None: none came) and `error.type` of a failure."""


class Tracing(Protocol):
    """Spans for a delivery, a run's execution, a step and an outbound call."""

    def ingest(
        self, method: str, route: str, headers: dict[str, str]
    ) -> AbstractContextManager[HttpSpan]:
        """A delivery to `route`, child of its `traceparent` header; the header is replaced by
        this span's context, so the run accepted stores it and continues the trace."""

    def annotate(self, attributes: Mapping[str, Attribute | None]) -> None:
        """Attributes on the current span (None values left out): what a handler learnt."""

    def run(self, run: RunRecord) -> AbstractContextManager[SpanNote]:
        """One execution of `run`, child of the traceparent stored with it."""

    def step(self, run: RunRecord, step: CompiledStep) -> AbstractContextManager[SpanNote]:
        """One step of the run whose span is current."""

    def call(self, request: OutboundRequest) -> AbstractContextManager[HttpSpan]:
        """One outbound call attempt, child of the current span."""

    def current_traceparent(self) -> str | None:
        """The current span's context as a W3C traceparent (emitted events carry it)."""

    def shutdown(self) -> None:
        """Export what is buffered, then stop."""


def tracing_enabled(environ: Mapping[str, str]) -> bool:
    """Whether the OTEL_* variables ask for traces (see the module docstring)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    return bool(exporter or (endpoint and endpoint.strip()))


def tracing_from_environ(environ: Mapping[str, str], version: str = "") -> Tracing | None:
    """The process's tracing, or None when the OTEL_* variables do not ask for it. Raises
    UsageError when they do but the `syncline[otel]` extra is missing or a setting is unusable."""
    if not tracing_enabled(environ):
        return None
    try:
        from engine.runtime.otel import OtelTracing
    except ImportError as exc:
        raise UsageError(
            "tracing is configured (OTEL_* variables) but OpenTelemetry is not installed: "
            f"pip install 'syncline[otel]' ({exc.name or exc})"
        ) from None
    return OtelTracing.from_environ(environ, version)
