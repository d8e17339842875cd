"""Running the AWS side offline: Step Functions executing the real definitions in moto, the real handlers in-process.

- ``StepFunctions``: moto's ASL interpreter with the simple Lambda backend's ``invoke`` replaced by
  a call of the handler the registry names (``autopatch.aws.functions``); Wait states and the
  retrier's back-off sleep a token 20 ms (their requested seconds are recorded); moto's bug that
  ignores a task token completed while its Lambda still runs, when HeartbeatSeconds is set, is
  patched (on AWS that completion counts; ``wait_command`` relies on it).
- ``EventBridge``: SSM's "command ended" events for the simulator (which emits none): a thread
  watches the commands the fleet was sent and calls ``command_events.handler`` once per command
  that ended, unless the test made EventBridge lose it.
- ``ApiCalls``: every AWS call any botocore client makes, by the function whose handler made it.
- The catalog: two real MSRC months cut down to Windows Server 2022, so a DynamoDB store on moto
  is filled and read in well under a second.
"""

from __future__ import annotations

import importlib
import json
import threading
import time
import traceback
import types
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import boto3
import botocore.handlers
import pytest
from moto import mock_aws

from autopatch.aws import command_events
from autopatch.aws.functions import FUNCTIONS, STATE_MACHINES, function_named
from autopatch.catalog.sources import parse_file
from autopatch.domain.catalog import CatalogDocument
from autopatch.fleet.simulator import FleetSimulator
from autopatch.store.base import CatalogStore

from .conftest import xml_path

REGION = "us-east-1"
ACCOUNT = "123456789012"
ROOT = Path(__file__).resolve().parents[1]
CATALOG_MONTHS = ("2025-Sep", "2025-Oct")
# Windows Server 2022's cumulative updates in those months, oldest first, and the builds they bring.
KB_SEPTEMBER, KB_OCTOBER, KB_OCTOBER_OOB = "KB5065432", "KB5066782", "KB5070884"
MOTO_CONFIG: Any = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}


@cache
def catalog_documents() -> tuple[tuple[str, CatalogDocument], ...]:
    """The two months cut down to Windows Server 2022 and a few CVEs per KB: real rows, quick to store and read.

    The DynamoDB store reads a product's catalog one CVE at a time, and moto answers a query in a
    few milliseconds: a whole month makes every plan take seconds, which nothing here needs.
    """
    documents = []
    for month in CATALOG_MONTHS:
        sha256, parsed = parse_file(xml_path(month))
        for document in parsed:
            keep = {p.product_id for p in document.products if p.name == "Windows Server 2022"}
            fixed_by: dict[int, set[str]] = defaultdict(set)
            for fix in document.fixes:
                if fix.product_id in keep:
                    fixed_by[fix.kb].add(fix.cve)
            cves = {cve for fixed in fixed_by.values() for cve in sorted(fixed)[:4]}
            documents.append(
                (
                    sha256,
                    replace(
                        document,
                        products=[p for p in document.products if p.product_id in keep],
                        affected=[a for a in document.affected if a.product_id in keep and a.cve in cves],
                        fixes=[f for f in document.fixes if f.product_id in keep and f.cve in cves],
                        vulnerabilities=[v for v in document.vulnerabilities if v.cve in cves],
                    ),
                )
            )
    return tuple(documents)


def import_catalog(store: CatalogStore) -> None:
    for sha256, document in catalog_documents():
        store.replace_document(document, sha256)


class FakeContext:
    """The parts of a Lambda context that Powertools reads (logger keys, idempotency's remaining time)."""

    def __init__(self, name: str) -> None:
        self.function_name = name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 128
        self.invoked_function_arn = function_arn(name)
        self.aws_request_id = f"{name}-{time.monotonic_ns()}"
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = "test"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def function_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


def handler_of(name: str) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    module, _, attribute = function_named(name).handler.rpartition(".")
    handler: Callable[[dict[str, Any], Any], dict[str, Any]] = getattr(importlib.import_module(module), attribute)
    return handler


# --- recording AWS calls ---------------------------------------------------------------------------

