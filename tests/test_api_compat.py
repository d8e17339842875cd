"""The original's seven endpoints as its dashboard calls them: envelope, field names, roles, errors, audit.

Values are checked against what the v1 API and the store say about the same servers, so a
renamed or dropped field fails here, not in front of the original's dashboard.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from autopatch.api.app import create_app
from autopatch.cli.context import load_settings

from .test_api import Api, error_of, first, make_tokens

FULL_WIDTH_ID = "i-０１２３４５６７"


@pytest.fixture
def api(env: Any) -> Iterator[Api]:
    tokens = make_tokens(env)
    with TestClient(create_app(load_settings())) as client:
        yield Api(client, env, tokens)


def call(api: Api, path: str, role: str | None = "viewer", **body: Any) -> Any:
    headers = api.headers(role) if role else {}
    return api.client.post(path, headers=headers, json=body)


def unwrap(response: Any) -> Any:
    """The original's envelope: statusCode 200 and ``body`` as JSON text."""
    assert response.status_code == 200, response.text
    envelope = response.json()
    assert set(envelope) == {"statusCode", "body"} and envelope["statusCode"] == 200
    assert isinstance(envelope["body"], str)
    return json.loads(envelope["body"])


def audit_of(api: Api, action: str) -> list[dict[str, Any]]:
    return [entry for entry in api.audit() if entry["action"] == action]


def test_fetch_os_info_lists_the_fleet_with_the_original_field_names(api: Api) -> None:
    servers = unwrap(call(api, "/fetch-os-info"))
    fleet = {row["instance_id"]: row for row in api.fleet()}
    assert {server["InstanceId"] for server in servers} == set(fleet) and len(servers) == 6
    for server in servers:
        row = fleet[server["InstanceId"]]
        assert {"InstanceId", "NormalizedOS", "PlatformVersion", "IPAddress", "AmiName", "FetchedAt"} <= set(server)
        assert server["NormalizedOS"] == row["product"] and server["NormalizedOS"].startswith("Windows Server")
        assert server["PlatformVersion"] == row["build"]
        assert server["PingStatus"] == ("Online" if row["online"] else "ConnectionLost")
        assert server["AmiName"] and server["IPAddress"] and server["FetchedAt"].endswith("+00:00")


def test_parse_cve_answers_the_critical_and_important_cves_of_each_product(api: Api) -> None:
    products = sorted({server["NormalizedOS"] for server in unwrap(call(api, "/fetch-os-info"))})
    rows = unwrap(call(api, "/parse-cve", os_versions=[*products, products[0]]))  # a duplicate counts once
    for product in products:
        mine = [row for row in rows if row["PK"] == f"OS#{product}"]
        v1 = api.get("/catalog/cves", product=product, severity="Critical,Important", limit=1000).json()
        assert len(mine) == v1["total"] > 0
        expected = v1["items"][0]
        [row] = [r for r in mine if r["cveNumber"] == expected["cve"]]
        assert row["severity"] == expected["severity"] and row["baseScore"] == expected["cvss_base"]
        assert row["impact"] == expected["impact"] and row["releaseDate"] == expected["release_date"]
        assert row["kbArticles"] == [kb["kb"] for kb in expected["kbs"]]
        assert row["kbArticle"] == ", ".join(row["kbArticles"])
    assert {row["severity"] for row in rows} == {"Critical", "Important"}


def test_parse_cve_errors_are_real_status_codes(api: Api) -> None:
    unknown = call(api, "/parse-cve", os_versions=["Windows Server 1999"])
    assert unknown.status_code == 404 and "Windows Server 1999" in error_of(unknown)["message"]
    missing = call(api, "/parse-cve")
    assert missing.status_code == 422 and error_of(missing)["field"] == "os_versions"
    assert call(api, "/parse-cve", role=None, os_versions=["Windows Server 2022"]).status_code == 401


def test_get_patch_status_of_a_server_never_patched_reads_100_percent(api: Api) -> None:
    target = first(api.fleet(), online=True)
    body = unwrap(call(api, "/get-patch-status", instance_id=target))
    assert body == {"instance_id": target, "total": 0, "completed": 0, "percentage": 100.0, "details": []}


