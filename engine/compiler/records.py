"""Frozen records of the settings and test cases a Plan carries, made from the pydantic models.

A compiled Plan holds no pydantic model: each record here is the frozen counterpart of the model
of the same name in ``engine.model`` (same field names, lists as tuples, dicts as read-only
mappings), built once by the ``*_record`` functions. Test inputs and expectations stay the plain
JSON data they were written as.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from engine.model import flow as fm
from engine.model import mapping as mm
from engine.model import policy as pm
from engine.model import system as sm
from engine.model.base import StatusClass
from engine.model.policy import ErrorOutcome

__all__ = [
    "Auth", "Backoff", "EarlierWrite", "ExpectedCall", "ExpectedEmit", "ExpectedPublish",
    "FlowExpect", "FlowTest",
    "MappingTest", "Operation", "RateLimit", "RetryPolicySpec", "StubResponse", "Webhooks",
    "flow_test_record", "mapping_test_record", "operation_record", "retry_record",
    "system_records",
]


def _frozen(values: Mapping[Any, Any]) -> Mapping[Any, Any]:
    return MappingProxyType(dict(values))


# -- System settings --------------------------------------------------------------------------


@dataclass(frozen=True)
class Auth:
    """How calls to a System authenticate; secret placeholders stay unresolved."""

    type: Literal["bearer", "basic", "header", "oauth2", "none"] = "none"
    token: str | None = None
    username: str | None = None
    password: str | None = None
    header: str | None = None          #: type header: the header's name
    value: str | None = None           #: type header: its value
    token_url: str | None = None       #: type oauth2 (client credentials): the token endpoint
    client_id: str | None = None
    client_secret: str | None = None
    scope: str | None = None


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Outbound calls per second, shared by all runs, with a burst."""

    per_second: float | None
    burst: int = 1
    per_hour: int | None = None
    per_day: int | None = None


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of a System: method and path (with ``{name}`` placeholders)."""

    method: str
    path: str
    write: bool | None = None          #: None: every method but GET and HEAD writes

    @property
    def is_write(self) -> bool:
        return self.write if self.write is not None else self.method in sm.WRITE_METHODS


@dataclass(frozen=True, slots=True)
class Webhooks:
    """How inbound webhooks from a System are verified."""

    scheme: str
    secret: str | None = None
    tolerance: float = 300.0           #: seconds
    header: str | None = None          #: hmac-sha256: the header that carries the signature


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    """When to stop calling a System (engine/runtime/gates.py)."""

    failure_rate: float  #: the failing share of calls in `window` that opens the circuit
    min_calls: int  #: calls in the window before the rate counts
    window: float  #: seconds
    open_for: float  #: seconds without calls, then one probe


@dataclass(frozen=True, slots=True)
class NatsBackbone:
    """A System that is a NATS JetStream: where it listens and the stream that keeps events."""

    url: str
    stream: str
    connect_timeout: float


def nats_record(spec: sm.SystemSpec) -> NatsBackbone | None:
    n = spec.nats
    return None if n is None else NatsBackbone(n.url, n.stream, n.connect_timeout)


def breaker_record(spec: sm.SystemSpec) -> CircuitBreaker | None:
    b = spec.circuit_breaker
    return None if b is None else CircuitBreaker(b.failure_rate, b.min_calls, b.window, b.open_for)


def operation_record(op: sm.Operation) -> Operation:
    return Operation(op.method, op.path, op.write)


def system_records(spec: sm.SystemSpec) -> tuple[
        Auth, RateLimit | None, Mapping[str, Operation], Webhooks | None]:
    """A System's auth, rate limit, operations and webhooks settings, frozen."""
    a = spec.auth
    auth = Auth(a.type, a.token, a.username, a.password, a.header, a.value, a.token_url,
                a.client_id, a.client_secret, a.scope)
    limit = spec.rate_limit
    rate = (RateLimit(limit.per_second, limit.burst, limit.per_hour, limit.per_day)
            if limit is not None else None)
    operations = _frozen({name: operation_record(op) for name, op in spec.operations.items()})
    hooks = spec.webhooks
    webhooks = (Webhooks(hooks.scheme, hooks.secret, hooks.tolerance, hooks.header)
                if hooks is not None else None)
    return auth, rate, operations, webhooks


