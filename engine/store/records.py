"""The records the store keeps and answers: events, runs, steps, checkpoints, state changes,
and the `RunQuery` that filters run listings. Plain values; `base.Store` says what is done with
them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from engine.errors import UsageError

RunState = Literal[
    "pending", "running", "waiting", "succeeded", "filtered", "parked",
    "dead-lettered", "compensated", "cancelled", "failed",
]
TERMINAL_STATES: frozenset[str] = frozenset(
    {"succeeded", "filtered", "dead-lettered", "compensated", "cancelled", "failed"}
)
# `parked` is not terminal: an operator resumes or cancels it. It still blocks its ordering key.
RUNNABLE_STATES: frozenset[str] = frozenset({"pending", "running", "waiting"})
# The reason code of an operator's cancel. A `running` run carrying it has a cancel request: see
# `Store.checkpoint`.
CANCELLED = "CANCELLED"
# The states that end a compensation: the only ones a checkpoint may give a run with a cancel
# request, unless the checkpoint carries the CANCELLED reason itself.
CANCEL_ENDS: frozenset[str] = frozenset({"cancelled", "compensated", "failed"})


# The metric labels a run resolved from its data and steps: (metric, label values) for each
# metric that counts it now (engine/compiler/metric_labels.py; engine/store/label_tallies.py).
RunLabels = tuple[tuple[str, tuple[str, ...]], ...]


class _Record:
    """Pickles as a call of its class with its field values, in order: records cross to the
    SQLite writer process (engine/store/writer.py) on every write, and the default pickling of a
    frozen dataclass costs several times more."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), tuple(self.__dict__.values()))


class ReceivedJSON(dict):  # type: ignore[type-arg]
    """A JSON object exactly as parsed from `text`, the payload's own JSON text.

    Ingest hands the store one of these as an event's `data`, so the store keeps the text as it
    came instead of encoding the dict again. It is the dict in every other respect; whoever
    builds one promises that `json.loads(text)` equals it, and nobody changes it afterwards."""

    __slots__ = ("text",)

    def __init__(self, parsed: dict[str, Any], text: str) -> None:
        super().__init__(parsed)
        self.text = text


@dataclass(frozen=True)
class EventRecord(_Record):
    """An accepted inbound (or emitted) event, CloudEvents-shaped."""

    id: str                      # unique event id (ce id, webhook-id, or generated)
    type: str                    # CloudEvents type, or "webhook:<path>" / "api:<path>"
    source: str
    data: Any                    # the parsed payload
    subject: str | None = None
    time: str | None = None      # RFC 3339
    attributes: dict[str, Any] = field(default_factory=dict)  # other ce attributes, headers kept


class NewRun(NamedTuple):
    """A run to create together with its event. (A named tuple: every accept makes one, and a
    frozen dataclass of these fields costs three times as much to build.)"""

    id: str
    flow: str
    flow_version: int
    plan_digest: str
    key: str                     # idempotency key: (flow, key) is unique
    ordering_key: str | None
    correlation_id: str
    traceparent: str | None = None
    state: RunState = "pending"  # "filtered" for a filter non-match (recorded, never executed)
    replay_of: str | None = None
    parked_holds_key: bool = True  # False: its flow's `orderingKey.whileParked` is `continue`
    reason: Reason | None = None  # why it is filtered, when a filter is not all (ECHO)
    labels: RunLabels | None = None  # None: no metric reads its data or steps


class Acceptance(NamedTuple):
    """What `accept` did for one NewRun. (A named tuple: every accept makes one, and answers it
    across from the SQLite writer process.)"""

    run_id: str                  # the new run, or the existing one for a duplicate
    status: Literal["accepted", "duplicate", "filtered"]
    correlation_id: str


@dataclass(frozen=True)
class Reason(_Record):
    """Why a run is parked / dead-lettered / failed."""

    code: str
    step: str | None
    message: str


@dataclass
class RunRecord(_Record):
    id: str
    flow: str
    flow_version: int
    plan_digest: str
    event_id: str
    state: str
    key: str
    ordering_key: str | None
    correlation_id: str
    traceparent: str | None
    created_at: float            # unix seconds
    updated_at: float
    seq: int                     # arrival order (monotonic)
    next_attempt_at: float | None = None
    reason: Reason | None = None
    replay_of: str | None = None
    replayed_by: list[str] = field(default_factory=list)
    data_override: Any = None    # corrected data given on resume (None: use the event's data)
    has_override: bool = False
    generation: int = 0          # bumped by a resume with corrected data: new idempotency keys
    # The run's generation in its history (engine/store/history.py): 0 when accepted, one more
    # each time an operator queues it again; its attempts carry it.
    history_generation: int = 0
    # What executing the run needs, loaded by `claim` in its own transaction (no extra reads per
    # run); None on records from anything else.
    event: EventRecord | None = None
    steps: dict[str, StepRecord] | None = None


