"""Schemathesis against the server's own /api/v1/openapi.json, bounded, with and without a token:
no server error, no undocumented status, no response off its schema, and no schema-valid request
rejected (except process APIs: their flow's rules are business rules the document cannot state,
so a 422 there is an answer, not a rejection)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from serverkit import LiveServer, write_project

TOKEN = "fuzz-admin-token"
EXAMPLES = 25


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(write_project(tmp_path_factory.mktemp("fuzz")), admin_token=TOKEN) as live:
        yield live


def _failures(schema: object, headers: dict[str, str]) -> dict[str, str]:
    found = {}
    for result in schema.get_all_operations():  # type: ignore[attr-defined]
        operation = result.ok()
        try:
            _exercise(operation, headers)()
        except BaseException as exc:  # noqa: BLE001 - schemathesis raises a group; record it
            found[operation.label] = str(exc)[:2000]
    return found


def _exercise(operation: object, headers: dict[str, str]) -> object:
    """A bounded Hypothesis test sending `operation`'s generated requests with `headers`."""
    tags = operation.definition.raw.get("tags") or []  # type: ignore[attr-defined]
    excluded = [schemathesis.checks.positive_data_acceptance] if "apis" in tags else []

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(operation.as_strategy())  # type: ignore[attr-defined]
    def exercise(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, excluded_checks=excluded)

    return exercise


@pytest.mark.parametrize("token", [TOKEN, None], ids=["token", "no-token"])
def test_the_openapi_document_is_true(server: LiveServer, token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    schema = schemathesis.openapi.from_url(f"{server.url}/api/v1/openapi.json",
                                           headers={"Authorization": f"Bearer {TOKEN}"})
    failures = _failures(schema, headers)
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())


def test_the_fuzz_covers_every_kind_of_endpoint(server: LiveServer) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/api/v1/openapi.json",
                                           headers={"Authorization": f"Bearer {TOKEN}"})
    labels = {r.ok().label for r in schema.get_all_operations()}
    assert {"POST /events", "GET /api/v1/runs", "POST /hooks/stripe", "POST /api/quote",
            "POST /api/v1/runs/{run_id}/resume"} <= labels
