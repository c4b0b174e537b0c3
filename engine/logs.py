"""Structured logs: one formatter for every `syncline` process, text or JSON lines on stderr.

Code anywhere logs with the stdlib and names the event and its fields in `extra`:

    log.warning("run parked: %s", reason.message,
                extra={"event": "run.parked", "flow": flow, "run_id": run.id, ...})

`configure_logging("json", "info")` makes each record one JSON object per line:

    {"time": "2026-12-04T10:15:30.123Z", "level": "warning", "logger": "syncline.runtime",
     "event": "run.parked", "message": "...", "flow": "...", "run_id": "...", ...}

and `"text"` one readable line: `TIME LEVEL EVENT message key=value ...`. A record without an
`event` (a library's, uvicorn's) is the event `log`. The formatter replaces every value given to
`redact` (secret values, tokens) wherever it appears, exception text included: a guard behind
the rule that no secret, token, auth header or payload body is ever passed to a log call.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")
REDACTED = "[redacted]"
MIN_REDACT = 6  # shorter values would mangle lines more than they hide
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__
) | {"message", "asctime", "color_message", "taskName"}  # color_message: uvicorn's copy


def iso_time(created: float) -> str:
    """Unix seconds as ISO 8601 UTC with milliseconds: `2026-12-04T10:15:30.123Z`."""
    millis = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{millis:03d}Z"


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The `extra` fields of a record (everything the stdlib did not put there but None)."""
    return {
        k: v
        for k, v in record.__dict__.items()
        if k not in _STANDARD and k != "event" and v is not None
    }


class _Redacting(logging.Formatter):
    """Shared by both formats: the secret values to blank out of every line."""

    def __init__(self) -> None:
        super().__init__()
        self.redactions: tuple[str, ...] = ()

    def redact(self, values: Iterable[str]) -> None:
        """Add values never to print (longest first, so a value inside another goes too)."""
        found = {v for v in (*self.redactions, *values) if v and len(v) >= MIN_REDACT}
        self.redactions = tuple(sorted(found, key=len, reverse=True))

    def scrub(self, line: str) -> str:
        for value in self.redactions:
            if value in line:
                line = line.replace(value, REDACTED)
        return line

    def event_of(self, record: logging.LogRecord) -> str:
        return str(getattr(record, "event", None) or "log")


class JsonFormatter(_Redacting):
    """One JSON object per record: time, level, logger, event, message, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": iso_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": self.event_of(record),
            "message": record.getMessage(),
        }
        document.update(fields_of(record))
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return self.scrub(json.dumps(document, default=str, ensure_ascii=False))


class TextFormatter(_Redacting):
    """`TIME LEVEL EVENT message key=value ...` on one line (a traceback follows, indented)."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [iso_time(record.created), f"{record.levelname:<7}", self.event_of(record)]
        message = record.getMessage()
        if message:
            parts.append(message)
        parts.extend(f"{k}={_text(v)}" for k, v in fields_of(record).items())
        line = " ".join(parts)
        if record.exc_info:
            trace = self.formatException(record.exc_info)
            line += "\n" + "\n".join("    " + t for t in trace.splitlines())
        return self.scrub(line)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value if value and " " not in value and "=" not in value else json.dumps(value)
    return json.dumps(value, default=str, separators=(",", ":"))


def default_format(stream: TextIO | None = None) -> str:
    """`text` on a terminal, else `json` (what a log collector reads)."""
    stream = stream or sys.stderr
    return "text" if stream.isatty() else "json"


_HANDLER: logging.Handler | None = None


def configure_logging(
    fmt: str | None = None, level: str = "info", stream: TextIO | None = None
) -> logging.Handler:
    """Send every logger's records (uvicorn's too) through one handler on `stream` (stderr) in
    `fmt` (None: `default_format`); `level` applies to Syncline's loggers (uvicorn's say only
    warnings, unless `level` is debug).
    Calling it again replaces the handler (a process configures logging once, at start)."""
    global _HANDLER
    stream = stream or sys.stderr
    formatter = JsonFormatter() if (fmt or default_format(stream)) == "json" else TextFormatter()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    if _HANDLER is not None:
        root.removeHandler(_HANDLER)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)  # libraries: warnings and worse
    numeric = logging.getLevelName(level.upper())
    logging.getLogger("syncline").setLevel(numeric)
    # uvicorn's start/stop chatter only at debug: the startup event says where it listens
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING) if numeric > 10 else 10)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)  # no per-request lines
    _HANDLER = handler
    return handler


def redact(values: Iterable[str]) -> None:
    """Never print these values (secrets, tokens) in any line of the configured handler."""
    if _HANDLER is not None and isinstance(_HANDLER.formatter, _Redacting):
        _HANDLER.formatter.redact(values)


def quiet() -> None:
    """Keep Syncline's own events off stderr (for a command that reports in its own way);
    other libraries' warnings still show."""
    logging.getLogger("syncline").addHandler(logging.NullHandler())