# An API operation IAM authorises under another name.
_IAM_NAMES = {"lambda:Invoke": "lambda:InvokeFunction"}
_TRANSACTION_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


class ApiCalls:
    """Every (IAM action) a botocore client calls, by the Lambda function running in that thread.

    Registered as a built-in handler, so every session and client made afterwards carries it:
    the store's, the fleet's, Powertools', SNS's. Transactions are split into their items' actions,
    which is how IAM authorises them; an EC2 resource tagged at creation (``TagSpecifications``)
    needs ``ec2:CreateTags`` besides the call's own action.
    """

    def __init__(self) -> None:
        self.by_function: dict[str, set[str]] = defaultdict(set)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._everywhere: str | None = None

    @contextmanager
    def acting_as(self, name: str) -> Iterator[None]:
        previous = getattr(self._local, "name", None)
        self._local.name = name
        try:
            yield
        finally:
            self._local.name = previous

    @contextmanager
    def acting_as_in_every_thread(self, name: str) -> Iterator[None]:
        """``acting_as`` for the calls of threads this one hands work to (an ASGI app's worker threads).

        A thread that acts as a function of its own (a function invoked from here) still counts as that one.
        """
        self._everywhere = name
        try:
            with self.acting_as(name):
                yield
        finally:
            self._everywhere = None

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        name = getattr(self._local, "name", None) or self._everywhere
        if name is None:
            return
        prefix = model.service_model.signing_name
        actions = {_IAM_NAMES.get(f"{prefix}:{model.name}", f"{prefix}:{model.name}")}
        if model.name == "TransactWriteItems":
            actions = {f"dynamodb:{_TRANSACTION_ACTIONS[kind]}" for item in params["TransactItems"] for kind in item}
        if prefix == "ec2" and params.get("TagSpecifications"):  # tags set at creation: IAM asks for CreateTags too
            actions.add("ec2:CreateTags")
        with self._lock:
            self.by_function[name] |= actions


@contextmanager
def recording_api_calls() -> Iterator[ApiCalls]:
    calls = ApiCalls()
    entry = ("before-parameter-build.*.*", calls)
    botocore.handlers.BUILTIN_HANDLERS.append(entry)
    boto3.setup_default_session()  # boto3.client() builds its clients from a session made after this
    try:
        yield calls
    finally:
        botocore.handlers.BUILTIN_HANDLERS.remove(entry)
        boto3.setup_default_session()


# --- the simulator's commands, and EventBridge's events about them -----------------------------------


class RecordingFleet:
    """The simulator, remembering every command it was sent (EventBridge reports each one's end)."""

    def __init__(self, fleet: FleetSimulator) -> None:
        self.fleet = fleet
        self.commands: list[tuple[str, str, str]] = []  # (kind, instance, command id)
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fleet, name)

    def _remember(self, kind: str, instance_id: str, command_id: str | None) -> None:
        if command_id is not None:
            with self._lock:
                self.commands.append((kind, instance_id, command_id))

    def send_install(self, instance_id: str, kb: str, token: str | None = None) -> str:
        command_id = self.fleet.send_install(instance_id, kb, token)
        self._remember("install", instance_id, command_id)
        return command_id

    def send_scan(self, instance_id: str) -> str:
        command_id = self.fleet.send_scan(instance_id)
        self._remember("scan", instance_id, command_id)
        return command_id

    def send_health_check(self, instance_id: str, script: str) -> str:
        command_id = self.fleet.send_health_check(instance_id, script)
        self._remember("health", instance_id, command_id)
        return command_id

    def sent(self) -> list[tuple[str, str, str]]:
        with self._lock:
            return list(self.commands)


