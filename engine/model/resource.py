"""The envelope every definition document shares: apiVersion, kind, metadata, spec."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from engine.model.base import Model, Name

KINDS = ("Schema", "Mapping", "Flow", "System", "RetryPolicy", "GovernancePolicy", "Metric",
         "Reconciliation", "Alert", "Project")


class Metadata(Model):
    name: Name
    version: int = Field(default=1, ge=1)
    owner: str | None = None
    description: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class Resource(Model):
    """Base of every kind's model; subclasses narrow `kind` and give `spec` a type."""

    api_version: Literal["syncline/v1"] = Field(alias="apiVersion")
    metadata: Metadata

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def version(self) -> int:
        return self.metadata.version

    @property
    def ident(self) -> str:
        return f"{self.metadata.name}@{self.metadata.version}"
