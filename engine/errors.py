"""Syncline's one exception tree.

    SynclineError
    +-- DefinitionError            compile time: something in the YAML is wrong
    |   +-- DefinitionErrors       every diagnostic of one compile, raised together
    |   +-- ExpressionSyntaxError  a JMESPath expression or template does not compile
    +-- ExecutionError             run time
    |   +-- ExpressionError        a JMESPath expression or template failed on real data
    |   +-- MappingError           a mapping could not produce a valid target document
    |   +-- ValidationFailed       a `validate` step's schema or rules rejected the data
    |   +-- CallError              an outbound call failed (carries status, retryable, retry_after)
    |   +-- CallHeld               a call was not sent: its System is paused or its circuit open
    |   +-- ParkRequested          a step asked for a human (reason code, message)
    +-- StoreError                 the durable store refused or lost its connection
    +-- UsageError                 the CLI or API was called wrongly

Foreign exceptions (ruamel, pydantic, jmespath, jinja2, httpx, sqlite3) are caught where they enter
and re-raised as one of these with ``from exc``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.source import Diagnostic, SourceLocation


class SynclineError(Exception):
    """Base of every error Syncline raises on purpose."""


class DefinitionError(SynclineError):
    """A definition (YAML) is wrong; carries one diagnostic."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(diagnostic.format())
        self.diagnostic = diagnostic


class DefinitionErrors(DefinitionError):
    """Every error diagnostic of one compile (warnings ride along)."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = sorted(diagnostics)
        errors = [d for d in self.diagnostics if d.severity == "error"]
        SynclineError.__init__(self, "\n".join(d.format() for d in errors))
        self.diagnostic = errors[0] if errors else self.diagnostics[0]


class ExpressionSyntaxError(DefinitionError):
    """An expression or template does not compile; ``message`` says what and where in its text.

    ``offset`` is the 0-based column in the text where the parser stopped (JMESPath), ``lineno``
    the 1-based line (templates). The compiler raises it without a file location (one text
    compiles once, whoever uses it); ``at`` places it where the text stands in the YAML.
    """

    def __init__(self, message: str, *, text: str, code: str = "E_JMESPATH",
                 offset: int | None = None, lineno: int | None = None) -> None:
        self.message, self.text, self.code = message, text, code
        self.offset, self.lineno = offset, lineno
        column = 1 if offset is None else offset + 1
        super().__init__(Diagnostic(SourceLocation("<expression>", lineno or 1, column), code,
                                    message))

    def at(self, where: SourceLocation, message: str) -> Diagnostic:
        """This error as a diagnostic at ``where`` (the position the offset points at)."""
        return Diagnostic(where, self.code, message)


class ExecutionError(SynclineError):
    """Something failed while a run executed."""


class ExpressionError(ExecutionError):
    """An expression or template raised on real data."""


@dataclass
class FieldProblem:
    """One problem of a mapped or validated document: where (a dotted path) and why."""

    path: str
    message: str
    code: str = "INVALID"

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message, "code": self.code}


class MappingError(ExecutionError):
    """A mapping could not produce its target document."""

    def __init__(self, mapping: str, problems: Sequence[FieldProblem]) -> None:
        self.mapping = mapping
        self.problems = list(problems)
        detail = "; ".join(f"{p.path}: {p.message}" for p in self.problems)
        super().__init__(f"mapping {mapping!r} failed: {detail}")


class ValidationFailed(ExecutionError):
    """A `validate` step (or a mapping's schema) rejected the data."""

    def __init__(self, code: str, problems: Sequence[FieldProblem]) -> None:
        self.code = code
        self.problems = list(problems)
        detail = "; ".join(f"{p.path or '<root>'}: {p.message}" for p in self.problems)
        super().__init__(f"{code}: {detail}")


@dataclass
class CallError(ExecutionError):
    """An outbound call failed. `retryable` and `retry_after` steer the retry policy."""

    message: str
    status: int | None = None
    kind: str = "status"  # status | timeout | network
    retryable: bool = False
    retry_after: float | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)


class CallHeld(ExecutionError):
    """A call was not sent: its System is paused (SYSTEM_PAUSED) or its circuit is open
    (CIRCUIT_OPEN). The run waits until `until` (unix seconds) without spending an attempt."""

    def __init__(self, code: str, message: str, until: float) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.until = until


class ParkRequested(ExecutionError):
    """A step stops the run for a human: reason code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class StoreError(SynclineError):
    """The durable store failed."""


class StateConflict(StoreError):
    """A run was not in a state a change expected: it moved on meanwhile (the change is not
    made; reading the run again and deciding anew may succeed)."""


class UsageError(SynclineError):
    """The command line or an API was called wrongly."""
