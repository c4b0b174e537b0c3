"""Echo suppression: Syncline's own writes coming back as webhooks start nothing.

Before a write to an operation with `record: {type, id}` of a System with `echo: {window}` is
sent, its `WriteFingerprint` stores the fingerprint (System, record type and id, the values of
the fields its body sets, the run and step) in the store, where every replica sees it; it lives
for the window. Stored first, so a write whose answer was lost (or whose run crashed) still
counts. A `record` reading the write's `response` (`fields: response.body`; a create's `id:
response.body.id`) is completed from the answer: an update then holds the answer's values of the
fields its request set (`written`), a create its whole answer. Until the answer is in, the
stored write awaits it (`answer_by`), and a delivery about the record (for a create: about any
record of its type) that is no echo yet waits for it before it is decided.

A delivery to a webhook trigger with `record:` is checked by `EchoGuard.check` before its run is
accepted. No record id (the expression yields no string or number) or no live fingerprint of the
record: no echo, and nothing more is read or written. Otherwise the delivery is compared with what
Syncline last knew of the record: the record as the last delivery showed it, with every write
made since laid over it. The fields compared are those the delivery says changed (`changed`), or
else all its fields, and of those only the ones the triggered flows read. When none of them
differs, the delivery is Syncline's own change coming back: an echo, naming the run that wrote
it. A field Syncline never knew counts as a difference, so a person's edit made at the same
moment as Syncline's write always runs.

Values compare as JSON values: objects regardless of key order, numbers as decimals (`100`,
`100.0` and `1e2` are equal), and a number equals a string holding the same decimal where the
record's Schema types the field as a number (`"100.00"`); `true` never equals `1`.
"""

from __future__ import annotations

import asyncio
import decimal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.compiler.compiled import EchoCheck, RecordWrite
from engine.compiler.expressions import Expression
from engine.errors import ExpressionError
from engine.runtime.calls import OutboundRequest
from engine.store.echoes import CREATING, Echoes, Fields, Known, Path, RecordKey, Write

__all__ = ["ECHO", "EchoGuard", "Echoed", "Fingerprints", "WriteFingerprint", "flatten",
           "same_value", "written"]

ECHO = "ECHO"  #: the reason code of a filtered echo
ANSWER_POLL = 0.02  # seconds between looks at a write whose answer a delivery waits for
_MISSING = object()


@dataclass(frozen=True)
class Echoed:
    """A delivery recognised as the echo of a write."""

    system: str
    record_type: str
    record_id: str
    run_id: str   # the run whose write came back
    step_id: str

    @property
    def message(self) -> str:
        return (f"{self.system} {self.record_type} {self.record_id}: the echo of run "
                f"{self.run_id} (step {self.step_id}); nothing else changed that a flow reads")


class Fingerprints:
    """Makes the fingerprint of each write to a record (`WriteFingerprint`)."""

    def __init__(self, echoes: Echoes, clock: Callable[[], float]) -> None:
        self.echoes, self.clock = echoes, clock

    def write(self, request: OutboundRequest, run_id: str,
              step_id: str) -> WriteFingerprint | None:
        """The fingerprint of one write, or None where it leaves none."""
        record = request.system.records.get(request.operation)
        if record is None or request.system.echo_window is None or not request.writes:
            return None
        return WriteFingerprint(self, record, request, run_id, step_id)


@dataclass
class WriteFingerprint:
    """One write's fingerprint: stored before the write is sent (so a write whose answer was
    lost, or whose run crashed, still counts), then completed from the answer where the record
    reads it (`record.fields: response.body`, a create's `id: response.body.id`)."""

    owner: Fingerprints
    record: RecordWrite
    request: OutboundRequest
    run_id: str
    step_id: str
    stored: tuple[RecordKey, Write] | None = None

    async def before(self) -> None:
        """Store the fingerprint as the request shows it, awaiting the answer where it reads
        one (a create has no record id until then)."""
        record, request, system = self.record, self.request, self.request.system
        assert system.echo_window is not None
        view = self._view(None)
        ident = CREATING if record.creates else _search_id(record.id, view)
        if ident is None:  # no id for this request: it leaves no fingerprint
            return
        reads_answer = record.fields is not None and record.from_answer and not record.creates
        fields = (_body_fields(request) if record.fields is None or reads_answer
                  else _search_fields(record.fields, view))
        now = self.owner.clock()
        due = now + system.timeout if record.from_answer else None
        key = RecordKey(system.name, record.type, ident)
        write = Write(self.run_id, self.step_id, now, now + system.echo_window, fields, due)
        await self.owner.echoes.fingerprint(key, write)
        self.stored = (key, write)

    async def answered(self, status: int | None, body: Any) -> None:
        """The write's answer (status None: none came, or it failed): a fingerprint awaiting it
        takes the record's id and fields from it, or keeps what the request showed."""
        if self.stored is None or not self.record.from_answer:
            return
        key, write = self.stored
        if status is None:
            await self.owner.echoes.answered(key, write, None, None)
            return
        record, view = self.record, self._view({"status": status, "body": body})
        ident = _search_id(record.id, view) if record.creates else None
        fields = None
        if record.fields is not None:
            fields = _search_fields(record.fields, view)
            if not record.creates:  # an update wrote what its request sets, as now held
                fields = written(fields, _body_fields(self.request))
        await self.owner.echoes.answered(key, write, ident, fields)

    def _view(self, response: Mapping[str, Any] | None) -> dict[str, Any]:
        request = self.request
        return {"params": dict(request.params), "query": dict(request.query),
                "body": request.body, "response": response}


