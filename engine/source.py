"""Where things are in the user's files, and how a located message prints."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, order=True)
class SourceLocation:
    """A position in a definition file; `path` is relative to the project root, line/col 1-based."""

    path: str
    line: int = 1
    col: int = 1

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"


#: Codes of errors that cause others (a file that does not load, a document that does not
#: parse): they sort first, so a reader meets the cause before its consequences.
LOADING_CODES = frozenset({"E_YAML", "E_YAML_TAG", "E_YAML_DUPKEY", "E_YAML_ALIAS",
                           "E_YAML_SIZE", "E_PROJECT"})
STRUCTURE_CODES = frozenset({"E_ENV", "E_KIND", "E_UNKNOWN_FIELD", "E_INVALID", "E_INTERP"})


@functools.total_ordering
@dataclass(frozen=True)
class Diagnostic:
    """One compiler message. Sorts root causes first (loading, then structure errors), then
    by file, line, column and code."""

    location: SourceLocation
    code: str
    message: str
    severity: Severity = "error"

    def _key(self) -> tuple[int, SourceLocation, str, str, str]:
        stage = 0 if self.code in LOADING_CODES else 1 if self.code in STRUCTURE_CODES else 2
        return stage, self.location, self.code, self.message, self.severity

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Diagnostic):
            return NotImplemented
        return self._key() < other._key()

    def format(self) -> str:
        """`FILE:LINE:COL: error[CODE] message`, the form editors jump to."""
        return f"{self.location}: {self.severity}[{self.code}] {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.location.path,
            "line": self.location.line,
            "col": self.location.col,
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
        }
