"""System: a platform Syncline talks to (base URL, auth, limits, operations, inbound webhooks)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from engine.model.base import Duration, Model, Ref
from engine.model.resource import Resource

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "instance-data",
                            "metadata.azure.internal"})


def base_url_problem(url: str, allow_link_local: bool = False) -> str | None:
    """Why `url` may not be a System's baseUrl (http/https only; no link-local or cloud metadata
    address unless allowed), or None. Literal addresses only: no name is resolved here."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError as exc:
        return f"'{url}' is not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not host:
        return f"'{url}' must be an http:// or https:// URL with a host"
    if parts.username or parts.password:
        return "credentials belong in auth:, not in the baseUrl"
    if allow_link_local:
        return None
    if host in METADATA_HOSTS or _link_local(host):
        return (f"'{host}' is a link-local or cloud metadata address (allow it with "
                "network: {allowLinkLocal: true})")
    return None


def _link_local(host: str) -> bool:
    try:
        address: Any = ipaddress.ip_address(host)
    except ValueError:
        try:  # legacy IPv4 forms a resolver accepts: 2852039166, 0xa9.0xfe.0xa9.0xfe, 169.254.1
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_link_local or (mapped is not None and mapped.is_link_local))


class Auth(Model):
    type: Literal["bearer", "basic", "header", "oauth2", "none"] = "none"
    token: str | None = None
    username: str | None = None
    password: str | None = None
    header: str | None = None
    value: str | None = None
    token_url: str | None = Field(default=None, alias="tokenUrl")      # oauth2: client credentials
    client_id: str | None = Field(default=None, alias="clientId")
    client_secret: str | None = Field(default=None, alias="clientSecret")
    scope: str | None = None

    @model_validator(mode="after")
    def _oauth2_credentials(self) -> Auth:
        absent = [alias for name, alias in (("token_url", "tokenUrl"), ("client_id", "clientId"),
                                            ("client_secret", "clientSecret"))
                  if self.type == "oauth2" and getattr(self, name) is None]
        if absent:
            raise PydanticCustomError("oauth2", "auth type oauth2 needs {names}",
                                      {"names": ", ".join(absent)})
        return self


class RateLimit(Model):
    """Outbound calls: `perSecond` (with `burst`) smooths each process and, on a shared store, is
    the budget of all replicas together; `perHour`/`perDay` are budgets of clock hours and UTC
    days kept in the store (engine/runtime/quota.py)."""

    per_second: float | None = Field(default=None, alias="perSecond", gt=0)
    burst: int = Field(default=1, ge=1)
    per_hour: int | None = Field(default=None, alias="perHour", ge=1)
    per_day: int | None = Field(default=None, alias="perDay", ge=1)

    @model_validator(mode="after")
    def _some_limit(self) -> RateLimit:
        if self.per_second is None and self.per_hour is None and self.per_day is None:
            raise ValueError("a rateLimit needs perSecond, perHour or perDay")
        if self.per_hour and self.per_day and self.per_hour > self.per_day:
            raise ValueError(f"perHour ({self.per_hour}) is more than perDay ({self.per_day})")
        return self


class RecordRef(Model):
    """`record: {type, id, fields}` on a write operation: the record it writes, for echo
    suppression. Both expressions see the write `{params, query, body, response}` (`response`
    its answer `{status, body}` in the System's own shape): an id read from the answer is a
    create's, and fields read from it are the record as the System holds it after the write."""

    type: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-.]*$")   # e.g. account, subscription
    id: str                 # JMESPath: the record's id (params.id; response.body.id for a create)
    fields: str = "body"    # JMESPath: the values written (the request body; response.body)


class Echo(Model):
    """`echo: {window}`: how long a write's fingerprint recognises its webhook coming back."""

    window: Duration = Field(default=900.0, gt=0)


