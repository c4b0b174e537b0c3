"""Where things are in the user's files, and how a located message prints."""

from __future__ import annotations

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


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One compiler message. Sorts by file, line, column, then code."""

    location: SourceLocation
    code: str
    message: str
    severity: Severity = "error"

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
