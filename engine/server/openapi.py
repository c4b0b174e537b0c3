"""The OpenAPI 3.1 document of the HTTP API, generated from a route table plus the current plan's
webhook and API paths (so it changes with every reload)."""

from __future__ import annotations

from typing import Any, get_args

from engine.compiler.plan import Plan
from engine.store.base import RunState

ERROR = {"$ref": "#/components/schemas/Error"}
ACCEPTED = {"$ref": "#/components/schemas/Accepted"}
RUN = {"$ref": "#/components/schemas/Run"}
METRICS = {"$ref": "#/components/schemas/BusinessMetrics"}
JSON_BODY: dict[str, Any] = {"required": True, "content": {"application/json": {"schema": {}}}}
CLOUDEVENT: dict[str, Any] = {
    "type": "object",
    "required": ["specversion", "id", "source", "type"],
    "properties": {
        "specversion": {"const": "1.0"},
        **{name: {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,60}$"}
           for name in ("id", "source", "type")},
    },
}
EVENT_BODY: dict[str, Any] = {"required": True, "content": {
    "application/cloudevents+json": {"schema": CLOUDEVENT},
    "application/cloudevents-batch+json": {"schema": {"type": "array", "items": CLOUDEVENT}},
}}

COMPONENTS: dict[str, Any] = {
    "securitySchemes": {
        "admin": {"type": "http", "scheme": "bearer", "description": "SYNCLINE_ADMIN_TOKEN"},
        "ingest": {
            "type": "http",
            "scheme": "bearer",
            "description": "SYNCLINE_INGEST_TOKEN (or the admin token)",
        },
    },
    "schemas": {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                }
            },
        },
        "Accepted": {
            "type": "object",
            "required": ["run_id", "correlation_id", "status"],
            "properties": {
                "run_id": {"type": "string"},
                "correlation_id": {"type": "string"},
                "status": {"enum": ["accepted", "duplicate", "filtered"]},
            },
        },
        "Run": {
            "type": "object",
            "required": ["id", "flow", "state", "created_at", "updated_at"],
            "properties": {
                **{k: {} for k in ("id", "flow", "flow_version", "plan_digest", "state", "key",
                                   "ordering_key", "correlation_id", "reason", "steps", "links",
                                   "blocked_by", "audit")},
                **{k: {"type": "string", "format": "date-time"}
                   for k in ("created_at", "updated_at")},
                "next_attempt_at": {"type": ["string", "null"], "format": "date-time"},
                "generation": {"type": "integer", "description": "0, then one more per "
                               "resume, retry or cancel that queued it again"},
                "history": {"type": "object", "description": "run detail only: generations "
                            "(timeline), reasons, corrections; never rewritten",
                            "properties": {k: {"type": "array"}
                                           for k in ("generations", "reasons", "corrections")}},
            },
        },
        "BusinessMetrics": {
            "type": "object",
            "required": ["metrics", "measured_at"],
            "properties": {
                "measured_at": {"type": "string", "format": "date-time"},
                "metrics": {"type": "array", "items": {
                    "type": "object",
                    "required": ["name", "kind", "help", "owner", "prometheus"],
                    "properties": {
                        "name": {"type": "string"},
                        "kind": {"enum": ["gauge", "counter", "duration"]},
                        "help": {"type": "string"},
                        "owner": {"type": ["string", "null"]},
                        "prometheus": {"type": "string", "description": "the family on /metrics"},
                        "value": {"type": "integer", "description": "gauge, counter: all series"},
                        "series": {"type": "array", "items": {
                            "type": "object",
                            "properties": {"labels": {"type": "object"},
                                           "value": {"type": "integer"}}}},
                        "count": {"type": "integer", "description": "duration: observations"},
                        "sum": {"type": "number", "description": "duration: seconds in all"},
                        "buckets": {"type": "array", "items": {
                            "type": "object",
                            "properties": {"le": {}, "count": {"type": "integer"}}}},
                        "objective": {"type": "object", "properties": {
                            "percentile": {"type": "number"}, "under": {"type": "number"},
                            "ratio": {"type": ["number", "null"]},
                            "met": {"type": ["boolean", "null"]}}},
                    },
                }},
            },
        },
    },
}


