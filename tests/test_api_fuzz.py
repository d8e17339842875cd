"""The API fuzzed from its own OpenAPI schema (schemathesis): no 5xx for any input, no success without a token.

Every operation of ``/api/v1/openapi.json`` gets a bounded number of generated requests
(``max_examples``, derandomized so CI sees the same ones each time), sent in-process to an app on
a copy of the session catalog with six simulated servers. Two passes:

- as an admin, who may call everything: whatever the input, the answer is never a 5xx;
- without an Authorization header: nothing but ``/health`` may answer 2xx.

Operations that start background work are fuzzed only in a form that does not: ``POST /runs`` is
always sent with ``dry_run: true`` (a real run would be driven by the server's worker pool long
after the example ends); the catalog update job and the original's patch and catalog endpoints
(``/start-patch``, ``/start-patch-single-kb``, ``/update-cve``) are skipped in the admin pass
because they start runs or import from MSRC over the network. The unauthenticated pass covers
them all: without a token nothing starts.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from autopatch.access import create_token
from autopatch.api.app import create_app
from autopatch.cli.context import load_settings
from autopatch.settings import Settings
from autopatch.store.sqlite import SqliteStore

SCHEMA_PATH = "/api/v1/openapi.json"
ADMIN = "fuzz-admin"
# Started work outlives an example: a patch run on the worker pool, an import from MSRC.
# The KEV update fetches CISA's live feed: no unit test touches the network (tests/test_kev.py serves it).
STARTS_WORK = ("/api/v1/catalog/update", "/api/v1/kev/update", "/start-patch", "/start-patch-single-kb", "/update-cve")
FUZZ = settings(
    max_examples=20,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)

# The schema is the app's own, read at collection from an app on a throwaway database (its start-up
# opens it); requests go to the module's app below (same code, the fixture's database).
_SCHEMA_FOLDER = tempfile.TemporaryDirectory(prefix="autopatch-fuzz-schema-")  # removed at exit
_SCHEMA_APP = create_app(Settings(db=Path(_SCHEMA_FOLDER.name) / "schema.db"), start_worker=False)
schema = schemathesis.openapi.from_asgi(SCHEMA_PATH, _SCHEMA_APP)


@dataclass
class Target:
    app: FastAPI
    admin_token: str


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, catalog_db: Path) -> Iterator[Target]:
    db = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    db.write_bytes(catalog_db.read_bytes())
    app_settings = load_settings(
        db=db, simulator_servers=6, simulator_seed=11, simulator_time_scale=50_000.0, notify=""
    )
    store = SqliteStore(db)
    try:
        _, token = create_token(store, ADMIN, "admin")
    finally:
        store.close()
    app = create_app(app_settings)
    with TestClient(app) as client:  # runs the lifespan: the fleet is closed at the end
        assert client.get("/api/v1/instances", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        yield Target(app, token)


def _text(response: Any) -> str:
    """The answer as text; a binary one (a PDF report) as what UTF-8 makes of it."""
    return bytes(response.content).decode("utf-8", "replace")


def _described(case: Any, response: Any) -> str:
    return f"{case.method} {case.formatted_path} -> {response.status_code}: {_text(response)[:500]}"


@schema.parametrize()
@FUZZ
def test_no_input_makes_the_api_fail_with_a_5xx(case: Any, target: Target) -> None:
    if case.path in STARTS_WORK:
        pytest.skip("starts a patch run, an MSRC import or a KEV fetch: fuzzed without a token only")
    if case.path == "/api/v1/runs" and case.method == "POST" and isinstance(case.body, dict):
        case.body["dry_run"] = True
    if case.path == "/api/v1/tokens/{name}" and case.path_parameters.get("name") == ADMIN:
        case.path_parameters["name"] = ADMIN + "-other"  # revoking itself would turn the rest into 401s
    response = case.call(app=target.app, headers={"Authorization": f"Bearer {target.admin_token}"})
    assert response.status_code < 500, _described(case, response)
    assert "Traceback" not in _text(response), _described(case, response)


@schema.parametrize()
@FUZZ
def test_nothing_but_health_succeeds_without_a_token(case: Any, target: Target) -> None:
    case.headers = {key: value for key, value in (case.headers or {}).items() if key.lower() != "authorization"}
    response = case.call(app=target.app)
    if case.path == "/api/v1/health":  # the schema-coverage phase also sends methods the route lacks
        assert response.status_code == (200 if case.method == "GET" else 405), _described(case, response)
    else:
        assert not 200 <= response.status_code < 300, _described(case, response)
        assert response.status_code < 500, _described(case, response)
