"""The compiled objects a Plan is made of: frozen, with every expression, template and validator
built once. The runtime only touches these fields; it never reads YAML or resolves a name.
Settings and test cases are the frozen records of ``records.py``: no pydantic model is
reachable from a Plan."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from engine.compiler.expressions import Expression
from engine.compiler.records import (
    Auth,
    CircuitBreaker,
    FlowTest,
    MappingTest,
    NatsBackbone,
    Operation,
    RateLimit,
    RetryPolicySpec,
    Webhooks,
)
from engine.compiler.refs import FieldPath
from engine.compiler.templates import Template
from engine.errors import FieldProblem, MappingError
from engine.source import SourceLocation

if TYPE_CHECKING:
    from engine.compiler.triggers import CompiledPoll, CompiledSchedule


class Value(Protocol):
    """A compiled value: evaluated against a run context `{data, event, steps, run, env}`."""

    @property
    def refs(self) -> frozenset[str]: ...  # step ids the value reads

    def evaluate(self, context: Mapping[str, Any]) -> Any: ...


@dataclass(frozen=True, slots=True)
class ExprValue:
    expression: Expression
    refs: frozenset[str]

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        return self.expression.search(context)


@dataclass(frozen=True, slots=True)
class TemplateValue:
    template: Template
    refs: frozenset[str]

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        return self.template.render(context)


@dataclass(frozen=True, slots=True)
class ConstValue:
    value: Any
    refs: frozenset[str] = frozenset()

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        return self.value


@dataclass(frozen=True, slots=True)
class MapValue:
    mapping: CompiledMapping
    input: Expression
    refs: frozenset[str]

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        return self.mapping.apply(self.input.search(context))


@dataclass(frozen=True)
class CompiledSchema:
    name: str
    version: int
    owner: str | None
    key: str | None
    json_schema: Mapping[str, Any]
    validator: Any = field(repr=False, compare=False)     # jsonschema_rs validator
    location: SourceLocation | None = None

    def problems(self, instance: Any) -> list[FieldProblem]:
        """Every way `instance` breaks the schema (empty when valid)."""
        if self.validator.is_valid(instance):
            return []
        return [
            FieldProblem(".".join(str(p) for p in error.instance_path), error.message, "SCHEMA")
            for error in self.validator.iter_errors(instance)
        ]


@dataclass(frozen=True)
class CompiledMapping:
    name: str
    version: int
    source: CompiledSchema | None
    target: CompiledSchema | None
    transform: Callable[[Any], dict[str, Any]] = field(repr=False, compare=False)
    tests: tuple[MappingTest, ...] = ()
    location: SourceLocation | None = None
    fields: tuple[str, ...] = ()       # the target paths it writes (dotted: nested objects)
    test_locations: tuple[SourceLocation, ...] = ()  # where each of `tests` is written
    reads: frozenset[FieldPath] | None = None  # the input paths its rules read; None: all

    @property
    def ident(self) -> str:
        return f"{self.name}@{self.version}"

    def apply(self, data: Any) -> dict[str, Any]:
        """Validate the input, transform it, validate the output. Raises MappingError."""
        if self.source is not None and (problems := self.source.problems(data)):
            raise MappingError(self.ident, [_coded(p, "SOURCE_SCHEMA") for p in problems])
        result = self.transform(data)
        if (size := result_size(result)) > MAX_RESULT_CHARS:
            message = f"the result is {size:,} characters, beyond the limit of {MAX_RESULT_CHARS:,}"
            raise MappingError(self.ident, [FieldProblem("", message, "RESULT_TOO_LARGE")])
        if self.target is not None and (problems := self.target.problems(result)):
            raise MappingError(self.ident, [_coded(p, "TARGET_SCHEMA") for p in problems])
        return result


MAX_RESULT_CHARS = 1024 * 1024  #: the largest mapping result (string characters and items)


def result_size(value: Any) -> int:
    """The characters of `value`'s strings plus its items: what JSON would hold, roughly. Cheap
    (about as much as a 25-field transform): only strings and containers are counted."""
    kind = type(value)
    if kind is str:
        return len(value)
    if kind is not dict and kind is not list:
        return 1
    size = len(value)
    for item in value.values() if kind is dict else value:
        item_kind = type(item)
        if item_kind is str:
            size += len(item)
        elif item_kind is dict or item_kind is list:
            size += result_size(item)
    return size


def _coded(problem: FieldProblem, code: str) -> FieldProblem:
    return FieldProblem(problem.path, problem.message, code)


@dataclass(frozen=True)
class CompiledRetry:
    name: str
    version: int
    policy: RetryPolicySpec


@dataclass(frozen=True)
class RecordWrite:
    """A write operation's `record: {type, id, fields}`: its calls leave an echo fingerprint."""

    type: str
    id: Expression                     # over the write {params, query, body, response}
    fields: Expression | None = None   # the same: the values written (None: the request body)
    numeric: frozenset[str] = frozenset()  # dotted fields its Schema types as numbers
    creates: bool = False              # the id is only known from the answer (a create)
    from_answer: bool = False          # the fingerprint is completed from the answer


@dataclass(frozen=True)
class EchoCheck:
    """A webhook trigger's `record:`: which record a delivery is about, and what to compare."""

    system: str
    type: str
    id: Expression                     # over {data, event}: the record id (str or number)
    fields: Expression                 # over {data, event}: the record's fields
    changed: Expression | None         # over {data, event}: the changed fields, if it says
    reads: frozenset[FieldPath] | None = None  # the fields the flows read (relative); None: all
    numeric: frozenset[str] = frozenset()  # dotted fields a Schema of the record types as numbers


