"""``/api/v1/baselines`` (viewers read, admins change, every change audited) and baselines in ``POST /runs``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from autopatch.api.app import create_app
from autopatch.cli.context import load_settings

from .aged_fleet import WS2022_PROD, aged_env, aged_template
from .test_api import Api, error_of, make_tokens

__all__ = ["aged_env", "aged_template"]

PROD = {
    "name": "prod",
    "min_severity": "Important",
    "classifications": ["security"],
    "approve_after_days": 7,
    "approved": ["KB5034439"],
    "rejected": [{"kb": "KB5035857", "reason": "breaks the SQL cluster"}],
    "groups": ["Environment=prod"],
}


@pytest.fixture
def api(aged_env: Path) -> Iterator[Api]:
    tokens = make_tokens(aged_env)
    with TestClient(create_app(load_settings(), start_worker=False)) as client:
        yield Api(client, aged_env, tokens)


def send(api: Api, method: str, path: str, role: str, body: Any = None) -> Any:
    return api.client.request(method, f"/api/v1{path}", headers=api.headers(role), json=body)


def test_admins_create_replace_and_delete_viewers_read(api: Api) -> None:
    assert api.get("/instances").status_code == 200  # the fleet is discovered: a baseline shows its servers
    created = send(api, "POST", "/baselines", "admin", PROD)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["rules"][0] == "severity: Important and above"
    assert WS2022_PROD in {server["name"] for server in body["servers"]}

    listed = api.get("/baselines", role="viewer")
    assert listed.status_code == 200 and [item["name"] for item in listed.json()["items"]] == ["prod"]
    assert api.get("/baselines/prod").json()["rejected"] == PROD["rejected"]

    fields = {key: value for key, value in PROD.items() if key != "name"} | {"approve_after_days": 0, "rejected": []}
    replaced = send(api, "PUT", "/baselines/prod", "admin", fields)
    assert replaced.status_code == 200
    assert (replaced.json()["approve_after_days"], replaced.json()["rejected"]) == (0, [])
    assert replaced.json()["created_at"] == body["created_at"]

    deleted = send(api, "DELETE", "/baselines/prod", "admin")
    assert deleted.status_code == 200 and deleted.json() == {"name": "prod", "deleted": True}
    assert api.get("/baselines/prod").status_code == 404
    actions = [
        (e["action"], e["target"], e["result"]) for e in reversed(api.audit()) if e["action"].startswith("baseline")
    ]
    assert actions == [
        ("baseline.create", "prod", "ok"),
        ("baseline.update", "prod", "ok"),
        ("baseline.delete", "prod", "ok"),
    ]


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_admins_change_baselines_and_refusals_are_audited(api: Api, role: str) -> None:
    assert send(api, "POST", "/baselines", role, PROD).status_code == 403
    assert send(api, "PUT", "/baselines/prod", role, {}).status_code == 403
    assert send(api, "DELETE", "/baselines/prod", role).status_code == 403
    assert api.get("/baselines", role="viewer").json() == {"items": []}
    refused = [e for e in api.audit() if e["action"].startswith("baseline")]
    assert len(refused) == 3 and all(e["result"].startswith("error: 403") for e in refused)


@pytest.mark.parametrize(
    ("change", "field", "status"),
    [
        ({"approved": ["KB12"]}, "approve", 422),
        ({"min_severity": "Urgent"}, "min_severity", 422),
        ({"classifications": ["drivers"]}, "classifications", 422),
        ({"approve_after_days": 400}, "approve_after_days", 422),
        ({"groups": ["no-equals"]}, "group", 422),
        ({"rejected": [{"kb": "KB5034770", "reason": ""}]}, "reason", 422),
        ({"name": "a/b"}, "name", 422),
        ({"extra": True}, "extra", 422),
    ],
)
def test_bad_baselines_are_refused_naming_the_field(api: Api, change: dict[str, Any], field: str, status: int) -> None:
    response = send(api, "POST", "/baselines", "admin", PROD | change)
    assert response.status_code == status
    assert error_of(response)["field"] == field
    assert api.get("/baselines").json() == {"items": []}


def test_names_collide_and_unknown_names_are_404(api: Api) -> None:
    assert send(api, "POST", "/baselines", "admin", PROD).status_code == 201
    conflict = send(api, "POST", "/baselines", "admin", PROD)
    assert conflict.status_code == 409 and "prod" in error_of(conflict)["message"]
    assert send(api, "PUT", "/baselines/ghost", "admin", {}).status_code == 404
    assert send(api, "DELETE", "/baselines/ghost", "admin").status_code == 404


def test_a_dry_run_plans_with_a_baseline_as_of_a_date(api: Api) -> None:
    send(api, "POST", "/baselines", "admin", {"name": "wait-a-week", "approve_after_days": 7})
    ids = {row["name"]: row["instance_id"] for row in api.get("/instances").json()["items"]}
    request = {"instance_ids": [ids[WS2022_PROD]], "dry_run": True, "baseline": "wait-a-week", "as_of": "2024-02-15"}
    plan = api.post("/runs", **request)
    assert plan.status_code == 200, plan.text
    [server] = plan.json()["servers"]
    assert server["kbs_in_order"] == ["KB5034129"] and server["baseline"] == "wait-a-week"
    assert server["held"][0] == {
        "kb": "KB5034770",
        "rule": "held: released 2024-02-13, approve-after-days 7 not reached on 2024-02-15",
    }
    not_dry = api.post("/runs", **(request | {"dry_run": False}))
    assert not_dry.status_code == 422 and error_of(not_dry)["field"] == "as_of"
    unknown = api.post("/runs", **(request | {"baseline": "ghost"}))
    assert unknown.status_code == 404 and "ghost" in error_of(unknown)["message"]
    assert api.get("/runs").json()["total"] == 0