class Operation(Model):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "POST"
    path: str
    write: bool | None = None     # default: every method but GET and HEAD writes
    schema_: Ref | None = Field(default=None, alias="schema")  # the Schema its request body carries
    # adapters: the call's body -> this System's request, its 2xx answer -> what the step outputs
    request: Ref | None = None    # a Mapping
    response: Ref | None = None   # a Mapping
    record: RecordRef | None = None   # the record a write changes (echo suppression)

    @field_validator("path")
    @classmethod
    def _a_path(cls, path: str) -> str:
        """A path below the baseUrl: no URL, no `.`/`..` segment, no query or fragment."""
        segments = path.split("/")
        if not path.startswith("/") or path.startswith("//") or any(
                c in path for c in "?#\\") or "." in segments or ".." in segments:
            raise ValueError(f"'{path}' must be a path starting with '/', without '.' or '..' "
                             "segments, a host, a query or a fragment")
        return path

    @property
    def is_write(self) -> bool:
        return self.write if self.write is not None else self.method in WRITE_METHODS


class Webhooks(Model):
    scheme: Literal["standard-webhooks", "stripe", "github", "shopify", "hmac-sha256", "none"]
    secret: str | None = None
    tolerance: Duration = 300.0
    header: str | None = None     # hmac-sha256: header that carries the signature


class CircuitBreaker(Model):
    """Stop calling a System that keeps failing (see engine/runtime/breaker.py)."""

    failure_rate: float = Field(alias="failureRate", ge=0, le=1)  # failed share that opens it
    min_calls: int = Field(default=20, alias="minCalls", ge=1)  # calls in the window before
    window: Duration = 60.0  # the sliding window the failure rate is measured over
    open_for: Duration = Field(default=30.0, alias="openFor")  # then one probe call decides


class Network(Model):
    allow_link_local: bool = Field(default=False, alias="allowLinkLocal")


class Nats(Model):
    """The System is a NATS JetStream event backbone (engine/runtime/backbone.py)."""

    url: str = Field(pattern=r"^(nats|tls)://[^\s]+$")   # nats://host:4222 (several: a,b)
    stream: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")  # created if missing, with our subjects
    connect_timeout: Duration = Field(default=2.0, alias="connectTimeout", gt=0)


class SystemSpec(Model):
    network: Network = Field(default_factory=Network)   # validated first: baseUrl reads it
    base_url: str = Field(default="", alias="baseUrl")  # "" only for a `nats` backbone
    nats: Nats | None = None
    auth: Auth = Field(default_factory=Auth)
    timeout: Duration = 10.0
    rate_limit: RateLimit | None = Field(default=None, alias="rateLimit")
    retry: Ref | None = None
    idempotency_header: str | None = Field(default=None, alias="idempotencyHeader")
    headers: dict[str, str] = Field(default_factory=dict)
    operations: dict[str, Operation] = Field(default_factory=dict)
    webhooks: Webhooks | None = None
    circuit_breaker: CircuitBreaker | None = Field(default=None, alias="circuitBreaker")
    echo: Echo | None = None      # fingerprint writes to recognise their webhooks coming back

    @model_validator(mode="after")
    def _http_or_backbone(self) -> SystemSpec:
        if not self.base_url and self.nats is None:
            raise ValueError("a System needs baseUrl (an HTTP API) or nats (an event backbone)")
        if self.nats is not None and (self.base_url or self.operations):
            raise ValueError("a nats backbone has no baseUrl or operations: flows `publish` to "
                             "it and `stream` from it")
        return self

    @field_validator("base_url")
    @classmethod
    def _allowed_base_url(cls, url: str, info: ValidationInfo) -> str:
        if not url:
            return url  # no HTTP API (a backbone); `_http_or_backbone` requires one of them
        network = info.data.get("network")
        problem = base_url_problem(url, network is not None and network.allow_link_local)
        if problem is not None and "${" not in url:
            raise ValueError(problem)
        return url


class System(Resource):
    kind: Literal["System"]
    spec: SystemSpec
