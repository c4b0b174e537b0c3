"""The server's settings, read once (by the CLI) into a frozen value the app only reads.

Environment variables, all optional:

    SYNCLINE_ADMIN_TOKEN     bearer token of the admin API (/api/v1/...); without it the admin
                             API answers only to loopback clients
    SYNCLINE_INGEST_TOKEN    bearer token for POST /events and process APIs (the admin token is
                             accepted too); without either, those answer only on loopback
    SYNCLINE_TOKENS_FILE     YAML list of named tokens {name, role, sha256, flows} (see
                             engine/server/auth.py); hot-reloaded
    SYNCLINE_SESSION_KEY     key signing console session cookies (default: random per process,
                             so sessions end on restart; set it to share them across replicas)
    SYNCLINE_MAX_BODY        largest request body in bytes (default 1 MiB)
    SYNCLINE_MAX_PENDING     ingest requests in progress before new ones get 503 (default 2048)
    SYNCLINE_API_TIMEOUT     cap, in seconds, on a process API's wait (default: the flow's own)
    SYNCLINE_ALERT_EVERY     seconds between evaluations of the Alerts (default 10)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from engine.errors import UsageError

MIB = 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """How one `syncline serve` behaves. Built once; nothing in the app reads the environment."""

    project: Path = Path(".")
    """The project directory (holds syncline.yaml); watched for changes."""
    environment: str | None = None
    """The environment of syncline.yaml to compile for (None: the project's first)."""
    admin_token: str | None = None
    """Bearer token of the admin API; None: admin answers only to loopback clients."""
    ingest_token: str | None = None
    """Bearer token of /events and process APIs; None: admin token, else loopback only."""
    tokens_file: Path | None = None
    """The named tokens file (SYNCLINE_TOKENS_FILE / serve --tokens); None: none."""
    session_key: str | None = None
    """Key signing console sessions; None: a random one per process."""
    max_body: int = MIB
    """Largest accepted request body in bytes, enforced while reading."""
    body_timeout: float = 10.0
    """Seconds a request body may take to arrive after its head; then the connection closes
    (a stalled sender must not hold an admission slot)."""
    head_timeout: float = 10.0
    """Seconds a request line and headers may take to arrive; then the connection closes."""

    @property
    def request_timeout(self) -> float:
        """The whole request's deadline, head and body, from its first byte."""
        return self.head_timeout + self.body_timeout
    max_depth: int = 64
    """Deepest accepted JSON nesting."""
    max_pending: int = 2048
    """Ingest requests in progress at once; beyond it 503 with Retry-After."""
    retry_after: int = 1
    """Seconds a client is told to wait after a 503."""
    api_timeout: float | None = None
    """Upper bound on a process API's wait; None: each flow's `trigger.api.timeout`."""
    watch: bool = True
    """Watch the project and hot-reload on changes."""
    workers: bool = True
    """Execute runs in this process. False: an ingest-only node that accepts, stores and
    answers; `syncline worker` processes on the same store execute the runs."""
    debounce: float = 0.3
    """Seconds of quiet after a change before recompiling."""
    shutdown_grace: float = 10.0
    """Seconds in-flight steps get to checkpoint on SIGTERM."""
    listen: str | None = None
    """HOST:PORT the server binds (the startup log says it); None: not known to the app."""
    alert_every: float = 10.0
    """Seconds between evaluations of the Alerts (and deliveries of their notifications)."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], **overrides: Any) -> ServerConfig:
        """Read the SYNCLINE_* variables above, then apply `overrides` (None values ignored)."""
        values: dict[str, Any] = {
            "admin_token": environ.get("SYNCLINE_ADMIN_TOKEN") or None,
            "ingest_token": environ.get("SYNCLINE_INGEST_TOKEN") or None,
            "session_key": environ.get("SYNCLINE_SESSION_KEY") or None,
        }
        if environ.get("SYNCLINE_TOKENS_FILE"):
            values["tokens_file"] = Path(environ["SYNCLINE_TOKENS_FILE"])
        numbers = {
            "SYNCLINE_MAX_BODY": ("max_body", int),
            "SYNCLINE_MAX_PENDING": ("max_pending", int),
            "SYNCLINE_API_TIMEOUT": ("api_timeout", float),
            "SYNCLINE_BODY_TIMEOUT": ("body_timeout", float),
            "SYNCLINE_HEAD_TIMEOUT": ("head_timeout", float),
            "SYNCLINE_ALERT_EVERY": ("alert_every", float),
        }
        for name, (attr, kind) in numbers.items():
            if environ.get(name):
                values[attr] = _number(name, environ[name], kind)
        known = {f.name for f in fields(cls)}
        values.update({k: v for k, v in overrides.items() if v is not None and k in known})
        return replace(cls(), **values)


def _number(name: str, text: str, kind: type) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise UsageError(f"{name} must be a number, got {text!r}") from None
    if value <= 0:
        raise UsageError(f"{name} must be positive, got {text!r}")
    return value
