"""Rings, gates and percentages over ``POST /api/v1/runs``: 422 naming the field, admin-only scripts, a halt."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from autopatch.api.app import create_app
from autopatch.cli.context import load_settings
from autopatch.domain.rings import HEALTH_SCRIPT_MAX_BYTES

from .conftest import configured_simulator
from .test_api import Api, error_of, make_tokens

INSTALL_FAILURE = -2147023293  # 0x80070643
TERMINAL = ("Succeeded", "Failed", "Cancelled", "Halted")


@pytest.fixture
def api(env: Path) -> Iterator[Api]:
    tokens = make_tokens(env)
    with TestClient(create_app(load_settings())) as client:
        yield Api(client, env, tokens)


def wait_for_end(api: Api, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        view: dict[str, Any] = api.get(f"/runs/{run_id}").json()
        if view["status"] in TERMINAL:
            return view
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not end within 30 s")


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        ({"rings": "canary"}, "rings", "NAME=SELECTOR"),
        ({"rings": "canary=Environment=nowhere;rest=*"}, "rings", "selects none of the run's"),
        ({"rings": "canary=50%"}, "rings", "in no ring"),
        ({"rings": "x" * 3000}, "rings", "at most 2000 characters"),
        ({"concurrency": "0%"}, "concurrency", "percentage"),
        ({"concurrency": 0}, "concurrency", "a count from 1 to 1000"),
        ({"max_errors": "lots"}, "max_errors", "percentage"),
        ({"rings": "all=*", "soak": "2w"}, "soak", "30m"),
        ({"soak": "30m"}, "soak", "give rings"),
        ({"health_script": "exit 0"}, "health_script", "give rings"),
        ({"rings": "all=*", "health_script": "x" * (HEALTH_SCRIPT_MAX_BYTES + 1)}, "health_script", "at most"),
    ],
)
def test_bad_rollout_options_are_422_naming_the_field(api: Api, body: dict[str, Any], field: str, rule: str) -> None:
    response = api.post("/runs", role="admin", all=True, dry_run=True, **body)
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["field"] == field and rule in (error["rule"] or error["message"])


def test_a_dry_run_answers_each_servers_ring(api: Api) -> None:
    plan = api.post("/runs", all=True, dry_run=True, rings="canary=34%;rest=*", concurrency="50%")
    assert plan.status_code == 200
    rings = {row["instance_id"]: row["ring"] for row in plan.json()["servers"]}
    assert [rings[i] for i in sorted(rings)] == ["canary"] * 3 + ["rest"] * 3


def test_only_an_admin_may_start_a_run_with_a_health_script(api: Api) -> None:
    body = {"all": True, "dry_run": True, "rings": "all=*", "health_script": "Get-Service W32Time\nexit 0\n"}
    refused = api.post("/runs", role="operator", **body)
    assert refused.status_code == 403 and "admin" in error_of(refused)["message"]
    assert api.post("/runs", role="admin", **body).status_code == 200
    results = [e["result"] for e in api.audit() if e["action"] == "run.create"]
    assert any(result.startswith("error: 403") for result in results) and "ok" in results


def test_a_canary_failure_halts_a_run_the_server_drives_and_the_run_shows_its_rings(api: Api) -> None:
    plan = api.post("/runs", all=True, dry_run=True).json()
    target = next(row for row in plan["servers"] if row["kbs_in_order"])
    with configured_simulator() as fleet:
        fleet.inject_failure(target["instance_id"], target["kbs_in_order"][0], INSTALL_FAILURE, times=1)
    rings = f"canary=Name={target['name']};rest=*"
    started = api.post("/runs", all=True, rings=rings, concurrency="50%", max_errors="20%")
    assert started.status_code == 202, started.text
    view = wait_for_end(api, started.json()["run_id"])
    assert view["status"] == "Halted" and view["reason"].startswith("ring canary failed its health gate:")
    assert (view["options"]["concurrency"], view["options"]["max_errors"]) == (3, 2)  # 50% and 20% of 6, rounded up
    canary, rest = view["rings"]
    assert (canary["status"], rest["status"]) == ("Failed", "Not Started")
    assert canary["counts"] == {"servers": 1, "Failed": 1}
    assert rest["counts"]["servers"] == 5 and rest["reason"] == "not started: ring canary halted the run"
