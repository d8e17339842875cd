"""The HTTP API as its clients meet it: each endpoint, each error class, roles, the audit log, CORS.

The app runs in-process on the CLI's test environment (a copy of the session catalog, six
simulated servers of seed 11 with one offline); tokens are made with the same step as
``autopatch token create``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from autopatch.access import create_token
from autopatch.api.app import create_app
from autopatch.cli.context import load_settings
from autopatch.domain.patching import KbState
from autopatch.domain.runs import RunItem
from autopatch.engine.planning import start_run
from autopatch.errors import ValidationError
from autopatch.settings import Settings
from autopatch.store.sqlite import SqliteStore
from autopatch.wiring import build_fleet

from .conftest import run_cli

UNKNOWN_INSTANCE = "i-0123456789abcdef0"
UNKNOWN_RUN = "p-20240109-081500-1a2b3c"


@dataclass
class Api:
    client: TestClient
    db: Path
    tokens: dict[str, str]

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def get(self, path: str, role: str = "viewer", **params: Any) -> Any:
        return self.client.get(f"/api/v1{path}", headers=self.headers(role), params=params)

    def post(self, path: str, role: str = "operator", **body: Any) -> Any:
        return self.client.post(f"/api/v1{path}", headers=self.headers(role), json=body or None)

    def audit(self) -> list[dict[str, Any]]:
        response = self.get("/audit", role="admin", limit=1000)
        assert response.status_code == 200
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def fleet(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get("/instances").json()["items"]
        return items


def make_tokens(db: Path) -> dict[str, str]:
    store = SqliteStore(db)
    try:
        return {role: create_token(store, f"test-{role}", role)[1] for role in ("viewer", "operator", "admin")}
    finally:
        store.close()


@pytest.fixture
def api(env: Path) -> Iterator[Api]:
    tokens = make_tokens(env)
    with TestClient(create_app(load_settings())) as client:
        yield Api(client, env, tokens)


def first(rows: list[dict[str, Any]], online: bool) -> str:
    return next(str(row["instance_id"]) for row in rows if row["online"] is online)


def error_of(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    assert set(body) == {"field", "rule", "message"} and "Traceback" not in body["message"]
    return body


# --- without a token ---------------------------------------------------------------------------


def test_health_answers_without_a_token(api: Api) -> None:
    response = api.client.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok" and response.json()["version"]


def test_openapi_schema_and_docs_need_no_token(api: Api) -> None:
    schema = api.client.get("/api/v1/openapi.json")
    assert schema.status_code == 200 and "/api/v1/instances/{instance_id}/reboot" in schema.json()["paths"]
    assert api.client.get("/api/docs").status_code == 200


def test_a_request_without_a_token_is_401_with_a_bearer_challenge(api: Api) -> None:
    response = api.client.get("/api/v1/instances")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "token" in error_of(response)["message"]


def test_a_bad_or_revoked_token_is_401(api: Api) -> None:
    bad = api.client.get("/api/v1/runs", headers={"Authorization": "Bearer ap_not-a-real-token"})
    assert bad.status_code == 401
    assert api.client.delete("/api/v1/tokens/test-viewer", headers=api.headers("admin")).status_code == 200
    assert api.get("/runs", role="viewer").status_code == 401


# --- instances ---------------------------------------------------------------------------------


def test_instances_lists_the_discovered_fleet_in_pages(api: Api) -> None:
    response = api.get("/instances")
    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 6 and len(body["items"]) == 6
    item = body["items"][0]
    assert {"instance_id", "name", "product", "build", "online", "last_scan", "tags"} <= set(item)
    assert sum(1 for row in body["items"] if not row["online"]) == 1
    second_page = api.get("/instances", limit=2, offset=2).json()
    assert second_page["total"] == 6 and [r["instance_id"] for r in second_page["items"]] == [
        r["instance_id"] for r in body["items"][2:4]
    ]


@pytest.mark.parametrize(("limit", "offset"), [(0, 0), (1001, 0), (10, -1)])
def test_a_bad_limit_or_offset_is_422_naming_the_field(api: Api, limit: int, offset: int) -> None:
    response = api.get("/instances", limit=limit, offset=offset)
    assert response.status_code == 422
    assert error_of(response)["field"] == ("offset" if offset < 0 else "limit")


def test_a_malformed_instance_id_is_422_and_an_unknown_one_404(api: Api) -> None:
    malformed = api.get("/instances/not-an-id")
    assert malformed.status_code == 422 and error_of(malformed)["field"] == "instance_id"
    assert "8 or 17" in error_of(malformed)["rule"]
    for path in (f"/instances/{UNKNOWN_INSTANCE}", f"/instances/{UNKNOWN_INSTANCE}/status"):
        assert api.get(path).status_code == 404
    assert api.post(f"/instances/{UNKNOWN_INSTANCE}/reboot").status_code == 404


def test_a_scanned_instance_shows_its_exposure_and_status(api: Api) -> None:
    target = first(api.fleet(), online=True)
    scan = api.post(f"/instances/{target}/scan")
    assert scan.status_code == 200 and scan.json()["result"] == "scanned" and scan.json()["build"]
    detail = api.get(f"/instances/{target}").json()
    assert detail["instance_id"] == target and detail["last_scan"] is not None
    exposure = detail["exposure"]
    assert exposure["status"] == "assessed" and exposure["open_total"] > 0
    assert any(cve["status"] == "open" for cve in exposure["cves"])
    status = api.get(f"/instances/{target}/status")
    assert status.status_code == 200 and status.json()["instance_id"] == target
    assert status.json()["total"] == 0 and status.json()["percentage"] is None  # never patched


def test_an_unscanned_instance_has_unknown_exposure_not_zeros(api: Api) -> None:
    target = first(api.fleet(), online=True)
    exposure = api.get(f"/instances/{target}").json()["exposure"]
    assert exposure["status"] == "not scanned" and exposure["open_total"] is None


def test_a_viewer_may_not_scan_and_the_refusal_is_audited(api: Api) -> None:
    target = first(api.fleet(), online=True)
    response = api.post(f"/instances/{target}/scan", role="viewer")
    assert response.status_code == 403 and "operator" in error_of(response)["message"]
    [entry] = [e for e in api.audit() if e["action"] == "instance.scan"]
    assert entry["actor"] == "test-viewer" and entry["target"] == target
    assert entry["result"].startswith("error: 403")


def test_rebooting_an_offline_server_is_409_and_audited(api: Api) -> None:
    target = first(api.fleet(), online=False)
    response = api.post(f"/instances/{target}/reboot")
    assert response.status_code == 409 and "offline" in error_of(response)["message"]
    [entry] = [e for e in api.audit() if e["action"] == "instance.reboot"]
    assert entry["actor"] == "test-operator" and entry["target"] == target
    assert entry["result"].startswith("error: 409") and "offline" in entry["result"]


def test_rebooting_an_online_server_is_accepted_and_audited(api: Api) -> None:
    target = first(api.fleet(), online=True)
    response = api.post(f"/instances/{target}/reboot")
    assert response.status_code == 202 and response.json() == {"instance_id": target, "status": "reboot requested"}
    [entry] = [e for e in api.audit() if e["action"] == "instance.reboot"]
    assert entry["result"] == "ok" and entry["actor"] == "test-operator"


# --- exposure ----------------------------------------------------------------------------------


def test_fleet_exposure_counts_only_assessed_servers_in_its_totals(api: Api) -> None:
    target = first(api.fleet(), online=True)
    assert api.post(f"/instances/{target}/scan").status_code == 200
    body = api.get("/exposure").json()
    assert body["total"] == 6 and body["totals"]["servers"] == 6 and body["totals"]["servers_assessed"] == 1
    [scanned] = [row for row in body["items"] if row["instance_id"] == target]
    assert body["totals"]["open_total"] == scanned["open_total"] > 0
    critical_only = api.get(f"/exposure/{target}", severity="critical").json()
    assert critical_only["cves"] and {cve["severity"] for cve in critical_only["cves"]} == {"Critical"}
    bad = api.get("/exposure", severity="urgent")
    assert bad.status_code == 422 and error_of(bad)["field"] == "severity"


# --- catalog -----------------------------------------------------------------------------------


def test_catalog_products_cves_and_one_kb(api: Api) -> None:
    products = api.get("/catalog/products", limit=1000).json()
    assert any(p["product"] == "Windows Server 2022" for p in products["items"])
    assert len(products["items"]) == min(products["total"], 1000)
    cves = api.get("/catalog/cves", product="Windows Server 2022", month="2024-01", severity="Critical").json()
    assert cves["total"] > 0 and {c["severity"] for c in cves["items"]} == {"Critical"}
    assert {c["month"] for c in cves["items"]} == {"2024-01"}
    kb = cves["items"][0]["kbs"][0]["kb"]
    searched = api.get("/catalog/cves", product="Windows Server 2022", month="2024-01", q=cves["items"][0]["cve"])
    assert [c["cve"] for c in searched.json()["items"]] == [cves["items"][0]["cve"]]
    detail = api.get(f"/catalog/kbs/{kb}")
    assert detail.status_code == 200 and detail.json()["kb"] == kb and detail.json()["cves"]


def test_catalog_errors_name_the_field_or_the_unknown_value(api: Api) -> None:
    bad_kb = api.get("/catalog/kbs/KBnope")
    assert bad_kb.status_code == 422 and error_of(bad_kb)["field"] == "kb"
    assert api.get("/catalog/kbs/KB9999999").status_code == 404
    assert api.get("/catalog/cves", product="Windows Server 1999").status_code == 404
    missing = api.get("/catalog/cves")
    assert missing.status_code == 422 and error_of(missing)["field"] == "product"
    bad_month = api.get("/catalog/cves", product="Windows Server 2022", month="2024-13")
    assert bad_month.status_code == 422 and error_of(bad_month)["field"] == "month"


# --- runs --------------------------------------------------------------------------------------


def test_a_run_from_the_cli_is_listed_and_shown(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    target = first(api.fleet(), online=True)
    code, _, err = run_cli(capsys, "patch", "--instance", target, "--severity", "Critical")
    assert code == 0, err
    runs = api.get("/runs").json()
    assert runs["total"] == 1
    run_id = runs["items"][0]["run_id"]
    detail = api.get(f"/runs/{run_id}").json()
    assert detail["status"] == "Succeeded" and detail["servers"][0]["instance_id"] == target
    transitions = [t for kb in detail["servers"][0]["kbs"] for t in kb["transitions"]]
    assert transitions and {"from", "to", "at", "note"} <= set(transitions[0])
    finished = api.post(f"/runs/{run_id}/cancel")
    assert finished.status_code == 409 and "already Succeeded" in error_of(finished)["message"]


def test_cancelling_a_live_run_and_rebooting_its_server(api: Api) -> None:
    settings = load_settings()
    store = SqliteStore(api.db)
    fleet = build_fleet(settings, store)
    try:
        [instance] = [i for i in fleet.list_instances() if i.online][:1]
        store.save_instances([instance], datetime.now(UTC))
        run, lease = start_run(store, "patch", [instance], {})
        lease.release()
    finally:
        getattr(fleet, "close", lambda: None)()
        store.close()
    held = api.post(f"/instances/{instance.instance_id}/reboot")
    assert held.status_code == 409 and run.run_id in error_of(held)["message"]
    cancelled = api.post(f"/runs/{run.run_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json() == {"run_id": run.run_id, "status": "Cancelled"}
    [entry] = [e for e in api.audit() if e["action"] == "run.cancel"]
    assert entry == entry | {"actor": "test-operator", "target": run.run_id, "result": "ok"}


def test_a_dry_run_answers_the_plan_and_stores_nothing(api: Api) -> None:
    target = first(api.fleet(), online=True)
    response = api.post("/runs", instance_ids=[target], severity="Critical", dry_run=True)
    assert response.status_code == 200, response.text
    [server] = response.json()["servers"]
    assert server["instance_id"] == target and server["kbs_in_order"]
    assert response.json()["kbs_to_install"] == len(server["kbs_in_order"])
    assert api.get("/runs").json()["total"] == 0
    [entry] = [e for e in api.audit() if e["action"] == "run.create"]
    assert entry == entry | {"target": target, "result": "ok", "detail": "dry run"}


def test_a_run_request_is_checked_like_the_cli_patch_command(api: Api) -> None:
    target = first(api.fleet(), online=True)
    both = api.post("/runs", instance_ids=[target], all=True, dry_run=True)
    assert both.status_code == 422 and error_of(both)["field"] == "targets"
    bad_tag = api.post("/runs", tag="Environment", dry_run=True)
    assert bad_tag.status_code == 422 and error_of(bad_tag)["field"] == "tag"
    bad_id = api.post("/runs", instance_ids=["i-nope"], dry_run=True)
    assert bad_id.status_code == 422 and error_of(bad_id)["field"] == "instance_ids"
    assert api.post("/runs", instance_ids=[target], kbs=["KB9999999"], dry_run=True).status_code == 404
    assert api.post("/runs", all=True, concurrency=0, dry_run=True).status_code == 422
    assert api.post("/runs", all=True, dry_run=True, role="viewer").status_code == 403
    assert api.get("/runs").json()["total"] == 0
    results = sorted(e["result"][:10] for e in api.audit() if e["action"] == "run.create")
    assert results == ["error: 403", "error: 404", "error: 422", "error: 422", "error: 422", "error: 422"]


def test_run_ids_are_checked_and_unknown_runs_are_404(api: Api) -> None:
    malformed = api.get("/runs/p-nope")
    assert malformed.status_code == 422 and error_of(malformed)["field"] == "run_id"
    assert api.get(f"/runs/{UNKNOWN_RUN}").status_code == 404
    assert api.post(f"/runs/{UNKNOWN_RUN}/cancel").status_code == 404
    assert api.post(f"/runs/{UNKNOWN_RUN}/cancel", role="viewer").status_code == 403


# --- tokens and audit --------------------------------------------------------------------------


def test_an_admin_makes_lists_and_revokes_tokens(api: Api) -> None:
    response = api.client.post(
        "/api/v1/tokens", headers=api.headers("admin"), json={"name": "ci-deploy", "role": "operator"}
    )
    assert response.status_code == 201
    token = response.json()["token"]
    assert response.json()["role"] == "operator" and token.startswith("ap_")
    assert api.client.get("/api/v1/runs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    listed = api.get("/tokens", role="admin").json()
    assert {"ci-deploy", "test-admin"} <= {t["name"] for t in listed["items"]}
    assert all("token" not in t for t in listed["items"])
    revoked = api.client.delete("/api/v1/tokens/ci-deploy", headers=api.headers("admin"))
    assert revoked.status_code == 200 and revoked.json()["active"] is False
    assert api.client.get("/api/v1/runs", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert api.client.delete("/api/v1/tokens/ci-deploy", headers=api.headers("admin")).status_code == 404
    actions = [(e["action"], e["target"], e["result"]) for e in api.audit()]
    assert ("token.create", "ci-deploy", "ok") in actions and ("token.revoke", "ci-deploy", "ok") in actions


def test_token_requests_are_validated_and_refusals_audited(api: Api) -> None:
    def make(body: dict[str, Any], role: str = "admin") -> Any:
        return api.client.post("/api/v1/tokens", headers=api.headers(role), json=body)

    bad_role = make({"name": "x", "role": "root"})
    assert bad_role.status_code == 422 and error_of(bad_role)["field"] == "role"
    missing = make({"role": "viewer"})
    assert missing.status_code == 422 and error_of(missing)["field"] == "name"
    assert make({"name": "test-viewer", "role": "viewer"}).status_code == 409  # a live token has the name
    assert make({"name": "y", "role": "admin"}, role="operator").status_code == 403
    results = [e["result"][:10] for e in api.audit() if e["action"] == "token.create"]
    assert sorted(results) == ["error: 403", "error: 409", "error: 422", "error: 422"]


def test_only_admins_read_tokens_and_the_audit_log(api: Api) -> None:
    for path in ("/tokens", "/audit"):
        assert api.get(path, role="operator").status_code == 403
        assert api.get(path, role="admin").status_code == 200


# --- CORS and settings -------------------------------------------------------------------------


def test_cors_is_closed_by_default_and_opened_for_configured_origins(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    origin = {"Origin": "http://localhost:3000"}
    closed = api.client.get("/api/v1/health", headers=origin)
    assert "access-control-allow-origin" not in closed.headers
    monkeypatch.setenv("AUTOPATCH_CORS_ORIGINS", "http://localhost:3000, https://ops.example.com")
    with TestClient(create_app(load_settings())) as client:
        opened = client.get("/api/v1/health", headers=origin)
        assert opened.headers["access-control-allow-origin"] == "http://localhost:3000"
        other = client.get("/api/v1/health", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("value", ["*", "localhost:3000", "http://a.example/path"])
def test_a_cors_origin_that_is_not_an_origin_is_refused(env: Path, value: str) -> None:
    with pytest.raises(ValidationError, match="AUTOPATCH_CORS_ORIGINS"):
        load_settings(cors_origins=value)
    assert Settings(cors_origins="").cors_origin_list == []


def test_serve_is_a_command_and_checks_its_port(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "serve", "--port", "0")
    assert code == 2 and "port" in err


def test_a_kept_status_view_follows_every_kb_change_at_once(api: Api) -> None:
    target = first(api.fleet(), online=True)
    store = SqliteStore(api.db)  # another connection, as `autopatch patch` in another process would be
    try:
        [instance] = [i for i in store.list_instances() if i.instance_id == target]
        run, _ = start_run(store, "patch", [instance], {})
        status = f"/instances/{target}/status"
        assert api.get(status).json()["kbs"] == []
        assert api.get(status).json()["kbs"] == []  # kept: the same answer, served again
        item = RunItem(run.run_id, target, "KB5034770", 0, KbState.PENDING, "Security Update", None, "Yes")
        store.save_plan(run.run_id, store.run_servers(run.run_id), [item])
        assert [k["state"] for k in api.get(status).json()["kbs"]] == ["Pending"]
        store.transition_item(run.run_id, target, "KB5034770", KbState.IN_PROGRESS)
        assert [k["state"] for k in api.get(status).json()["kbs"]] == ["InProgress"]
        store.transition_item(run.run_id, target, "KB5034770", KbState.SUCCESS, "installed")
        body = api.get(status).json()
        assert [k["state"] for k in body["kbs"]] == ["Success"] and body["percentage"] == 100.0
    finally:
        store.close()
