"""Project: the `syncline.yaml` at a project's root (paths, defaults, environments)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from engine.model.base import Model, Ref
from engine.model.resource import Resource


class Environment(Model):
    vars: dict[str, str | int | float | bool] = Field(default_factory=dict)
    pins: dict[str, int] = Field(default_factory=dict)   # flow name -> active version


class Defaults(Model):
    retry: Ref | None = None


class ProjectSpec(Model):
    paths: list[str] = Field(default_factory=lambda: ["flows", "mappings", "policies"])
    defaults: Defaults = Field(default_factory=Defaults)
    environments: dict[str, Environment] = Field(default_factory=lambda: {"dev": Environment()})
    # field-name patterns (fnmatch) masked in what `plan --samples` prints; None: the defaults
    redact: list[str] | None = None


class Project(Resource):
    kind: Literal["Project"]
    spec: ProjectSpec = Field(default_factory=ProjectSpec)
