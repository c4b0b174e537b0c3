"""Pydantic models of the definition language, one module per kind. No I/O."""

from __future__ import annotations

from engine.model.alert import Alert
from engine.model.flow import Flow
from engine.model.mapping import Mapping
from engine.model.metric import Metric
from engine.model.policy import GovernancePolicy, RetryPolicy
from engine.model.project import Project
from engine.model.reconciliation import Reconciliation
from engine.model.resource import Resource
from engine.model.schema import Schema
from engine.model.system import System

MODELS: dict[str, type[Resource]] = {
    "Schema": Schema,
    "Mapping": Mapping,
    "Flow": Flow,
    "System": System,
    "RetryPolicy": RetryPolicy,
    "GovernancePolicy": GovernancePolicy,
    "Metric": Metric,
    "Reconciliation": Reconciliation,
    "Alert": Alert,
}

__all__ = ["MODELS", "Alert", "Flow", "GovernancePolicy", "Mapping", "Metric", "Project",
           "Reconciliation", "Resource", "RetryPolicy", "Schema", "System"]
