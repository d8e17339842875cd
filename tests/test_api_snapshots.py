"""Snapshots over the v1 API: ``POST /runs`` with ``snapshot``, each server's snapshots and rollback commands
in ``GET /runs/{id}``, ``GET /snapshots`` for viewers, ``POST /snapshots/prune`` for admins (audited)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from autopatch.api.app import create_app
from autopatch.cli.context import load_settings

from .test_api import Api, error_of, make_tokens
from .test_api_runs import wait_for_run


@pytest.fixture
def api(env: Path) -> Iterator[Api]:
    tokens = make_tokens(env)
    with TestClient(create_app(load_settings())) as client:
        yield Api(client, env, tokens)


def snapshotted_run(api: Api) -> dict[str, Any]:
    online = [row["instance_id"] for row in api.fleet() if row["online"]]
    started = api.post("/runs", instance_ids=online, snapshot=True)
    assert started.status_code == 202, started.text
    return wait_for_run(api, started.json()["run_id"])


def test_a_run_started_with_snapshot_shows_each_servers_snapshots_and_rollback(api: Api) -> None:
    view = snapshotted_run(api)
    assert view["status"] == "Succeeded" and view["options"]["snapshot"] is True
    snapshots = {s["instance_id"]: s["snapshot"] for s in view["servers"] if s["snapshot"]}
    assert snapshots
    for instance_id, snapshot in snapshots.items():
        assert snapshot["phase"] == "started" and snapshot["started_at"] and snapshot["pruned_at"] is None
        root = next(volume for volume in snapshot["volumes"] if volume["root"])
        assert root["snapshot_id"] in snapshot["snapshot_ids"] and root["device"] == "/dev/sda1"
        assert any(
            f"create-replace-root-volume-task --instance-id {instance_id} --snapshot-id {root['snapshot_id']}" in hint
            for hint in snapshot["rollback"]
        )
    listed = api.get("/snapshots")
    assert listed.status_code == 200
    assert {row["snapshot_id"] for row in listed.json()["items"]} == {
        snapshot_id for snapshot in snapshots.values() for snapshot_id in snapshot["snapshot_ids"]
    }
    assert {row["run_id"] for row in listed.json()["items"]} == {view["run_id"]}


def test_pruning_is_for_admins_checked_and_audited(api: Api) -> None:
    view = snapshotted_run(api)
    for role in ("viewer", "operator"):
        refused = api.post("/snapshots/prune", role=role, older_than="1h")
        assert refused.status_code == 403
    bad = api.post("/snapshots/prune", role="admin", older_than="30 days")
    assert bad.status_code == 422 and "older_than" in error_of(bad)["field"]
    assert api.post("/snapshots/prune", role="admin", older_than="1h", force=True).status_code == 422
    time.sleep(0.2)  # 10,000 simulated seconds: the run's snapshots are older than an hour
    dry = api.post("/snapshots/prune", role="admin", older_than="1h", dry_run=True)
    assert dry.status_code == 200 and dry.json()["dry_run"] and dry.json()["deleted"]
    assert len(api.get("/snapshots").json()["items"]) == len(dry.json()["deleted"])  # nothing deleted yet
    pruned = api.post("/snapshots/prune", role="admin", older_than="1h")
    assert pruned.status_code == 200 and pruned.json()["kept"] == 0 and pruned.json()["errors"] == []
    assert api.get("/snapshots").json()["items"] == []
    after = api.get(f"/runs/{view['run_id']}").json()
    for server in (s for s in after["servers"] if s["snapshot"]):
        assert server["snapshot"]["pruned_at"] and server["snapshot"]["rollback"] == []
    entries = [e for e in api.audit() if e["action"] == "snapshots.prune"]
    results = [e["result"].split(" ")[:2] for e in entries]
    assert results == [["ok"], ["ok"], ["error:", "422"], ["error:", "422"], ["error:", "403"], ["error:", "403"]]
    assert entries[0]["actor"] == "test-admin" and entries[0]["target"] == "older than 1h"


def test_a_run_request_snapshot_must_be_a_boolean(api: Api) -> None:
    online = [row["instance_id"] for row in api.fleet() if row["online"]]
    response = api.post("/runs", instance_ids=online, snapshot="maybe")
    assert response.status_code == 422 and "snapshot" in error_of(response)["field"]