def _responses(*pairs: tuple[int, str, dict[str, Any] | None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, text, schema in pairs:
        entry: dict[str, Any] = {"description": text}
        if schema is not None:
            entry["content"] = {"application/json": {"schema": schema}}
        out[str(status)] = entry
    return out


INGEST_ERRORS = (
    (400, "malformed or too deeply nested JSON", ERROR),
    (413, "body larger than the limit", ERROR),
    (415, "unsupported Content-Type", ERROR),
    (503, "overloaded (see Retry-After)", ERROR),
)
ACTION_ERRORS = (
    (400, "a malformed body (reason, corrected data)", ERROR),
    (413, "body larger than the limit", ERROR),
    (415, "unsupported Content-Type", ERROR),
)
ADMIN_ERRORS = (
    (401, "missing or unknown bearer token", ERROR),
    (403, "forbidden: the token's role lacks the right (or not loopback and no token)", ERROR),
)
ACTION_BODY = {
    "required": False,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "reason": {"type": "string", "maxLength": 2000, "description": "why, in words"},
                    "data": {"description": "resume only: corrected data to run on"},
                },
                "additionalProperties": False,
            }
        }
    },
}
REASON_BODY = {"required": False, "content": {"application/json": {"schema": {
    "type": "object", "additionalProperties": False,
    "properties": {"reason": {"type": "string", "maxLength": 2000, "description": "why, in words"}},
}}}}
AUDIT_ENTRY = {
    "type": "object",
    "properties": {
        "seq": {"type": "integer"},
        "at": {"type": "string", "format": "date-time"},
        "actor": {"type": "string", "description": "the token's name"},
        "action": {"type": "string"},
        "run_id": {"type": ["string", "null"]},
        "reason": {"type": ["string", "null"], "description": "the operator's reason"},
        "detail": {},
        "hash": {"type": "string", "description": "sha256(previous hash + content), hex"},
    },
}


def _op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": responses, **extra}