def _body_fields(request: OutboundRequest) -> Fields:
    return flatten(request.body) if isinstance(request.body, dict) else {}


def _search_id(expression: Expression, view: Mapping[str, Any]) -> str | None:
    try:
        return record_id(expression.search(view))
    except ExpressionError:
        return None


def _search_fields(expression: Expression, view: Mapping[str, Any]) -> Fields:
    try:
        value = expression.search(view)
    except ExpressionError:
        return {}
    return flatten(value) if isinstance(value, dict) else {}


def written(answer: Fields, request: Fields) -> Fields:
    """The fields of an update's answer its request set: at, below or above a path the request
    body sets (`items: [{id, price_data}]` sets `items.data` as the System holds it). The rest
    of the answer (values someone else set before the write, fields the System derived) is not
    Syncline's: a delivery of someone's earlier edit arriving after the write still runs."""
    return {path: value for path, value in answer.items()
            if any(path[:len(q)] == q or q[:len(path)] == path for q in request)}


class Lookups:
    """What is known of records (None: no live fingerprint), asked for many deliveries at once:
    the lookups queued while one read runs go together in the next (as group commit does for
    writes), so the check costs a delivery a share of one indexed read."""

    def __init__(self, echoes: Echoes, clock: Callable[[], float]) -> None:
        self.echoes, self.clock = echoes, clock
        self._queue: list[tuple[RecordKey, asyncio.Future[Known | None]]] = []
        self._reader: asyncio.Task[None] | None = None

    async def known(self, key: RecordKey) -> Known | None:
        future: asyncio.Future[Known | None] = asyncio.get_running_loop().create_future()
        self._queue.append((key, future))
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())
        return await future

    async def _read(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    found = await self.echoes.lookup([key for key, _ in batch], self.clock())
                except Exception as exc:  # noqa: BLE001 - each waiting delivery gets the error
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for key, future in batch:
                    if not future.done():
                        future.set_result(found.get(key))
        finally:
            self._reader = None


class EchoGuard:
    """Recognises deliveries that are echoes of Syncline's writes."""

    def __init__(self, echoes: Echoes, clock: Callable[[], float]) -> None:
        self.echoes, self.clock = echoes, clock
        self.lookups = Lookups(echoes, clock)

    async def check(self, echo: EchoCheck, context: Mapping[str, Any]) -> Echoed | None:
        """The write a delivery echoes, or None (then its run goes ahead as usual)."""
        try:
            ident = record_id(echo.id.search(context))
        except ExpressionError:  # an id expression that fails on this delivery: no id
            return None
        if ident is None:
            return None
        key = RecordKey(echo.system, echo.type, ident)
        known = await self.lookups.known(key)
        if known is None:
            return None
        try:
            record = echo.fields.search(context)
            said = echo.changed.search(context) if echo.changed is not None else None
        except ExpressionError:
            return None
        if not isinstance(record, dict):
            return None
        fields = flatten(record)
        changed = changed_paths(said, fields, echo.numeric) if echo.changed is not None else None
        known, write = await self._decide(key, known, fields, changed, echo)
        if not known.writes:
            return None
        base = last_known(known)
        merged = {**base, **fields}
        if merged != base:  # else storing it would change nothing it is compared with
            await self.echoes.seen(key, merged, self.clock(),
                                   max(w.expires_at for w in known.writes))
        if write is None:
            return None
        return Echoed(echo.system, echo.type, ident, write.run_id, write.step_id)

    async def _decide(self, key: RecordKey, known: Known, fields: Fields,
                      changed: set[Path] | None, echo: EchoCheck) -> tuple[Known, Write | None]:
        """The write the delivery echoes, if any. While a write's answer that may complete what
        is known is awaited (the System's webhook overtook the answer to Syncline's own call,
        as it often does), a delivery that is no echo yet waits for it, and no longer than
        the call's timeout."""
        deadline = known.awaiting
        while True:
            write = decide(known, last_known(known), fields, changed, echo) if known.writes \
                else None
            if write is not None or known.awaiting is None or deadline is None \
                    or self.clock() >= deadline:
                return known, write
            await asyncio.sleep(ANSWER_POLL)
            known = await self.lookups.known(key) or Known((), None, 0.0)


def record_id(value: Any) -> str | None:
    """A record id as text: a non-empty string, or a number; anything else is no id."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def last_known(known: Known) -> Fields:
    """The record as the last delivery showed it, with the writes made since laid over it."""
    base = dict(known.seen or {})
    for write in known.writes:
        if write.written_at >= known.seen_at:
            base.update(write.fields)
    return base


def decide(known: Known, base: Fields, fields: Fields, changed: set[Path] | None,
           echo: EchoCheck) -> Write | None:
    """The write the delivery echoes, or None when a field the flows read differs from `base`
    (or was never known)."""
    compared = _leaves_under(changed, fields, base) if changed is not None else set(fields)
    compared = {p for p in compared if _is_read(p, echo.reads)}
    for path in compared:
        if path not in base:
            return None
        if not same_value(base[path], fields.get(path, _MISSING), ".".join(path) in echo.numeric):
            return None
    touching = [w for w in known.writes if compared & set(w.fields)]
    return (touching or list(known.writes))[-1]


def _leaves_under(changed: Iterable[Path], fields: Fields, base: Fields) -> set[Path]:
    """The leaf paths each changed path stands for (itself, or the leaves below it)."""
    leaves: set[Path] = set()
    for path in changed:
        below = {p for p in (*fields, *base) if p[: len(path)] == path}
        leaves |= below or {path}
    return leaves


def _is_read(path: Path, reads: frozenset[tuple[str | int, ...]] | None) -> bool:
    if reads is None:
        return True
    return any(path[: len(r)] == r or r[: len(path)] == path for r in reads)


def changed_paths(value: Any, fields: Fields, numeric: frozenset[str]) -> set[Path] | None:
    """What a delivery says changed: a list of (dotted) field names, or an object of previous
    values (Stripe's `previous_attributes`: a field whose previous value equals its value did
    not change). Anything else: None, every field is compared."""
    if isinstance(value, list):
        return {tuple(str(name).split(".")) for name in value if isinstance(name, str)}
    if not isinstance(value, dict):
        return None
    changed: set[Path] = set()
    for name, previous in value.items():
        before = flatten(previous, (str(name),))
        after = {p: v for p, v in fields.items() if p[:1] == (str(name),)}
        for path in {*before, *after}:
            numeric_field = ".".join(path) in numeric
            if not same_value(before.get(path, _MISSING), after.get(path, _MISSING),
                              numeric_field):
                changed.add(path)
    return changed


def flatten(value: Any, prefix: Path = ()) -> Fields:
    """A JSON value as {field path: value}; objects are followed, anything else is a leaf."""
    if isinstance(value, dict) and value:
        out: Fields = {}
        for key, sub in value.items():
            out.update(flatten(sub, (*prefix, str(key))))
        return out
    return {prefix: value}


def same_value(a: Any, b: Any, numeric: bool = False) -> bool:
    """Whether two JSON values are the same (see the module docstring)."""
    if a is _MISSING or b is _MISSING:
        return a is b
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    x, y = _decimal(a, numeric), _decimal(b, numeric)
    if x is not None and y is not None:
        return x == y
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k], numeric) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        pairs = zip(a, b, strict=True) if len(a) == len(b) else None
        return pairs is not None and all(same_value(p, q, numeric) for p, q in pairs)
    return bool(a == b) and type(a) is type(b)


def _decimal(value: Any, numeric: bool) -> decimal.Decimal | None:
    if isinstance(value, int | float):
        return decimal.Decimal(repr(value)) if value == value else None  # NaN equals nothing
    if numeric and isinstance(value, str):
        try:
            parsed = decimal.Decimal(value.strip())
        except decimal.InvalidOperation:
            return None
        return parsed if parsed.is_finite() else None
    return None