@dataclass(frozen=True)
class CompiledSystem:
    """A System with references resolved. Secret placeholders stay unresolved here."""

    name: str
    version: int
    base_url: str
    auth: Auth
    timeout: float
    rate_limit: RateLimit | None
    retry: CompiledRetry | None
    idempotency_header: str | None
    headers: Mapping[str, str]
    operations: Mapping[str, Operation]
    webhooks: Webhooks | None
    location: SourceLocation | None = None
    circuit_breaker: CircuitBreaker | None = None  # None: calls are never held back
    nats: NatsBackbone | None = None   # an event backbone (publish to it, stream from it)
    echo_window: float | None = None   # echo suppression: how long a write's fingerprint lasts
    records: Mapping[str, RecordWrite] = field(default_factory=dict)  # operation -> its record
    adapters: Mapping[str, OperationAdapter] = field(default_factory=dict)  # by operation


@dataclass(frozen=True)
class OperationAdapter:
    """How one operation of a System with its own API shape speaks the flows' shape: `request`
    maps the call's body to the request sent, `response` maps a 2xx JSON object answer to the
    body the step outputs (and a shadow compares). Error answers are never mapped."""

    request: CompiledMapping | None = None
    response: CompiledMapping | None = None

    def outbound(self, body: Any) -> Any:
        return self.request.apply(body) if self.request is not None and body is not None else body

    def inbound(self, status: int, body: Any) -> Any:
        if self.response is None or not 200 <= status < 300 or not isinstance(body, dict):
            return body
        return self.response.apply(body)


# --- step actions: one frozen class per step kind ---------------------------------------------


@dataclass(frozen=True)
class MapAction:
    mapping: CompiledMapping
    input: Expression


@dataclass(frozen=True)
class RuleCheck:
    check: Expression
    code: str
    message: str


@dataclass(frozen=True)
class ValidateAction:
    schema: CompiledSchema | None
    input: Expression
    rules: tuple[RuleCheck, ...]
    code: str


@dataclass(frozen=True)
class CallAction:
    system: CompiledSystem
    operation: str
    method: str
    path: str                          # with {name} placeholders filled from params
    params: Mapping[str, Value]
    query: Mapping[str, Value]
    headers: Mapping[str, Value]
    body: Value | None
    is_write: bool
    route: CallRoute | None = None     # routed: the call to send is chosen per run
    shadow: CallShadow | None = None   # mirrored to a candidate System, compared, never decisive


@dataclass(frozen=True)
class CallShadow:
    """The candidate's side of a shadowed call: the same request to `call.system`, with
    `compare` evaluated on both responses ({status, headers, body})."""

    call: CallAction
    compare: Expression
    timeout: float


@dataclass(frozen=True)
class CallRoute:
    """A routed call's choice: the route expression's value picks a case's call, else the
    default's; `None` when neither applies (the step parks with NO_ROUTE)."""

    expression: Expression                 # its `text` is shown in lineage and graphs
    cases: Mapping[str, CallAction]        # value -> the call to that System
    default: CallAction | None

    def choose(self, context: Mapping[str, Any]) -> tuple[str | None, CallAction | None]:
        value = self.expression.search(context)
        key = value if isinstance(value, str) or value is None else json.dumps(value)
        found = self.cases.get(key) if key is not None else None
        return key, found if found is not None else self.default


@dataclass(frozen=True)
class EmitAction:
    type: str
    data: Value
    subject: Expression | None


@dataclass(frozen=True)
class SetAction:
    values: Mapping[str, Value]


@dataclass(frozen=True)
class ParkAction:
    code: str
    message: str


@dataclass(frozen=True)
class PublishAction:
    """A CloudEvent published to a NATS JetStream subject (engine/runtime/backbone.py)."""

    system: CompiledSystem              # has `nats`
    subject: str
    type: str
    data: Value


Action = (MapAction | ValidateAction | CallAction | EmitAction | SetAction | ParkAction
          | PublishAction)


@dataclass(frozen=True)
class CompiledStep:
    id: str
    kind: str                          # map | validate | call | emit | set | park
    action: Action
    needs: frozenset[str]              # every step this one waits for (explicit and implicit)
    when: Expression | None
    retry: CompiledRetry | None        # calls: the step's, else the System's, else the default
    compensate: CallAction | None
    index: int                         # declaration order
    location: SourceLocation | None = None


@dataclass(frozen=True)
class CompiledStream:
    """A durable JetStream consumer of `subject` (wildcards allowed) on `system`'s stream."""

    system: CompiledSystem
    subject: str
    ack_wait: float


@dataclass(frozen=True)
class CompiledTrigger:
    kind: str                          # webhook | event | api | schedule | poll | stream
    path: str | None = None            # webhook / api
    system: CompiledSystem | None = None   # webhook sender, polled System
    event: str | None = None           # event type
    timeout: float | None = None       # api
    schedule: CompiledSchedule | None = None
    poll: CompiledPoll | None = None
    stream: CompiledStream | None = None
    echo: EchoCheck | None = None      # webhook: a delivery about a record Syncline wrote


@dataclass(frozen=True)
class CompiledFlow:
    name: str
    version: int
    owner: str | None
    trigger: CompiledTrigger
    filter: Expression | None
    idempotency_key: Expression | None
    ordering_key: Expression | None
    steps: tuple[CompiledStep, ...]    # a topological order
    on_failure: str
    output: Expression | None
    allow_loop: bool
    emits: tuple[str, ...]
    tests: tuple[FlowTest, ...] = ()
    location: SourceLocation | None = None
    # `orderingKey.whileParked`: block (a parked run holds its key) or continue (it lets go)
    while_parked: str = "block"
    test_locations: tuple[SourceLocation, ...] = ()  # where each of `tests` is written

    @property
    def ident(self) -> str:
        return f"{self.name}@{self.version}"

    def step(self, step_id: str) -> CompiledStep:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)