# -- RetryPolicy --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backoff:
    """``delay = min(max, initial * multiplier ** (attempt - 1))``, then jitter."""

    initial: float = 0.5
    multiplier: float = 2.0
    max: float = 300.0
    jitter: Literal["full", "equal", "none"] = "full"


@dataclass(frozen=True, slots=True)
class RetryPolicySpec:
    """How a call is retried (see ``engine.runtime.retry``)."""

    max_attempts: int
    backoff: Backoff
    timeout: float | None              #: per attempt; None: the System's timeout
    deadline: float | None             #: overall, then on_exhausted
    retry_on: tuple[StatusClass, ...]
    respect_retry_after: bool
    on_error: Mapping[StatusClass, ErrorOutcome]  #: outcome class -> what it means
    on_exhausted: Literal["dead-letter", "park"]


def retry_record(spec: pm.RetryPolicySpec) -> RetryPolicySpec:
    b = spec.backoff
    return RetryPolicySpec(
        spec.max_attempts, Backoff(b.initial, b.multiplier, b.max, b.jitter), spec.timeout,
        spec.deadline, tuple(spec.retry_on), spec.respect_retry_after, _frozen(spec.on_error),
        spec.on_exhausted,
    )


# -- tests: ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StubResponse:
    """What a stubbed operation answers in a flow test."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class ExpectedCall:
    system: str
    operation: str
    body: Any = None


@dataclass(frozen=True, slots=True)
class ExpectedEmit:
    type: str
    data: Any = None


@dataclass(frozen=True, slots=True)
class ExpectedPublish:
    subject: str
    type: str
    data: Any = None


@dataclass(frozen=True, slots=True)
class FlowExpect:
    state: str = "succeeded"
    calls: tuple[ExpectedCall, ...] | None = None
    emits: tuple[ExpectedEmit, ...] | None = None
    output: Any = None
    reason: str | None = None          #: the reason code of a parked / dead-lettered run
    steps: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  #: id -> output
    shadows: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  #: shadow
    publishes: tuple[ExpectedPublish, ...] | None = None  #: CloudEvents put on the backbone


@dataclass(frozen=True, slots=True)
class EarlierWrite:
    """A write made before a flow test's delivery (its fingerprint is stored first)."""

    system: str
    operation: str
    params: Mapping[str, Any]
    body: Any
    response: StubResponse | None  # None: its answer was lost


@dataclass(frozen=True, slots=True)
class FlowTest:
    name: str
    input: Any = None
    input_file: str | None = None
    responses: Mapping[str, StubResponse | tuple[StubResponse, ...]] = field(
        default_factory=lambda: MappingProxyType({}))
    expect: FlowExpect = field(default_factory=FlowExpect)
    written: tuple[EarlierWrite, ...] = ()


@dataclass(frozen=True, slots=True)
class MappingTest:
    name: str
    input: Any = None
    input_file: str | None = None
    expect: Any = None
    expect_file: str | None = None
    expect_error: str | None = None


def _stub(stub: fm.StubResponse) -> StubResponse:
    return StubResponse(stub.status, stub.body, _frozen(stub.headers))


def flow_test_record(test: fm.FlowTest) -> FlowTest:
    e = test.expect
    calls = (None if e.calls is None
             else tuple(ExpectedCall(c.system, c.operation, c.body) for c in e.calls))
    emits = None if e.emits is None else tuple(ExpectedEmit(x.type, x.data) for x in e.emits)
    publishes = (None if e.publishes is None
                 else tuple(ExpectedPublish(x.subject, x.type, x.data) for x in e.publishes))
    responses = {
        name: tuple(_stub(s) for s in stub) if isinstance(stub, list) else _stub(stub)
        for name, stub in test.responses.items()
    }
    expect = FlowExpect(e.state, calls, emits, e.output, e.reason, _frozen(e.steps),
                        _frozen(e.shadows), publishes)
    written = tuple(EarlierWrite(w.system, w.operation, _frozen(w.params), w.body,
                              None if w.response is None else _stub(w.response))
                    for w in test.written)
    return FlowTest(test.name, test.input, test.input_file, _frozen(responses), expect, written)


def mapping_test_record(test: mm.MappingTest) -> MappingTest:
    return MappingTest(test.name, test.input, test.input_file, test.expect, test.expect_file,
                       test.expect_error)
