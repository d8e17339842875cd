"""The CLI on the AWS deployment's tables (AUTOPATCH_STORE=dynamodb): how the first admin token is made."""

from __future__ import annotations

import json

import pytest
from moto import mock_aws

from autopatch.store.dynamodb import DynamoStore

from .conftest import run_cli


def test_the_cli_makes_and_lists_tokens_in_dynamodb(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AUTOPATCH_STORE": "dynamodb",
        "AUTOPATCH_CATALOG_TABLE": "ap-catalog",
        "AUTOPATCH_STATE_TABLE": "ap-state",
        "AUTOPATCH_AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        tables = DynamoStore("ap-catalog", "ap-state", region="us-east-1")
        tables.create_tables()
        code, out, _ = run_cli(capsys, "token", "create", "--name", "admin", "--role", "admin", "--format", "json")
        assert code == 0 and json.loads(out)["token"].startswith("ap_")
        code, out, _ = run_cli(capsys, "token", "list", "--format", "json")
        assert code == 0 and [(t["name"], t["role"]) for t in json.loads(out)] == [("admin", "admin")]
        [record] = tables.list_tokens()  # really in the table, not in a local file
        assert record.name == "admin"
        code, out, _ = run_cli(capsys, "audit", "--format", "json")
        assert [e["action"] for e in json.loads(out)] == ["token.create"]
