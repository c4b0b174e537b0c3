"""Flow: what happens when something occurs — a trigger, then a graph of steps.

A *value* (call params/query/headers/body, `set` entries, emit data) is one of:
a JMESPath string, `{template: "..."}` (sandboxed Jinja2), `{const: ...}`, or
`{map: MAPPING, input: EXPR}`.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Discriminator, Field, Tag

from engine.model.base import STEP_ID_RE as _STEP_ID_RE
from engine.model.base import Duration, Model, Ref, RelativePath
from engine.model.resource import Resource
from engine.model.triggers import SUBJECT, PollTrigger, ScheduleTrigger, StreamTrigger


class TemplateValue(Model):
    template: str


class ConstValue(Model):
    const: Any


class MapValue(Model):
    map: Ref
    input: str = "data"


def _value_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "expression"
    if isinstance(value, dict):
        for key in ("template", "const", "map"):
            if key in value:
                return f"{key}-value"  # tags differ from keys so error paths stay paths
    return None


Value = Annotated[
    Annotated[str, Tag("expression")]
    | Annotated[TemplateValue, Tag("template-value")]
    | Annotated[ConstValue, Tag("const-value")]
    | Annotated[MapValue, Tag("map-value")],
    Discriminator(
        _value_kind,
        custom_error_type="value",
        custom_error_message=(
            "a value is a JMESPath string, {template: ...}, {const: ...} or {map: ...}"
        ),
    ),
]


class TriggerRecord(Model):
    """`record:` on a webhook trigger: which record a delivery is about (echo suppression)."""

    type: str                        # a record type the System's write operations declare
    id: str                          # JMESPath over {data, event}; no string/number: no check
    fields: str = "data"             # JMESPath: the record's fields in the delivery
    changed: str | None = None       # JMESPath: the fields the delivery says changed (a list of
    #                                  dotted names, or an object of previous values)


class WebhookTrigger(Model):
    path: str = Field(pattern=r"^/[A-Za-z0-9_\-./]*$")
    system: str
    record: TriggerRecord | None = None


class ApiTrigger(Model):
    path: str = Field(pattern=r"^/[A-Za-z0-9_\-./]*$")
    timeout: Duration = 10.0


class Trigger(Model):
    _exclusive: ClassVar[tuple[str, ...]] = ("webhook", "event", "api", "schedule", "poll",
                                             "stream")
    webhook: WebhookTrigger | None = None
    event: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-.]+$")
    api: ApiTrigger | None = None
    schedule: ScheduleTrigger | None = None
    poll: PollTrigger | None = None
    stream: StreamTrigger | None = None


class RouteSpec(Model):
    """`system: {route: EXPR, cases: {VALUE: SYSTEM}, default: SYSTEM}`: the System by data."""

    route: str                         # JMESPath; its value picks a case
    cases: dict[str, Ref] = Field(min_length=1)
    default: Ref | None = None         # none: a value without a case parks the run (NO_ROUTE)


class CallSpec(Model):
    system: Ref | RouteSpec
    operation: str
    params: dict[str, Value] = Field(default_factory=dict)
    query: dict[str, Value] = Field(default_factory=dict)
    headers: dict[str, Value] = Field(default_factory=dict)
    body: Value | None = None


class Rule(Model):
    assert_: str = Field(alias="assert")
    code: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    message: str


class ValidateSpec(Model):
    schema_: Ref | None = Field(default=None, alias="schema")
    input: str | None = None          # default: the previous step's output, else `data`
    rules: list[Rule] = Field(default_factory=list)
    code: str = "VALIDATION_FAILED"   # reason code when the schema rejects the data


class EmitSpec(Model):
    type: str = Field(pattern=r"^[A-Za-z0-9_\-.]+$")
    data: Value = "data"
    subject: str | None = None        # JMESPath; default: the run's ordering key


class PublishSpec(Model):
    """`publish: {system, subject, type, data}`: a CloudEvent onto a NATS JetStream backbone."""

    system: Ref                       # a System with `nats`
    subject: str = Field(pattern=SUBJECT)
    type: str = Field(pattern=r"^[A-Za-z0-9_\-.]+$")
    data: Value = "data"


class ParkSpec(Model):
    code: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    message: str


class Authority(Model):
    """Why a step may overwrite master data in the System that owns it (domain ownership)."""

    override: str = Field(min_length=1)


class ShadowSpec(Model):
    """Mirror a write to a candidate System: same request, own idempotency key and connection
    pool, compared but never affecting the run."""

    system: Ref
    compare: str = "body"               # JMESPath over each response {status, headers, body}
    timeout: Duration | None = None     # default: the candidate System's timeout


STEP_KINDS = ("map", "validate", "call", "emit", "set", "park", "publish")


class Step(Model):
    _exclusive: ClassVar[tuple[str, ...]] = STEP_KINDS
    id: str = Field(pattern=_STEP_ID_RE)
    needs: list[str] = Field(default_factory=list)
    when: str | None = None
    input: str | None = None          # for `map`: the mapping's input (default `data`)
    retry: Ref | None = None
    compensate: CallSpec | None = None
    authority: Authority | None = None
    shadow: ShadowSpec | None = None  # only with `call`
    map: Ref | None = None
    validate_: ValidateSpec | None = Field(default=None, alias="validate")
    call: CallSpec | None = None
    emit: EmitSpec | None = None
    set: dict[str, Value] | None = None
    park: ParkSpec | None = None
    publish: PublishSpec | None = None

    @property
    def kind(self) -> str:
        for kind in STEP_KINDS:
            if kind in self.model_fields_set or f"{kind}_" in self.model_fields_set:
                return kind
        raise AssertionError("a validated step has exactly one kind")


class StubResponse(Model):
    status: int = 200
    body: Any = None
    headers: dict[str, str] = Field(default_factory=dict)


class ExpectedCall(Model):
    system: str
    operation: str
    body: Any = None


class ExpectedEmit(Model):
    type: str
    data: Any = None


class ExpectedPublish(Model):
    """A CloudEvent a `publish` step put on the backbone (the test's in-memory one)."""

    subject: str
    type: str
    data: Any = None


class FlowExpect(Model):
    state: str = "succeeded"
    calls: list[ExpectedCall] | None = None
    emits: list[ExpectedEmit] | None = None
    publishes: list[ExpectedPublish] | None = None
    output: Any = None
    reason: str | None = None         # the reason code of a parked / dead-lettered run
    steps: dict[str, Any] = Field(default_factory=dict)  # step id -> expected output
    shadows: dict[str, dict[str, Any]] = Field(default_factory=dict)  # step id -> shadow result


class EarlierWrite(Model):
    """A write Syncline made before a test's delivery (`written:`): fingerprinted as a run's
    would be, so the test's input can be its echo coming back."""

    system: str
    operation: str                   # one that declares `record`
    params: dict[str, Any] = Field(default_factory=dict)
    body: Any = None
    response: StubResponse | None = None  # its answer (none: lost)


class FlowTest(Model):
    name: str
    input: Any = None
    input_file: RelativePath | None = Field(default=None, alias="inputFile")
    responses: dict[str, StubResponse | list[StubResponse]] = Field(default_factory=dict)
    written: list[EarlierWrite] = Field(default_factory=list)  # echo suppression: earlier writes
    expect: FlowExpect = Field(default_factory=FlowExpect)


class OrderingKey(Model):
    """`orderingKey: {key: EXPR, whileParked: block|continue}` (the short form is the key)."""

    key: str                          # JMESPath: runs with one key execute one at a time
    # `block` (default): a parked run holds its key; `continue`: the flow's later runs of the
    # key go on while it is parked.
    while_parked: Literal["block", "continue"] = Field(default="block", alias="whileParked")


def _ordering_key(value: Any) -> Any:
    """The short form `orderingKey: EXPR` is `{key: EXPR}`."""
    return {"key": value} if isinstance(value, str) else value


class FlowSpec(Model):
    trigger: Trigger
    filter: str | None = None
    idempotency_key: str | None = Field(default=None, alias="idempotencyKey")
    ordering_key: Annotated[OrderingKey, BeforeValidator(_ordering_key)] | None = Field(
        default=None, alias="orderingKey"
    )
    steps: list[Step] = Field(min_length=1)
    on_failure: Literal["park", "compensate"] = Field(default="park", alias="onFailure")
    output: str | None = None
    allow_loop: bool = Field(default=False, alias="allowLoop")
    tests: list[FlowTest] = Field(default_factory=list)


class Flow(Resource):
    kind: Literal["Flow"]
    spec: FlowSpec
