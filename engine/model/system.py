"""System: a platform Syncline talks to (base URL, auth, limits, operations, inbound webhooks)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from engine.model.base import Duration, Model, Ref
from engine.model.resource import Resource

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


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
    per_second: float = Field(alias="perSecond", gt=0)
    burst: int = Field(default=1, ge=1)


class Operation(Model):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "POST"
    path: str
    write: bool | None = None     # default: every method but GET and HEAD writes
    schema_: Ref | None = Field(default=None, alias="schema")  # the Schema its request body carries

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


class SystemSpec(Model):
    base_url: str = Field(alias="baseUrl")
    auth: Auth = Field(default_factory=Auth)
    timeout: Duration = 10.0
    rate_limit: RateLimit | None = Field(default=None, alias="rateLimit")
    retry: Ref | None = None
    idempotency_header: str | None = Field(default=None, alias="idempotencyHeader")
    headers: dict[str, str] = Field(default_factory=dict)
    operations: dict[str, Operation] = Field(default_factory=dict)
    webhooks: Webhooks | None = None
    circuit_breaker: CircuitBreaker | None = Field(default=None, alias="circuitBreaker")


class System(Resource):
    kind: Literal["System"]
    spec: SystemSpec