@dataclass(frozen=True)
class Attempt(_Record):
    """One try of a step (a call attempt, or the single execution of a local step)."""

    n: int
    started_at: float
    finished_at: float
    outcome: str                 # ok | retry | error | park | timeout ...
    status: int | None = None
    error: str | None = None
    request: Any = None          # what was sent (headers without secrets, body)
    response: Any = None
    generation: int = 0          # the run's history generation it was made in


@dataclass
class StepRecord(_Record):
    run_id: str
    step_id: str
    state: str                   # succeeded | skipped | failed | waiting | compensated
    output: Any = None
    input_digest: str | None = None
    error: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    updated_at: float = 0.0


@dataclass(frozen=True)
class Checkpoint(_Record):
    """One atomic write after a step: its record, the run's new state, and emitted events."""

    run_id: str
    step: StepRecord | None
    run_state: str | None = None          # new state, None = unchanged
    next_attempt_at: float | None = None
    reason: Reason | None = None
    emitted: Sequence[EventRecord] = ()   # go to the outbox in the same transaction
    clear_lease: bool = False
    labels: RunLabels | None = None       # the run's metric labels again (None: unchanged)


@dataclass(frozen=True)
class OutboxItem(_Record):
    seq: int
    run_id: str
    event: EventRecord


@dataclass(frozen=True)
class CorrectedData(_Record):
    """Data an operator gives a run in place of its event's (null is a value like any other)."""

    value: Any


def data_sha256(value: Any) -> str:
    """The SHA-256 of a JSON value's canonical text (sorted keys, no spaces): how the audit log
    and a run's history name corrected data."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class StateChange(_Record):
    """A change of a run's state by an operator action, applied by `Store.set_run_state` in one
    transaction with its audit entry."""

    state: str                          # the new state
    expect: tuple[str, ...] = ()        # refuse (StateConflict) unless the run is in one; (): any
    reason: Reason | None = None        # replaces the run's reason; None clears it
    reset_steps: tuple[str, ...] = ()   # step records deleted, so that those steps run again
    data: CorrectedData | None = None   # stored as the run's data; bumps its `generation`, so
                                        # the calls that run again carry new idempotency keys
    actor: str = "system"               # who, for the audit log
    action: str | None = None           # the audit entry's action; None: "set-state:<state>"
    note: str | None = None             # the operator's reason, in words
    labels: RunLabels | None = None     # the run's metric labels again (None: unchanged)

    def audit_detail(self, previous: str) -> dict[str, Any]:
        """The audit entry's detail, from the run's `previous` state: never the corrected data
        itself, only its SHA-256 (of its canonical JSON)."""
        detail: dict[str, Any] = {"from": previous, "to": self.state}
        if self.note:
            detail["note"] = self.note
        if self.reason is not None:
            detail["reason"] = dict(self.reason.__dict__)
        if self.reset_steps:
            detail["reset_steps"] = list(self.reset_steps)
        if self.data is not None:
            detail["data_override"] = True
            detail["data_sha256"] = data_sha256(self.data.value)
        return detail

    @property
    def audit_action(self) -> str:
        return self.action or f"set-state:{self.state}"

    @property
    def queues_again(self) -> bool:
        """Whether the change queues the run (`pending`) again: that starts a new generation of
        its history (engine/store/history.py)."""
        return self.state == "pending"


@dataclass(frozen=True)
class RunQuery:
    """Which runs a listing answers, newest first (the store, the runtime and the admin API
    filter with it)."""

    flow: str | None = None    # only runs of this flow
    state: str | None = None   # only runs in this state
    key: str | None = None     # only runs with this idempotency key
    cursor: str | None = None  # continue after the page that gave this cursor
    limit: int = 50            # runs per page
    correlation_id: str | None = None  # only runs with this correlation id

    @property
    def before_seq(self) -> int | None:
        """The cursor as the arrival order it stands for; UsageError if it is not one."""
        if not self.cursor:
            return None
        try:
            return int(self.cursor)
        except ValueError:
            raise UsageError(f"bad cursor {self.cursor!r}") from None

    def next_cursor(self, page: Sequence[RunRecord]) -> str | None:
        """The cursor of the page after `page` (None: it was the last)."""
        return str(page[-1].seq) if page and len(page) == self.limit else None