def command_event(command_id: str, instance_id: str, status: str) -> dict[str, Any]:
    """SSM's status-change event, in the documented shape (AWS_TESTING.md)."""
    return {
        "version": "0",
        "id": "4780e1b8-f56b-4de5-95f2-95db273d1602",
        "detail-type": "EC2 Command Invocation Status-change Notification",
        "source": "aws.ssm",
        "account": ACCOUNT,
        "time": "2026-03-10T21:51:32Z",
        "region": REGION,
        "resources": [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance_id}"],
        "detail": {
            "command-id": command_id,
            "document-name": "AWS-RunPowerShellScript",
            "instance-id": instance_id,
            "requested-date-time": "2026-03-10T21:51:30.049Z",
            "status": status,
        },
    }


class EventBridge:
    """Delivers one event per command that ended, as the rule on terminal statuses would; ``lose`` drops some."""

    def __init__(self, fleet: RecordingFleet, calls: ApiCalls | None = None) -> None:
        self.fleet = fleet
        self.calls = calls
        self.lose: Callable[[str, str, str], bool] = lambda kind, instance_id, command_id: False
        self.delivered: list[str] = []
        self.lost: list[str] = []
        self._reported: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="eventbridge", daemon=True)

    def __enter__(self) -> EventBridge:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(0.01):
            for kind, instance_id, command_id in self.fleet.sent():
                if command_id in self._reported:
                    continue
                status = self.fleet.get_command(instance_id, command_id).status
                if not status.is_terminal:
                    continue
                self._reported.add(command_id)
                if self.lose(kind, instance_id, command_id):
                    self.lost.append(command_id)
                    continue
                event = command_event(command_id, instance_id, str(status))
                if self.calls is not None:
                    with self.calls.acting_as("CommandEventsFunction"):
                        command_events.handler(event, FakeContext("CommandEventsFunction"))
                else:
                    command_events.handler(event, FakeContext("CommandEventsFunction"))
                self.delivered.append(command_id)


# --- Step Functions in moto ------------------------------------------------------------------------


@dataclass
class Execution:
    status: str
    history: list[dict[str, Any]]
    output: Any

    @property
    def transitions(self) -> int:
        """State transitions, as Step Functions bills them: one per state entered."""
        return sum(1 for event in self.history if event["type"].endswith("StateEntered"))

    def entered(self, state: str) -> int:
        return sum(
            1
            for event in self.history
            if event["type"].endswith("StateEntered") and event["stateEnteredEventDetails"]["name"] == state
        )

    @property
    def timeouts(self) -> int:
        """Waits that ended on their heartbeat or timeout (moto names both States.Timeout)."""
        return sum(1 for event in self.history if event["type"] == "TaskTimedOut")

    @property
    def lambda_invocations(self) -> int:
        return sum(1 for event in self.history if event["type"] in ("LambdaFunctionScheduled", "TaskScheduled"))


def definition(path: str) -> str:
    """An ASL file with its ``${…}Arn`` placeholders filled, as the template's DefinitionSubstitutions do."""
    text = (ROOT / path).read_text(encoding="utf-8")
    for function in FUNCTIONS:
        text = text.replace("${" + function.placeholder + "}", function_arn(function.name))
    assert "${" not in text, f"{path} names a placeholder the registry does not know"
    return text


