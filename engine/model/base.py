"""Shared model parts: the strict base class, names, references, durations and status classes.

Everything here parses once: a `Duration` becomes seconds, a `StatusClass` a predicate, a `Ref` a
(name, version) pair. Models hold no I/O.
"""

from __future__ import annotations

import difflib
import functools
import re
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

NAME_RE = r"^[a-z0-9][a-z0-9.-]*$"
REF_RE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9.-]*)(?:@(?P<version>[1-9][0-9]*))?$")
STEP_ID_RE = r"^[A-Za-z_][A-Za-z0-9_]*$"

_DURATION_RE = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def suggest(word: str, choices: list[str]) -> str:
    """' (did you mean 'x'?)' for the nearest choice, or ''."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Model(BaseModel):
    """Strict, frozen base: an unknown field is an error naming the nearest valid field."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)
    _exclusive: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _check_fields(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, dict):
            return value
        if isinstance(info.context, dict) and "fields" in info.context:
            # Unknown keys are reported by extra="forbid" with their own loc; this records which
            # names were valid at this spot so the error can suggest the nearest one.
            info.context["fields"][id(value)] = _field_names(cls)
        if cls._exclusive:
            present = [k for k in cls._exclusive if k in value]
            if len(present) != 1:
                names = ", ".join(f"'{k}'" for k in cls._exclusive)
                got = ", ".join(f"'{k}'" for k in present) or "none"
                raise PydanticCustomError(
                    "exclusive", "exactly one of {names} is required (got {got})",
                    {"names": names, "got": got},
                )
        return value



@functools.cache
def _field_names(model: type[Model]) -> list[str]:
    """The YAML names of a model's fields."""
    return [f.alias or name for name, f in model.model_fields.items()]


def parse_duration(value: Any) -> float:
    """`500ms`, `10s`, `5m`, `24h`, `1d` or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise PydanticCustomError("duration", "a duration like 500ms, 10s, 5m or 24h is required")
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION_RE.match(str(value))
    if not match:
        raise PydanticCustomError(
            "duration", "'{value}' is not a duration (use 500ms, 10s, 5m, 24h)", {"value": value}
        )
    return float(match["n"]) * _UNITS[match["unit"]]


Duration = Annotated[float, BeforeValidator(parse_duration)]


class StatusClass(str):
    """An outcome class: `timeout`, `network`, an exact status like `"429"` or a class `"5xx"`."""

    __slots__ = ()

    def matches(self, status: int | None, kind: str = "status") -> bool:
        if self in ("timeout", "network"):
            return kind == self
        if status is None or kind != "status":
            return False
        if self.endswith("xx"):
            return status // 100 == int(self[0])
        return status == int(self)

    @property
    def specificity(self) -> int:
        """Exact codes win over classes when both match."""
        return 2 if self.isdigit() else 1


def parse_status_class(value: Any) -> StatusClass:
    text = str(value).strip().lower()
    if text in ("timeout", "network") or re.fullmatch(r"[1-5](\d\d|xx)", text):
        return StatusClass(text)
    raise PydanticCustomError(
        "status_class",
        "'{value}' is not a status class (use timeout, network, \"429\" or \"5xx\")",
        {"value": value},
    )


Status = Annotated[StatusClass, PlainValidator(parse_status_class)]
DEFAULT_RETRY_ON = tuple(StatusClass(x) for x in ("timeout", "network", "429", "5xx"))


def _check_ref(value: Any) -> str:
    if not isinstance(value, str) or not REF_RE.match(value):
        raise PydanticCustomError(
            "reference", "'{value}' is not a reference (use name or name@N)", {"value": value}
        )
    return value


Ref = Annotated[str, BeforeValidator(_check_ref)]
Name = Annotated[str, Field(pattern=NAME_RE)]


def _check_relative(value: Any) -> str:
    parts = value.replace("\\", "/").split("/") if isinstance(value, str) else []
    if not isinstance(value, str) or value.startswith(("/", "~")) or ".." in parts or (
            len(value) > 1 and value[1] == ":"):
        raise PydanticCustomError(
            "relative_path", "'{value}' must be a relative path inside the project (no "
            "absolute path, no '..')", {"value": value})
    return value


RelativePath = Annotated[str, BeforeValidator(_check_relative)]
"""A file or folder named by a definition: relative, and never leaving the project."""


def split_ref(ref: str) -> tuple[str, int | None]:
    """'order@2' -> ('order', 2); 'order' -> ('order', None)."""
    match = REF_RE.match(ref)
    if not match:
        raise ValueError(f"bad reference {ref!r}")
    version = match["version"]
    return match["name"], int(version) if version else None
