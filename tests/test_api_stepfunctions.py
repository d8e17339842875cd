"""The API in the AWS deployment: runs handed to Step Functions (on moto), and the app behind API Gateway via Mangum.

The store here is the tests' SQLite copy of the catalog (the DynamoDB adapter passes the same store
contract); what is checked is the hand-over: the run is created and its servers claimed as in
``autopatch serve``, its lease goes to the workflow (``sfn:<run id>``), and exactly one execution,
named after the run, is started with the run id as input.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from fastapi.testclient import TestClient
from moto import mock_aws

from autopatch.api.app import create_app
from autopatch.aws import api_handler
from autopatch.aws.run_starter import workflow_owner
from autopatch.cli.context import load_settings
from autopatch.store.sqlite import SqliteStore

from .test_api import Api, error_of, make_tokens

REGION = "us-east-1"
PASS_MACHINE = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}})


@pytest.fixture
def machines(env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Two state machines in moto and the environment that points the API at them."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AUTOPATCH_AWS_REGION", REGION)
    with mock_aws():
        client = boto3.client("stepfunctions", region_name=REGION)
        role = "arn:aws:iam::123456789012:role/autopatch-workflow"
        arns = {
            name: client.create_state_machine(name=name, definition=PASS_MACHINE, roleArn=role)["stateMachineArn"]
            for name in ("autopatch-patch-run", "autopatch-retry-kb")
        }
        monkeypatch.setenv("AUTOPATCH_STATE_MACHINE_ARN", arns["autopatch-patch-run"])
        monkeypatch.setenv("AUTOPATCH_RETRY_STATE_MACHINE_ARN", arns["autopatch-retry-kb"])
        yield arns


@pytest.fixture
def api(env: Path, machines: dict[str, str]) -> Iterator[Api]:
    tokens = make_tokens(env)
    with TestClient(create_app(load_settings())) as client:
        yield Api(client, env, tokens)


def executions(machine_arn: str) -> list[dict[str, Any]]:
    client = boto3.client("stepfunctions", region_name=REGION)
    listed = client.list_executions(stateMachineArn=machine_arn)["executions"]
    return [client.describe_execution(executionArn=e["executionArn"]) for e in listed]


def test_a_run_started_over_the_api_is_handed_to_its_workflow(api: Api, machines: dict[str, str]) -> None:
    online = [row["instance_id"] for row in api.fleet() if row["online"]][:2]
    started = api.post("/runs", instance_ids=online)
    assert started.status_code == 202
    run_id = started.json()["run_id"]
    [execution] = executions(machines["autopatch-patch-run"])
    assert execution["name"] == run_id
    assert json.loads(execution["input"]) == {
        "run_id": run_id,
        "owner": workflow_owner(run_id),
        "started_by": "test-operator",
    }
    store = SqliteStore(api.db)
    try:
        run = store.get_run(run_id)
        assert run.owner == workflow_owner(run_id) and not run.planned  # the workflow's Plan task plans it
        assert {server.instance_id for server in store.run_servers(run_id)} == set(online)
    finally:
        store.close()
    again = api.post("/runs", instance_ids=online[:1])
    assert again.status_code == 409 and run_id in error_of(again)["message"]  # claimed before the workflow runs
    assert len(executions(machines["autopatch-patch-run"])) == 1


def test_a_workflow_that_cannot_start_fails_its_run_and_frees_the_servers(
    env: Path, machines: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = machines["autopatch-patch-run"].replace("autopatch-patch-run", "deleted-machine")
    monkeypatch.setenv("AUTOPATCH_STATE_MACHINE_ARN", missing)
    tokens = make_tokens(env)
    with TestClient(create_app(load_settings())) as client:
        api = Api(client, env, tokens)
        online = [row["instance_id"] for row in api.fleet() if row["online"]][:1]
        refused = api.post("/runs", instance_ids=online)
        assert refused.status_code == 503 and "workflow could not be started" in error_of(refused)["message"]
        [run] = api.get("/runs").json()["items"]
        assert run["status"] == "Failed" and "StateMachineDoesNotExist" in run["reason"]
        monkeypatch.setenv("AUTOPATCH_STATE_MACHINE_ARN", machines["autopatch-patch-run"])
    with TestClient(create_app(load_settings())) as client:
        api = Api(client, env, tokens)
        assert api.post("/runs", instance_ids=online).status_code == 202  # nothing left holding the server


def http_api_event(method: str, path: str, token: str | None = None, body: Any = None) -> dict[str, Any]:
    """An API Gateway HTTP API payload 2.0 event, as the API function receives it (``$default`` stage)."""
    headers = {"content-type": "application/json"} | ({"authorization": f"Bearer {token}"} if token else {})
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {"http": {"method": method, "path": path, "sourceIp": "203.0.113.7"}},
        "isBase64Encoded": False,
    }
    if body is not None:
        event["body"] = base64.b64encode(json.dumps(body).encode()).decode()
        event["isBase64Encoded"] = True
    return event


def test_the_api_function_answers_through_mangum(env: Path, machines: dict[str, str]) -> None:
    tokens = make_tokens(env)
    api_handler.asgi_handler.cache_clear()
    try:
        health = api_handler.handler(http_api_event("GET", "/api/v1/health"), None)
        assert health["statusCode"] == 200 and json.loads(health["body"])["status"] == "ok"
        anonymous = api_handler.handler(http_api_event("GET", "/api/v1/runs"), None)
        assert anonymous["statusCode"] == 401
        fleet = api_handler.handler(http_api_event("GET", "/api/v1/instances", tokens["viewer"]), None)
        online = [row["instance_id"] for row in json.loads(fleet["body"])["items"] if row["online"]][:1]
        started = api_handler.handler(
            http_api_event("POST", "/api/v1/runs", tokens["operator"], {"instance_ids": online}), None
        )
        assert started["statusCode"] == 202, started["body"]
        run_id = json.loads(started["body"])["run_id"]
        assert [e["name"] for e in executions(machines["autopatch-patch-run"])] == [run_id]
    finally:
        api_handler.asgi_handler.cache_clear()


def test_a_catalog_update_job_is_handed_to_its_function_and_a_refused_invocation_fails_it(
    env: Path, machines: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOPATCH_CATALOG_UPDATE_FUNCTION", "autopatch-catalog-update-missing")
    tokens = make_tokens(env)
    with TestClient(create_app(load_settings())) as client:
        api = Api(client, env, tokens)
        refused = api.post("/catalog/update", role="admin")
        assert refused.status_code == 503 and "could not be invoked" in error_of(refused)["message"]
        [entry] = [e for e in api.audit() if e["action"] == "catalog.update"]
        job_id = entry["target"]
        job = api.get(f"/jobs/{job_id}").json()
        assert job["status"] == "failed" and "ResourceNotFoundException" in job["error"]
        again = api.post("/catalog/update", role="admin")  # a failed job does not block the next one
        assert again.status_code == 503