class StepFunctions:
    """Both state machines in moto, executing against the handlers in this process."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, calls: ApiCalls | None = None) -> None:
        self.calls = calls
        self.waits: list[float] = []  # seconds each Wait state and retry back-off asked for
        self.invocations: list[str] = []
        self.errors: list[str] = []  # the traceback of every handler that raised (a failing test prints them)
        self._patch(monkeypatch)
        self.client = boto3.client("stepfunctions", region_name=REGION)
        role = f"arn:aws:iam::{ACCOUNT}:role/autopatch-states"
        self.machines = {
            name: self.client.create_state_machine(name=name, definition=definition(path), roleArn=role)[
                "stateMachineArn"
            ]
            for name, path in STATE_MACHINES.items()
        }

    def _patch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from moto.awslambda_simple.models import LambdaSimpleBackend
        from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
        from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
            state_task_service_callback as callback,
        )
        from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import WaitFunction

        harness = self

        def invoke(backend: Any, function_name: str, qualifier: Any, body: Any, headers: Any, response: Any) -> bytes:
            return harness._invoke(function_name, body, response)

        def wait(function: Any, env: Any, wait_seconds: int) -> None:
            harness.waits.append(wait_seconds)
            time.sleep(0.02)

        def sleep(seconds: float) -> None:
            harness.waits.append(seconds)
            time.sleep(0.02)

        original = callback.StateTaskServiceCallback._wait_for_task_token_heartbeat

        def heartbeat(task: Any, env: Any, endpoint: Any, heartbeat_endpoint: Any) -> Any:
            # moto arms the heartbeat after the Lambda returned, forgetting a token completed meanwhile.
            done = endpoint.get_outcome()
            return done if done is not None else original(task, env, endpoint, heartbeat_endpoint)

        monkeypatch.setattr(LambdaSimpleBackend, "invoke", invoke)
        monkeypatch.setattr(WaitFunction, "_wait_interval", wait)
        monkeypatch.setattr(retrier_decl, "time", types.SimpleNamespace(sleep=sleep))
        monkeypatch.setattr(callback.StateTaskServiceCallback, "_wait_for_task_token_heartbeat", heartbeat)

    def _invoke(self, function_name: str, body: Any, response: dict[str, str]) -> bytes:
        name = function_name.rsplit(":", 1)[-1]
        self.invocations.append(name)
        event = json.loads(body) if body else {}
        try:
            if self.calls is not None:
                with self.calls.acting_as(name):
                    result = handler_of(name)(event, FakeContext(name))
            else:
                result = handler_of(name)(event, FakeContext(name))
        except Exception as exc:  # what Lambda reports for an unhandled error; Retry/Catch match its type
            self.errors.append(f"{name}: {traceback.format_exc()}")
            response["x-amz-function-error"] = "Unhandled"
            return json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}).encode()
        return json.dumps(result).encode()

    def execute(self, machine: str, run_id: str, timeout: float = 60.0) -> Execution:
        """Run one execution named after the run (one execution per run) to its end; must stay inside the mock."""
        started = self.client.start_execution(
            stateMachineArn=self.machines[machine], name=run_id, input=json.dumps({"run_id": run_id})
        )
        return self.finish(started["executionArn"], timeout)

    def finish(self, execution_arn: str, timeout: float = 60.0) -> Execution:
        """Wait for an execution (started here or by a handler) to end; its status, history and output."""
        deadline = time.monotonic() + timeout
        while True:
            described = self.client.describe_execution(executionArn=execution_arn)
            if described["status"] != "RUNNING":
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"execution {execution_arn} still running after {timeout} s")
            time.sleep(0.02)
        history: list[dict[str, Any]] = []
        paginator = self.client.get_paginator("get_execution_history")
        for page in paginator.paginate(executionArn=execution_arn):
            history.extend(page["events"])
        output = json.loads(described["output"]) if described.get("output") else None
        return Execution(described["status"], history, output)


@contextmanager
def aws_mock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto with Step Functions executing definitions, Lambda without Docker, DynamoDB one request at a time.

    moto's DynamoDB is not thread-safe (``transact_write_items`` deep-copies a table while another
    thread writes to it: "dictionary changed size during iteration"); Map iterations, the local
    engine's threads and EventBridge's all write at once, as they do on AWS, so its requests are
    serialised here. DynamoDB requests never nest, so a plain lock does.
    """
    with serialised_dynamodb(), mock_aws(config=MOTO_CONFIG):
        yield


@contextmanager
def serialised_dynamodb() -> Iterator[None]:
    """moto's DynamoDB one request at a time, as DynamoDB applies one conditional write per item at a time.

    moto is not thread-safe: two threads' conditional puts on one item can both succeed, and a
    transaction deep-copies a table another thread is writing to. DynamoDB requests never nest,
    so a plain lock does.
    """
    from moto.dynamodb.responses import DynamoHandler

    lock = threading.Lock()
    original = DynamoHandler.call_action

    def call_action(handler: Any) -> Any:
        with lock:
            return original(handler)

    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
    try:
        yield
    finally:
        DynamoHandler.call_action = original  # type: ignore[method-assign]
