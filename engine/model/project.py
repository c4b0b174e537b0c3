"""Project: the `syncline.yaml` at a project's root (paths, defaults, environments)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from engine.model.base import Model, Ref, RelativePath
from engine.model.resource import Resource

HANDLE_RE = r"^(@[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?|[^@\s]+@[^@\s]+)$"


class Environment(Model):
    vars: dict[str, str | int | float | bool] = Field(default_factory=dict)
    pins: dict[str, int] = Field(default_factory=dict)   # flow name -> active version


class Defaults(Model):
    retry: Ref | None = None


def _check_process_env(names: list[str]) -> list[str]:
    for name in names:
        credential = name.upper().startswith("SYNCLINE_")
        if credential or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"'{name}' cannot be read by ${{env.X}} (a variable name, never a "
                             "SYNCLINE_* credential)")
    return names


class ProjectSpec(Model):
    paths: list[RelativePath] = Field(default_factory=lambda: ["flows", "mappings", "policies"])
    process_env: Annotated[list[str], AfterValidator(_check_process_env)] = Field(
        default_factory=list, alias="processEnv")   # what ${env.X} may read besides vars
    defaults: Defaults = Field(default_factory=Defaults)
    environments: dict[str, Environment] = Field(default_factory=lambda: {"dev": Environment()})
    # team (metadata.owner) -> its CODEOWNERS handle: @user, @org/team or an email address
    teams: dict[str, Annotated[str, Field(pattern=HANDLE_RE)]] = Field(default_factory=dict)
    # field-name patterns (fnmatch) masked in what `plan --samples` prints; None: the defaults
    redact: list[str] | None = None


class Project(Resource):
    kind: Literal["Project"]
    spec: ProjectSpec = Field(default_factory=ProjectSpec)
