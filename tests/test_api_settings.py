"""Run-time settings over the API and the CLI: admin only, checked, audited, masked, and used by the next run."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from autopatch.api.app import create_app
from autopatch.cli.context import load_settings

from .conftest import run_cli
from .test_api import Api, error_of, make_tokens
from .test_api_runs import planned_target, wait_for_run


@pytest.fixture
def api(env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    monkeypatch.delenv("AUTOPATCH_NOTIFY")  # the test environment silences notifiers; here they are stored
    tokens = make_tokens(env)
    with TestClient(create_app(load_settings())) as client:
        yield Api(client, env, tokens)


def put(api: Api, key: str, value: str, role: str = "admin") -> Any:
    return api.client.put(f"/api/v1/settings/{key}", headers=api.headers(role), json={"value": value})


def by_key(api: Api) -> dict[str, dict[str, Any]]:
    response = api.get("/settings", role="admin")
    assert response.status_code == 200
    return {row["key"]: row for row in response.json()["items"]}


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local webhook receiver: its URL and the JSON bodies it received."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/run-summary-secret", received
    server.shutdown()
    server.server_close()


def test_an_admin_sees_each_setting_with_its_source(api: Api) -> None:
    rows = by_key(api)
    assert set(rows) == {"notify", "http_timeout", "http_retries", "import_workers"}
    assert rows["http_retries"] == rows["http_retries"] | {"value": "4", "source": "default"}
    for role in ("viewer", "operator"):
        assert api.get("/settings", role=role).status_code == 403


def test_a_stored_value_is_checked_masked_audited_and_forgotten(api: Api) -> None:
    secret = "https://hooks.example/services/T0/B0/very-secret-path"
    stored = put(api, "notify", f"webhook+{secret}")
    assert stored.status_code == 200 and stored.json()["source"] == "stored"
    assert "very-secret-path" not in stored.text and "very-secret-path" not in api.get("/settings", role="admin").text
    assert by_key(api)["notify"]["value"].startswith("webhook+https://hooks.example/")

    too_many = put(api, "http_retries", "99")
    assert too_many.status_code == 422 and error_of(too_many)["field"] == "http_retries"
    unknown = put(api, "db", "/etc/passwd")  # the database stays with the environment
    assert unknown.status_code == 422 and error_of(unknown)["field"] == "key"
    bad_notifier = put(api, "notify", "pager://on-call")
    assert bad_notifier.status_code == 422 and "AUTOPATCH_NOTIFY" in error_of(bad_notifier)["field"]
    assert put(api, "http_retries", "6", role="operator").status_code == 403
    assert by_key(api)["http_retries"]["value"] == "4"  # nothing refused was stored

    forgotten = api.client.delete("/api/v1/settings/notify", headers=api.headers("admin"))
    assert forgotten.status_code == 200 and forgotten.json() == forgotten.json() | {
        "value": "console",
        "source": "default",
    }
    entries = [
        (e["action"], e["target"], e["result"][:9], e["actor"]) for e in api.audit() if "settings" in e["action"]
    ]
    assert ("settings.set", "notify", "ok", "test-admin") in entries
    assert ("settings.set", "http_retries", "error: 42", "test-admin") in entries
    assert ("settings.set", "http_retries", "error: 40", "test-operator") in entries
    assert ("settings.unset", "notify", "ok", "test-admin") in entries
    assert all(secret not in json.dumps(e) for e in api.audit())


def test_the_environment_wins_and_the_api_says_so(api: Api, monkeypatch: pytest.MonkeyPatch, env: Path) -> None:
    monkeypatch.setenv("AUTOPATCH_HTTP_RETRIES", "3")
    tokens = make_tokens_again(env)
    with TestClient(create_app(load_settings())) as client:
        refused = client.put("/api/v1/settings/http_retries", headers=tokens, json={"value": "6"})
        assert refused.status_code == 422 and "environment" in error_of(refused)["rule"]
        rows = {row["key"]: row for row in client.get("/api/v1/settings", headers=tokens).json()["items"]}
        assert rows["http_retries"]["source"] == "environment" and rows["http_retries"]["value"] == "3"


def make_tokens_again(env: Path) -> dict[str, str]:
    from autopatch.access import create_token
    from autopatch.store.sqlite import SqliteStore

    store = SqliteStore(env)
    try:
        return {"Authorization": f"Bearer {create_token(store, 'env-admin', 'admin')[1]}"}
    finally:
        store.close()


def test_a_run_started_over_the_api_notifies_the_stored_webhook(
    api: Api, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook
    assert put(api, "notify", f"webhook+{url}").status_code == 200
    instance_id, _ = planned_target(api)
    started = api.post("/runs", instance_ids=[instance_id])
    assert started.status_code == 202
    view = wait_for_run(api, started.json()["run_id"])
    deadline = time.monotonic() + 10
    while not received and time.monotonic() < deadline:  # the summary is sent once the run is terminal
        time.sleep(0.05)
    assert [body["run_id"] for body in received] == [view["run_id"]]


def test_the_cli_shows_sets_and_refuses_like_the_api(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "settings", "set", "http_timeout", "12.5", "--format", "json")
    assert code == 0 and json.loads(out) == [
        {"key": "http_timeout", "value": "12.5", "source": "stored", "description": "seconds per request to MSRC"}
    ]
    code, _, err = run_cli(capsys, "settings", "set", "import_workers", "0")
    assert code == 2 and "import_workers" in err and "greater than or equal to 1" in err
    code, out, _ = run_cli(capsys, "settings", "show", "--format", "json")
    assert {row["key"]: row["value"] for row in json.loads(out)}["http_timeout"] == "12.5"
    assert load_settings().http_timeout == 30.0  # the environment's settings are untouched: stored ones are layered
    code, out, _ = run_cli(capsys, "audit", "--format", "json")
    actions = [(e["action"], e["target"], e["result"][:5]) for e in json.loads(out)]
    assert ("settings.set", "http_timeout", "ok") in actions and ("settings.set", "import_workers", "error") in actions