def _fixed() -> dict[str, Any]:
    admin: list[dict[str, list[str]]] = [{"admin": []}]
    run_id = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}
    listing = [
        {"name": "flow", "in": "query", "schema": {"type": "string"}},
        {"name": "key", "in": "query", "schema": {"type": "string"}},
        {"name": "state", "in": "query", "schema": {"enum": list(get_args(RunState))}},
        {"name": "cursor", "in": "query", "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                    "maximum": 500}},
    ]
    paths: dict[str, Any] = {
        "/events": {
            "post": _op(
                "CloudEvents 1.0: binary, structured or batch mode",
                _responses(
                    (202, "stored; runs started", None),
                    *INGEST_ERRORS,
                    (401, "missing or wrong token", ERROR),
                    (403, "not loopback and no token configured", ERROR),
                ),
                requestBody=EVENT_BODY,
                security=[{"ingest": []}],
            )
        },
        "/api/v1/runs": {
            "get": _op(
                "Runs, newest first",
                _responses((200, "a page of runs", None),
                           (400, "a malformed limit, cursor or state", ERROR), *ADMIN_ERRORS),
                parameters=listing,
                security=admin,
            )
        },
        "/api/v1/runs/{run_id}": {
            "get": _op(
                "One run with steps, attempts, lineage",
                _responses((200, "the run", RUN), (404, "no such run", ERROR), *ADMIN_ERRORS),
                parameters=[run_id],
                security=admin,
            )
        },
        "/api/v1/status": {
            "get": _op(
                "Plan digest, flows, last reload",
                _responses((200, "status", None), *ADMIN_ERRORS),
                security=admin,
            )
        },
        "/api/v1/audit": {
            "get": _op(
                "The audit trail, newest first",
                _responses(
                    (
                        200,
                        "a page of entries",
                        {
                            "type": "object",
                            "properties": {
                                "entries": {"type": "array", "items": AUDIT_ENTRY},
                                "next_cursor": {"type": ["string", "null"]},
                            },
                        },
                    ),
                    (400, "bad filter", ERROR),
                    *ADMIN_ERRORS,
                ),
                parameters=[
                    *({"name": n, "in": "query", "schema": {"type": "string"}}
                      for n in ("run", "actor", "action")),
                    {"name": "since", "in": "query",
                     "schema": {"type": "string", "format": "date-time"}},
                    {"name": "cursor", "in": "query",
                     "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"}},
                    {"name": "limit", "in": "query",
                     "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                ],
                security=admin,
            )
        },
        "/api/v1/metrics": {
            "get": _op(
                "Business metrics (Metric kinds) with owners and objectives, measured now",
                _responses((200, "metrics", METRICS), *ADMIN_ERRORS),
                security=admin,
            )
        },
        "/api/v1/openapi.json": {
            "get": _op(
                "This document",
                _responses((200, "OpenAPI 3.1", None), *ADMIN_ERRORS),
                security=admin,
            )
        },
        "/api/v1/reconciliations": {
            "get": _op(
                "Reconciliation results, newest first (each with its report: counts by kind, "
                "mismatches, unkeyed items), and the active plan's Reconciliations",
                _responses((200, "results", None), (400, "a malformed limit", ERROR),
                           *ADMIN_ERRORS),
                parameters=[{"name": "name", "in": "query", "schema": {"type": "string"}},
                            {"name": "limit", "in": "query",
                             "schema": {"type": "integer", "minimum": 1, "maximum": 500}}],
                security=admin,
            )
        },
        "/api/v1/alerts": {
            "get": _op(
                "The active plan's Alerts (condition in words, the System they notify through, "
                "repeat) and their notifications, newest first (state, attempts, error)",
                _responses((200, "alerts and notifications", None),
                           (400, "a malformed limit", ERROR), *ADMIN_ERRORS),
                parameters=[{"name": "alert", "in": "query", "schema": {"type": "string"}},
                            {"name": "limit", "in": "query",
                             "schema": {"type": "integer", "minimum": 1, "maximum": 500}}],
                security=admin,
            )
        },
        "/api/v1/reconciliations/{name}/run": {
            "post": _op(
                "Run a Reconciliation now (`syncline reconcile NAME --url`)",
                _responses((200, "its report", None), (404, "no such reconciliation", ERROR),
                           *ADMIN_ERRORS),
                parameters=[{"name": "name", "in": "path", "required": True,
                             "schema": {"type": "string"}}],
                security=admin,
            )
        },
        "/healthz": {"get": _op("Liveness", _responses((200, "alive", None)))},
        "/readyz": {
            "get": _op(
                "Readiness", _responses((200, "ready", None), (503, "starting or draining", None))
            )
        },
        "/metrics": {"get": _op("Prometheus metrics", _responses((200, "text format", None)))},
    }
    for action in ("resume", "retry", "cancel", "replay"):
        paths[f"/api/v1/runs/{{run_id}}/{action}"] = {
            "post": _op(
                f"Operator action: {action}",
                _responses(
                    (202 if action == "replay" else 200, "the run afterwards", RUN),
                    (404, "no such run", ERROR),
                    (400, "malformed body", ERROR),
                    (409, "wrong state for this action", ERROR),
                    (503, "the store failed (see Retry-After)", ERROR),
                    *ADMIN_ERRORS,
                    *ACTION_ERRORS,
                ),
                parameters=[run_id],
                security=admin,
                requestBody=ACTION_BODY if action == "resume" else REASON_BODY,
            )
        }
    paths.update(_switches(admin))
    return paths


def _switches(admin: list[dict[str, list[str]]]) -> dict[str, Any]:
    """POST /api/v1/flows|systems/{name}/pause|resume (engine/server/controls.py)."""
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    reason = {
        "required": False,
        "content": {"application/json": {"schema": {
            "type": "object", "properties": {"reason": {"type": "string"}},
            "additionalProperties": False,
        }}},
    }  # fmt: skip
    paths: dict[str, Any] = {}
    for kind in ("flows", "systems"):
        for action, conflict in (("pause", "already paused"), ("resume", "not paused")):
            paths[f"/api/v1/{kind}/{{name}}/{action}"] = {
                "post": _op(
                    f"{action.capitalize()} a {kind[:-1]} (audited with the reason)",
                    _responses(
                        (200, "the switch", None),
                        (404, f"no such {kind[:-1]} in the active plan", ERROR),
                        (409, conflict, ERROR),
                        *ADMIN_ERRORS,
                    ),
                    parameters=[name],
                    security=admin,
                    requestBody=reason,
                )
            }
    return paths


def openapi_document(plan: Plan, version: str) -> dict[str, Any]:
    """Every endpoint the server answers right now."""
    paths = _fixed()
    for path, flow in sorted(plan.webhooks.items()):
        system = flow.trigger.system.name if flow.trigger.system else "?"
        paths[path] = {
            "post": _op(
                f"Webhook from '{system}' -> flow {flow.ident}",
                _responses(
                    (202, "stored (accepted, duplicate or filtered)", ACCEPTED),
                    (401, "missing, forged or stale signature", ERROR),
                    *INGEST_ERRORS,
                ),
                requestBody=JSON_BODY,
                tags=["webhooks"],
            )
        }
    for path, flow in sorted(plan.apis.items()):
        paths[path] = {
            "post": _op(
                f"Process API -> flow {flow.ident}",
                _responses(
                    (200, "the flow's output", None),
                    (422, "validation errors", ERROR),
                    (502, "the run failed", ERROR),
                    (504, "timed out; the run continues", ERROR),
                    *INGEST_ERRORS,
                    *ADMIN_ERRORS,
                ),
                requestBody=JSON_BODY,
                security=[{"ingest": []}],
                tags=["apis"],
            )
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"Syncline: {plan.project} ({plan.environment})",
            "version": version,
            "description": f"plan {plan.digest}",
        },
        "paths": paths,
        "components": COMPONENTS,
    }
