"""Times as the HTTP API writes and reads them (SPEC section 6): ISO 8601 UTC strings with
milliseconds, `2026-12-04T10:15:30.123Z`. The store and the runtime keep unix seconds; only the
server (and the CLI, which shows the server's JSON) turns them into text."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any


def iso(at: float) -> str:
    """Unix seconds as ISO 8601 UTC with milliseconds (`2026-12-04T10:15:30.123Z`)."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def iso_or_none(at: float | None) -> str | None:
    """`iso(at)`, or None for no time."""
    return None if at is None else iso(at)


def seconds(text: str) -> float:
    """Unix seconds of an ISO 8601 time (a date alone is its midnight UTC; no zone is UTC) or
    of a number of unix seconds; ValueError for anything else."""
    try:
        return float(text)
    except ValueError:
        pass
    when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def iso_fields(value: Mapping[str, Any], *names: str) -> dict[str, Any]:
    """A copy of `value` with its fields `names` that hold unix seconds as ISO 8601 text."""
    out = dict(value)
    for name in names:
        if isinstance(out.get(name), int | float) and not isinstance(out[name], bool):
            out[name] = iso(out[name])
    return out