def test_get_patch_status_after_a_cli_run_matches_the_v1_status(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    from .conftest import run_cli

    target = first(api.fleet(), online=True)
    code, _, err = run_cli(capsys, "patch", "--instance", target, "--severity", "Critical")
    assert code == 0, err
    body = unwrap(call(api, "/get-patch-status", instance_id=target))
    v1 = api.get(f"/instances/{target}/status").json()
    assert body["percentage"] == v1["percentage"] == 100.0 and body["total"] == v1["total"] > 0
    assert [(d["KB"], d["Status"]) for d in body["details"]] == [(k["kb"][2:], k["state"]) for k in v1["kbs"]]
    assert all(d["KB"].isdigit() and isinstance(d["RebootRequired"], bool) for d in body["details"])
    assert all(d["LastUpdated"] for d in body["details"])


@pytest.mark.parametrize("bad", ["i-../../x", FULL_WIDTH_ID, "", "I-0123456789ABCDEF0"])
def test_bad_instance_ids_are_422_everywhere(api: Api, bad: str) -> None:
    status = call(api, "/get-patch-status", instance_id=bad)
    assert status.status_code == 422 and error_of(status)["field"] == "instance_id"
    for path in ("/start-patch", "/reboot-server"):
        response = call(api, path, role="operator", instance_ids=[bad])
        assert response.status_code == 422 and error_of(response)["field"] == "instance_ids"
    retry = call(api, "/start-patch-single-kb", role="operator", instance_id=bad, kb="5034129")
    assert retry.status_code == 422 and error_of(retry)["field"] == "instance_id"
    update = call(api, "/update-cve", role="admin", instanceIds=[bad])
    assert update.status_code == 422 and error_of(update)["field"] == "instanceIds"


def test_unknown_servers_are_404_and_bad_kbs_422(api: Api) -> None:
    unknown = "i-0123456789abcdef0"
    assert call(api, "/get-patch-status", instance_id=unknown).status_code == 404
    assert call(api, "/reboot-server", role="operator", instance_ids=[unknown]).status_code == 404
    target = first(api.fleet(), online=True)
    bad_kb = call(api, "/start-patch-single-kb", role="operator", instance_id=target, kb="KB12;rm")
    assert bad_kb.status_code == 422 and error_of(bad_kb)["field"] == "kb"
    assert call(api, "/start-patch", role="operator", instance_ids=[]).status_code == 422


def test_roles_are_those_of_v1(api: Api) -> None:
    target = first(api.fleet(), online=True)
    for path, body in (
        ("/start-patch", {"instance_ids": [target]}),
        ("/reboot-server", {"instance_ids": [target]}),
        ("/start-patch-single-kb", {"instance_id": target, "kb": "5034129"}),
    ):
        assert call(api, path, role="viewer", **body).status_code == 403
        assert call(api, path, role=None, **body).status_code == 401
    assert call(api, "/update-cve", role="operator", instanceIds=[target]).status_code == 403
    assert call(api, "/fetch-os-info", role=None).status_code == 401
    refusals = [e["result"][:10] for e in api.audit() if e["actor"] == "test-viewer"]
    assert refusals == ["error: 403"] * 3
    [update] = audit_of(api, "catalog.update")
    assert update["actor"] == "test-operator" and update["result"].startswith("error: 403")


def test_reboot_server_reboots_each_and_names_the_refused_one(api: Api) -> None:
    fleet = api.fleet()
    online = [row["instance_id"] for row in fleet if row["online"]][:2]
    assert unwrap(call(api, "/reboot-server", role="operator", instance_ids=online))["rebooted"] == online
    offline = first(fleet, online=False)
    mixed = call(api, "/reboot-server", role="operator", instance_ids=[online[0], offline])
    assert mixed.status_code == 409
    message = error_of(mixed)["message"]
    assert offline in message and "offline" in message and f"rebooted: {online[0]}" in message
    ok, refused = sorted(audit_of(api, "instance.reboot"), key=lambda e: e["result"] != "ok")
    assert ok == ok | {"actor": "test-operator", "target": ",".join(online), "result": "ok"}
    assert refused["target"] == f"{online[0]},{offline}" and refused["result"].startswith("error: 409")
    assert refused["detail"] == f"rebooted: {online[0]}"


def wait_for_status(api: Api, instance_id: str, done: Any, seconds: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        body: dict[str, Any] = unwrap(call(api, "/get-patch-status", instance_id=instance_id))
        if done(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


def test_update_cve_updates_the_catalog_and_answers_the_original_summary(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import date

    from autopatch.catalog.update import default_months

    from .msrc_server import UPDATES_PATH, MsrcServer

    server = MsrcServer().start()
    try:
        monkeypatch.setenv("AUTOPATCH_MSRC_BASE_URL", server.base_url)
        with TestClient(create_app(load_settings())) as client:
            admin = Api(client, api.db, api.tokens)
            servers = unwrap(call(admin, "/fetch-os-info"))
            target = servers[0]
            body = unwrap(call(admin, "/update-cve", role="admin", instanceIds=[target["InstanceId"]]))
    finally:
        server.stop()
    assert server.paths(UPDATES_PATH)  # the MSRC index was read
    since, until = default_months(date.today())
    assert body["timeRange"] == {"start": str(since), "end": str(until)}
    [row] = body["summary"]
    product = target["NormalizedOS"]
    v1 = api.get("/catalog/cves", product=product, severity="Critical,Important", limit=1).json()
    assert row == row | {"instanceId": target["InstanceId"], "osName": product, "errors": 0, "status": "success"}
    assert row["totalFetched"] == v1["total"] > 0
    assert {"filteredProcessed", "savedToDynamoDB"} <= set(row)
    [entry] = audit_of(api, "catalog.update")
    assert entry == entry | {"actor": "test-admin", "target": target["InstanceId"], "result": "ok"}
    assert entry["detail"].startswith(f"{since}..{until}:")


def inject_failure(api: Api, instance_id: str) -> str:
    """Make the first KB a run would install on ``instance_id`` fail once; returns that KB."""
    from autopatch.engine.runner import RunOptions
    from autopatch.fleet.simulator import FleetSimulator
    from autopatch.fleet.simulator_model import INSTALL_FAILURE_HRESULTS
    from autopatch.operations import plan_dry_run, prepare_patch
    from autopatch.store.sqlite import SqliteStore
    from autopatch.wiring import build_fleet

    store = SqliteStore(api.db)
    fleet = build_fleet(load_settings(), store)
    assert isinstance(fleet, FleetSimulator)
    try:
        request = prepare_patch(
            fleet,
            store,
            all_servers=False,
            instance_ids=[instance_id],
            tag=None,
            kbs=[],
            severity="Important",
            options=RunOptions(),
            targets_rule="",
        )
        kb = plan_dry_run(fleet, store, request).pending(instance_id)[0].kb
        fleet.inject_failure(instance_id, kb, INSTALL_FAILURE_HRESULTS[0], times=1)
        return kb
    finally:
        fleet.close()
        store.close()


def test_start_patch_runs_to_100_percent_and_a_failed_kb_is_retried(api: Api) -> None:
    online = [row["instance_id"] for row in api.fleet() if row["online"]][:2]
    failing = inject_failure(api, online[0])
    started = unwrap(call(api, "/start-patch", role="operator", instance_ids=online))
    assert started["status"] == "Pending" and started["executionArn"] == started["run_id"]
    [run] = api.get("/runs").json()["items"]
    assert run["run_id"] == started["run_id"]
    for instance_id in online:
        body = wait_for_status(api, instance_id, lambda b: b["percentage"] == 100.0)
        assert body["percentage"] == 100.0 and body["details"], body
    deadline = time.monotonic() + 20  # every server is done; the run ends after its final scan
    while (status := api.get(f"/runs/{run['run_id']}").json()["status"]) == "Running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status in ("Succeeded", "Failed")
    failed = unwrap(call(api, "/get-patch-status", instance_id=online[0]))
    [failed_kb] = [d for d in failed["details"] if d["Status"] == "Failed"]
    assert failed_kb["KB"] == failing.removeprefix("KB")
    retried = unwrap(call(api, "/start-patch-single-kb", role="operator", instance_id=online[0], kb=failed_kb["KB"]))
    assert retried["run_id"] != run["run_id"]
    body = wait_for_status(
        api, online[0], lambda b: any(d["KB"] == failed_kb["KB"] and d["Status"] == "Success" for d in b["details"])
    )
    assert body["percentage"] == 100.0 and [d["Status"] for d in body["details"] if d["KB"] == failed_kb["KB"]] == [
        "Success"
    ]
    twice = call(api, "/start-patch-single-kb", role="operator", instance_id=online[0], kb=failed_kb["KB"])
    assert twice.status_code == 409 and "nothing to retry" in error_of(twice)["message"]
    [create] = audit_of(api, "run.create")
    assert create == create | {"target": ",".join(online), "result": "ok"}
    assert create["detail"] == f"run {run['run_id']} via /start-patch"
    refused, retry = sorted(audit_of(api, "run.retry"), key=lambda e: e["result"] == "ok")
    assert retry == retry | {"actor": "test-operator", "target": f"{online[0]} {failing}", "result": "ok"}
    assert retry["detail"] == f"run {retried['run_id']} via /start-patch-single-kb"
    assert refused["result"].startswith("error: 409")


def test_a_server_held_by_a_live_run_is_a_409_naming_the_run(api: Api) -> None:
    from autopatch.engine.planning import start_run
    from autopatch.store.sqlite import SqliteStore

    target = first(api.fleet(), online=True)
    store = SqliteStore(api.db)
    try:
        [instance] = [i for i in store.list_instances() if i.instance_id == target]
        run, lease = start_run(store, "patch", [instance], {})
        lease.release()
    finally:
        store.close()
    held = call(api, "/start-patch", role="operator", instance_ids=[target])
    assert held.status_code == 409 and run.run_id in error_of(held)["message"]
    status = unwrap(call(api, "/get-patch-status", instance_id=target))
    assert status["percentage"] == 0.0  # held, nothing planned yet: the dashboard keeps polling
    [entry] = audit_of(api, "run.create")
    assert entry["result"].startswith("error: 409") and entry["target"] == target
