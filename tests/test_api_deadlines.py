"""Deadlines, KEV and exploited-first over the v1 API: ``/kev``, ``/kev/update``, ``/sla``, ``/assess``,
``?as_of=`` on exposure and catalog CVEs, ``exploited_only`` on runs; roles, audit, and 422s naming the field."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from autopatch.api.app import create_app
from autopatch.catalog.kev import import_kev_file
from autopatch.cli.context import load_settings
from autopatch.store.sqlite import SqliteStore

from .conftest import run_cli
from .kev_store_contract import KEV_FILE
from .msrc_server import MsrcServer, Reply
from .test_api import Api, error_of, make_tokens

FEED_PATH = "/feeds/known_exploited_vulnerabilities.json"
SHORTCUT = "CVE-2024-21412"
WS2022 = "Windows Server 2022"


@pytest.fixture
def cisa() -> Iterator[MsrcServer]:
    running = MsrcServer().start()
    yield running
    running.stop()


@pytest.fixture
def api(env: Path, cisa: MsrcServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    monkeypatch.setenv("AUTOPATCH_KEV_URL", cisa.base_url + FEED_PATH)
    tokens = make_tokens(env)
    with TestClient(create_app(load_settings())) as client:
        yield Api(client, env, tokens)


def with_kev(api: Api) -> None:
    store = SqliteStore(api.db)
    try:
        import_kev_file(store, KEV_FILE)
    finally:
        store.close()


def put_sla(api: Api, role: str = "admin", **body: Any) -> Any:
    return api.client.put("/api/v1/sla", headers=api.headers(role), json=body)


def test_a_kev_update_is_an_admin_job_that_imports_the_feed(api: Api, cisa: MsrcServer) -> None:
    assert api.get("/kev").json() == {"catalog": None, "items": [], "total": 0}
    assert api.post("/kev/update", role="operator").status_code == 403
    cisa.script(FEED_PATH, Reply(200, {"Content-Type": "application/json"}, gzip.decompress(KEV_FILE.read_bytes())))
    accepted = api.post("/kev/update", role="admin")
    assert accepted.status_code == 202
    job_id = accepted.json()["job_id"]
    deadline = time.monotonic() + 30
    while (job := api.get(f"/jobs/{job_id}").json())["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert job["status"] == "succeeded" and job["kind"] == "kev.update", job
    assert job["summary"]["added"] == 1404 and job["progress"] == {"done": 1, "total": 1}
    listed = api.get("/kev", vendor="Microsoft", as_of="2024-03-04", limit=1).json()
    assert listed["catalog"]["count"] == 1404 and listed["catalog"]["catalog_version"] == "2025.08.25"
    assert listed["items"][0]["cveID"] == "CVE-2024-21338" and listed["total"] > 100
    [entry] = [e for e in api.audit() if e["action"] == "kev.update" and e["result"] == "ok"]
    assert entry["target"] == job_id and entry["actor"] == "test-admin"


def test_a_failed_kev_update_job_says_why_in_one_line(api: Api, cisa: MsrcServer) -> None:
    cisa.script(FEED_PATH, Reply(200, {"Content-Type": "text/html"}, b"<html>maintenance</html>"))
    job_id = api.post("/kev/update", role="admin").json()["job_id"]
    deadline = time.monotonic() + 30
    while (job := api.get(f"/jobs/{job_id}").json())["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert job["status"] == "failed" and "not CISA's KEV catalog" in job["error"] and "\n" not in job["error"]


def test_the_sla_policy_is_read_by_viewers_changed_by_admins_and_audited(api: Api) -> None:
    assert api.get("/sla").json() == {"critical": 15, "important": 30, "moderate": 90, "low": 180, "source": "default"}
    assert put_sla(api, role="operator", critical=7).status_code == 403
    changed = put_sla(api, critical=7)
    assert changed.status_code == 200 and changed.json() | {"critical": 7, "source": "stored"} == changed.json()
    assert api.get("/sla", role="viewer").json()["critical"] == 7
    entries = [e for e in api.audit() if e["action"] == "sla.set"]
    assert [(e["actor"], e["result"][:5]) for e in entries] == [("test-admin", "ok"), ("test-operator", "error")]
    assert entries[0]["detail"] == "critical=7"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"critical": 0}, "critical"),
        ({"low": 3651}, "low"),
        ({"moderate": "soon"}, "moderate"),
        ({"urgent": 3}, "urgent"),
        ({}, "days"),
    ],
)
def test_a_bad_sla_change_is_a_422_naming_the_field(api: Api, body: dict[str, Any], field: str) -> None:
    response = put_sla(api, **body)
    assert response.status_code == 422 and error_of(response)["field"] == field
    assert api.get("/sla").json()["source"] == "default"


def test_assess_and_catalog_cves_answer_deadlines_as_of_a_day(api: Api) -> None:
    with_kev(api)
    body = {"product": WS2022, "build": "10.0.20348.2227", "as_of": "2024-03-06"}
    result = api.post("/assess", role="viewer", **body)
    assert result.status_code == 200, result.text
    shortcut = next(cve for cve in result.json()["cves"] if cve["cve"] == SHORTCUT)
    assert shortcut | {"kev": True, "exploited": True, "due": "2024-03-05", "overdue": True} == shortcut
    assert result.json()["summary"]["overdue_total"] >= 3
    assert not any(cve["month"] >= "2024-03" for cve in result.json()["cves"])
    cves = api.get("/catalog/cves", product=WS2022, month="2024-02", as_of="2024-03-06").json()["items"]
    row = next(item for item in cves if item["cve"] == SHORTCUT)
    assert row | {"kev": True, "due": "2024-03-05", "overdue": True} == row
    early = api.get("/catalog/cves", product=WS2022, month="2024-02", as_of="2024-02-01").json()
    assert early["total"] == 0


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("get", "/exposure", {"as_of": "2024-13-01"}),
        ("get", "/catalog/cves", {"product": WS2022, "as_of": "March"}),
        ("get", "/kev", {"as_of": "2024/03/04"}),
        ("post", "/assess", {"product": WS2022, "build": "10.0.20348.2227", "as_of": "yesterday"}),
    ],
)
def test_a_bad_as_of_is_a_422_naming_the_field(api: Api, method: str, path: str, payload: dict[str, str]) -> None:
    response = api.get(path, **payload) if method == "get" else api.post(path, role="viewer", **payload)
    assert response.status_code == 422 and error_of(response)["field"] == "as_of"


def test_exposure_as_of_a_day_counts_overdue_per_severity(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    with_kev(api)
    run_cli(capsys, "fleet", "scan")
    fleet = api.get("/exposure", as_of="2024-03-06").json()
    totals = fleet["totals"]
    assert totals["overdue_total"] > 0
    assert totals["overdue_total"] == sum(row["overdue_total"] or 0 for row in fleet["items"])
    assert totals["overdue_critical"] == sum(row["overdue_critical"] or 0 for row in fleet["items"])
    today = api.get("/exposure").json()["totals"]
    assert today["overdue_total"] >= totals["overdue_total"]  # later CVEs exist today, and more are late
    server = next(row for row in fleet["items"] if row["status"] == "assessed" and row["overdue_total"])
    detail = api.get(f"/exposure/{server['instance_id']}", as_of="2024-03-06").json()
    late = [cve for cve in detail["cves"] if cve["overdue"]]
    assert len(late) == server["overdue_total"] and all(
        cve["status"] == "open" and cve["due"] < "2024-03-06" for cve in late
    )


def test_a_run_can_patch_only_kbs_closing_exploited_cves(api: Api) -> None:
    with_kev(api)
    narrow = api.post("/runs", all=True, dry_run=True, exploited_only=True)
    everything = api.post("/runs", all=True, dry_run=True)
    assert narrow.status_code == everything.status_code == 200, narrow.text
    servers = narrow.json()["servers"]
    assert servers == sorted(servers, key=lambda s: (-s["open_exploited"], s["name"], s["instance_id"]))
    full = {s["instance_id"]: s["kbs_in_order"] for s in everything.json()["servers"]}
    assert all(set(s["kbs_in_order"]) <= set(full[s["instance_id"]]) for s in servers)
    assert narrow.json()["kbs_to_install"] < everything.json()["kbs_to_install"]
    bad = api.post("/runs", all=True, dry_run=True, exploited_only="maybe")
    assert bad.status_code == 422 and error_of(bad)["field"] == "exploited_only"


def test_without_threads_a_kev_update_is_done_within_the_request(
    env: Path, cisa: MsrcServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in the AWS deployment (a catalog-update function configured): the job is answered finished."""
    monkeypatch.setenv("AUTOPATCH_KEV_URL", cisa.base_url + FEED_PATH)
    monkeypatch.setenv("AUTOPATCH_CATALOG_UPDATE_FUNCTION", "autopatch-catalog-update")
    cisa.script(FEED_PATH, Reply(200, {"Content-Type": "application/json"}, gzip.decompress(KEV_FILE.read_bytes())))
    with TestClient(create_app(load_settings())) as client:
        api = Api(client, env, make_tokens(env))
        accepted = api.post("/kev/update", role="admin")
        assert accepted.status_code == 202
        job = api.get(f"/jobs/{accepted.json()['job_id']}").json()
        assert job["status"] == "succeeded" and job["summary"]["entries"] == 1404
        assert cisa.paths(FEED_PATH) == [FEED_PATH]
