"""The CRM sandbox's SOQL subset: ``SELECT fields FROM Account|Opportunity [WHERE f = 'v' AND
...] [LIMIT n]`` (``=``/``!=``, dotted fields such as ``Account.Name``, ``FIELDS(ALL)``)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from engine.sandbox.common import JSON, bad_request

SOBJECTS = {"Account": "accounts", "Opportunity": "opportunities"}

_SOQL = re.compile(
    r"^\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<sobject>\w+)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?(?:\s+LIMIT\s+(?P<limit>\d+))?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_CONDITION = re.compile(
    r"^\s*(?P<field>[\w.]+)\s*(?P<op>=|!=)\s*"
    r"(?P<value>'(?:[^'\\]|\\.)*'|-?\d+(?:\.\d+)?|null|true|false)\s*$",
    re.IGNORECASE,
)


def run_query(soql: str | None, records: Callable[[str], Iterable[JSON]]) -> JSON:
    """The answer ``{totalSize, done, records}`` to `soql`; `records(sobject)` gives the
    rendered records of an sObject type (opportunities with their ``Account``)."""
    if not soql:
        raise bad_request("MALFORMED_QUERY", "missing q parameter")
    match = _SOQL.match(soql)
    if not match:
        raise bad_request("MALFORMED_QUERY", "unsupported query (SELECT ... FROM ... WHERE ...)")
    sobject = next((s for s in SOBJECTS if s.lower() == match["sobject"].lower()), None)
    if sobject is None:
        raise bad_request("INVALID_TYPE", f"sObject type '{match['sobject']}' is not supported")
    conditions = []
    if match["where"]:
        for part in re.split(r"\s+AND\s+", match["where"], flags=re.IGNORECASE):
            cond = _CONDITION.match(part)
            if not cond:
                raise bad_request("MALFORMED_QUERY", f"unsupported condition: {part.strip()}")
            conditions.append((cond["field"], cond["op"], _soql_value(cond["value"])))
    fields = [f.strip() for f in match["fields"].split(",")]
    found = [
        full if fields == ["FIELDS(ALL)"] else _select(full, fields)
        for full in records(sobject)
        if all((_path(full, f) == v) == (op == "=") for f, op, v in conditions)
    ]
    if match["limit"]:
        found = found[: int(match["limit"])]
    return {"totalSize": len(found), "done": True, "records": found}


def _soql_value(text: str) -> Any:
    if text.startswith("'"):
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    lowered = text.lower()
    if lowered in ("null", "true", "false"):
        return {"null": None, "true": True, "false": False}[lowered]
    return float(text) if "." in text else int(text)


def _path(record: JSON, dotted: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _select(record: JSON, fields: list[str]) -> JSON:
    out: JSON = {"attributes": record["attributes"]}
    for name in fields:
        head, _, rest = name.partition(".")
        if rest:
            nested = record.get(head)
            if isinstance(nested, dict):
                out.setdefault(head, {"attributes": nested.get("attributes")})
                out[head][rest] = _path(nested, rest)
            else:
                out[head] = None
        else:
            out[name] = record.get(name)
    return out
