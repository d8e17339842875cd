"""The Lambda registry (``autopatch.aws.functions``) is true: every function calls exactly the AWS actions it lists.

The deployed wiring runs here on moto: the DynamoDB store, ``SsmFleet`` on moto's SSM and EC2, SNS,
Step Functions executing the real definitions. moto lacks ``DescribeInstanceInformation`` and
cannot tag on-premises servers, so those two calls are answered on the SSM client with responses
of the documented shape; moto's commands succeed at once with empty output, so a stand-in for the
SSM agent fills in what the packaged scripts print (scan, install, reboot). Every AWS call any
client makes is recorded by the function whose handler made it, through a botocore hook.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import botocore.handlers
import pytest
from botocore.awsrequest import AWSResponse

from autopatch.access import create_token
from autopatch.aws import api_handler, check_tasks, install_tasks
from autopatch.aws.functions import FUNCTIONS, OUTPUT_READ_ACTIONS, function_named
from autopatch.aws.run_starter import hand_over
from autopatch.aws.wiring import Runtime, Timing, use_runtime
from autopatch.domain.patching import KbState
from autopatch.domain.polling import PollPolicy
from autopatch.domain.windows import build_window
from autopatch.engine.planning import start_run
from autopatch.errors import DeliveryUncertainError, ExecutionError, StoreError, TransientError
from autopatch.fleet.reports import OfferedUpdate, install_json, scan_json
from autopatch.fleet.ssm import SsmFleet
from autopatch.settings import Settings
from autopatch.store.dynamodb import DynamoStore

from .aws_support import (
    KB_OCTOBER,
    KB_OCTOBER_OOB,
    REGION,
    ApiCalls,
    EventBridge,
    FakeContext,
    RecordingFleet,
    StepFunctions,
    aws_mock,
    command_event,
    handler_of,
    import_catalog,
    recording_api_calls,
)
from .conftest import xml_path
from .test_api_stepfunctions import PASS_MACHINE, http_api_event

ON_PREMISES = "mi-0123456789abcdef0"
CAPTION = "Microsoft Windows Server 2022 Datacenter"
FAST = PollPolicy(first_delay=0.01, factor=1.5, max_delay=0.05, timeout=5.0)


@dataclass
class Agent:
    """What the packaged scripts print on one Windows Server 2022 at October's build: scans, installs, reboots."""

    build: str = "10.0.20348.4294"
    installed: list[str] = field(default_factory=lambda: [KB_OCTOBER])
    booted: datetime = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)
    pending_reboot: bool = False
    failing: bool = False  # installs fail (0x80070643)

    def reset(self) -> None:
        """Back to October's build, the OOB fix offered again, installs succeeding."""
        self.build, self.installed, self.pending_reboot, self.failing = "10.0.20348.4294", [KB_OCTOBER], False, False

    def output(self, comment: str) -> str:
        if comment == "AutoPatch scan":
            offered = [] if KB_OCTOBER_OOB in self.installed else [OfferedUpdate(KB_OCTOBER_OOB, "2025-10 OOB")]
            return scan_json(
                computer_name="EC2AMAZ-TEST",
                os_caption=CAPTION,
                build=self.build,
                installation_type="Server",
                installed_kbs=self.installed,
                offered_updates=offered,
                pending_reboot=self.pending_reboot,
                last_boot_time=self.booted,
            )
        if comment == "AutoPatch health check":
            return "EC2AMAZ-TEST: healthy\n"
        if comment == "AutoPatch reboot":
            self.booted += timedelta(minutes=10)
            self.pending_reboot = False
            return json.dumps({"schema": 1, "rebooted": True, "last_boot_time": f"{self.booted:%Y-%m-%dT%H:%M:%SZ}"})
        kb = comment.split(" ")[1]  # "AutoPatch KB5070884 <token>"
        if self.failing:
            return install_json(
                kb=kb, result_code=4, hresult=-2147023293, message="Installation failed", status="failed"
            )
        self.build, self.installed, self.pending_reboot = "10.0.20348.4297", [kb], True
        return install_json(kb=kb, result_code=2, reboot_required=True, message="installed", status="installed")


def answer(response: dict[str, Any]) -> tuple[AWSResponse, dict[str, Any]]:
    """A botocore ``before-call`` answer: the call never reaches moto."""
    return AWSResponse("https://ssm.local", 200, {}, None), response | {"ResponseMetadata": {"HTTPStatusCode": 200}}


class UncertainFirstSend:
    """SsmFleet whose first install send reaches SSM but loses its answer (a read timeout): its fate is unknown."""

    def __init__(self, fleet: Any) -> None:
        self.fleet = fleet
        self.uncertain = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fleet, name)

    def send_install(self, instance_id: str, kb: str, token: str | None = None) -> str:
        command_id: str = self.fleet.send_install(instance_id, kb, token)
        if self.uncertain:
            self.uncertain = False
            raise DeliveryUncertainError("sending: no answer after the request left (read timeout)")
        return command_id


@dataclass
class World:
    store: DynamoStore
    fleet: SsmFleet
    runtime: Runtime
    instance_id: str
    topic: str
    agent: Agent


def build_world(monkeypatch: pytest.MonkeyPatch, calls: ApiCalls) -> World:
    import moto.ec2.utils
    import moto.ssm.models

    # moto 5.2.5 lacks DescribeInstances' "platform" filter; its instances carry the AMI's platform.
    monkeypatch.setitem(moto.ec2.utils.filter_dict_attribute_mapping, "platform", "platform")

    ec2 = boto3.client("ec2", region_name=REGION)
    [image] = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "platform", "Values": ["windows"]}])["Images"][
        :1
    ]
    instance_id = ec2.run_instances(ImageId=image["ImageId"], MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    agent = Agent()
    respond = moto.ssm.models.Command.invocation_response

    def invocation(command: Any, target: str, plugin: str) -> dict[str, Any]:
        result: dict[str, Any] = respond(command, target, plugin)
        if target == instance_id:
            result["StandardOutputContent"] = agent.output(command.comment)
        return result

    monkeypatch.setattr(moto.ssm.models.Command, "invocation_response", invocation)
    ssm = boto3.client("ssm", region_name=REGION)
    managed = [
        {"InstanceId": instance_id, "PingStatus": "Online", "PlatformType": "Windows", "PlatformName": CAPTION},
        {"InstanceId": ON_PREMISES, "PingStatus": "Online", "PlatformType": "Windows", "PlatformName": CAPTION},
    ]
    # What moto does not answer, answered for this client and for every session made later (the API function's).
    answers = [
        (
            "before-call.ssm.DescribeInstanceInformation",
            lambda **_: answer({"InstanceInformationList": [{"PlatformVersion": "10.0.20348", **m} for m in managed]}),
        ),
        ("before-call.ssm.ListTagsForResource", lambda **_: answer({"TagList": [{"Key": "Name", "Value": "on-prem"}]})),
    ]
    for event, handler in answers:
        ssm.meta.events.register(event, handler)
    monkeypatch.setattr(botocore.handlers, "BUILTIN_HANDLERS", [*botocore.handlers.BUILTIN_HANDLERS, *answers])
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    store = DynamoStore("autopatch-catalog", "autopatch-state", client=dynamodb, sleep=lambda _: None)
    store.create_tables(wait=False)
    import_catalog(store)
    topic = boto3.client("sns", region_name=REGION).create_topic(Name="autopatch")["TopicArn"]
    fleet = SsmFleet(ssm_client=ssm, ec2_client=ec2, region=REGION)
    runtime = Runtime(
        store=store,
        fleet=fleet,
        states=boto3.client("stepfunctions", region_name=REGION),
        settings=Settings(notify=f"sns:{topic}", aws_region=REGION),
        timing=Timing(silence_seconds=1, wait_timeout_seconds=2, scan_poll=FAST, lookup_delay=0.01),
        idempotency_table="autopatch-state",
        idempotency_client=dynamodb,
        sleep=lambda seconds: None,
    )
    return World(store, fleet, runtime, instance_id, topic, agent)


def invoke(calls: ApiCalls, name: str, event: dict[str, Any]) -> Any:
    with calls.acting_as(name):
        return handler_of(name)(event, FakeContext(name))


def drive_a_run_on_step_functions(world: World, calls: ApiCalls, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plan, EBS snapshots (--snapshot), install (its send's fate unknown at first), reboot through SSM,
    verify, finish, notify."""
    instances = world.fleet.list_instances()
    world.store.save_instances(instances, datetime.now(UTC))
    [target] = [i for i in instances if i.instance_id == world.instance_id]
    run, lease = start_run(world.store, "patch", [target], {"concurrency": 1, "snapshot": True})
    hand_over(world.store, lease)
    recording = RecordingFleet(world.fleet)  # type: ignore[arg-type]
    world.runtime.fleet = UncertainFirstSend(recording)
    states = StepFunctions(monkeypatch, calls)
    with EventBridge(recording, calls):
        execution = states.execute("PatchRunStateMachine", run.run_id)
    world.runtime.fleet = world.fleet
    assert execution.status == "SUCCEEDED", states.errors
    [item] = [i for i in world.store.run_items(run.run_id) if i.kb == KB_OCTOBER_OOB]
    assert item.state is KbState.SUCCESS and item.reason == "installed and verified after reboot"
    assert world.store.get_run(run.run_id).status.is_terminal
    assert execution.entered("LookForSend") == 1 and execution.entered("WaitReboot") == 1
    # The server's EBS volumes were snapshotted (moto's EC2) before its first KB left Pending.
    snapshot = world.store.run_snapshot(run.run_id, world.instance_id)
    assert snapshot is not None and str(snapshot.phase) == "started" and snapshot.volumes
    [started] = [t.at for t in world.store.transitions(run.run_id) if t.to_state == "InProgress"]
    assert snapshot.started_at is not None and snapshot.started_at <= started
    assert execution.entered("Snapshot") == 1


def skip_a_server_whose_snapshot_fails(world: World, calls: ApiCalls, monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot EC2 refuses skips the server: the reason recorded, its hold on the server released."""
    instances = [i for i in world.fleet.list_instances() if i.instance_id == world.instance_id]
    run, lease = start_run(world.store, "patch", instances, {"snapshot": True})
    hand_over(world.store, lease)
    server = {"run_id": run.run_id, "instance_id": world.instance_id}
    invoke(calls, "PlanFunction", {"run_id": run.run_id})
    assert invoke(calls, "GateFunction", server) == {"start": True, "snapshot": True}

    def refused(*args: Any, **kwargs: Any) -> None:
        raise ExecutionError("creating the snapshots failed: UnauthorizedOperation: not allowed")

    with monkeypatch.context() as patched:
        patched.setattr(world.fleet, "create_snapshots", refused)
        assert invoke(calls, "SnapshotFunction", server)["phase"] == "skipped"
    skipped = world.store.run_server(run.run_id, world.instance_id)
    assert skipped.status == "Skipped" and skipped.reason.startswith("snapshot failed: creating the snapshots failed")
    invoke(calls, "FinishRunFunction", {"run_id": run.run_id})


def check_a_ring_that_fails_its_gate(world: World, calls: ApiCalls, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run with one ring and a health script on Step Functions: the server patched, then checked (online,
    the script sent through SSM and awaited on its event, its result read), until recording the result
    fails (the Lambda stopped): FailCheck records the error as the server's check, the gate fails, and the
    run with it."""
    instances = [i for i in world.fleet.list_instances() if i.instance_id == world.instance_id]
    world.store.save_instances(instances, datetime.now(UTC))
    options = {"concurrency": 1, "rings": "all=*", "health_script": "exit 0"}
    run, lease = start_run(world.store, "patch", instances, options)
    hand_over(world.store, lease)

    def unrecorded(*args: Any, **kwargs: Any) -> None:
        raise ExecutionError("Runtime.ExitError: the Lambda was stopped")

    recording = RecordingFleet(world.fleet)  # type: ignore[arg-type]
    world.runtime.fleet = recording
    states = StepFunctions(monkeypatch, calls)
    with monkeypatch.context() as patched, EventBridge(recording, calls):
        patched.setattr(check_tasks, "record_health_result", unrecorded)
        execution = states.execute("PatchRunStateMachine", run.run_id)
    world.runtime.fleet = world.fleet
    assert execution.status == "SUCCEEDED", states.errors
    assert execution.entered("WaitHealthCheck") == 1 and execution.entered("FailCheck") == 1
    ended = world.store.get_run(run.run_id)
    assert str(ended.status) == "Failed"  # the last ring's gate: nothing left to halt
    assert ended.reason.startswith("ring all failed its health gate: ")
    assert "check failed: ExecutionError: Runtime.ExitError" in ended.reason


def fail_each_once_only_task(world: World, calls: ApiCalls, monkeypatch: pytest.MonkeyPatch) -> None:
    """A once-only task whose action fails keeps no record (Powertools deletes it), so its retry acts again."""
    instances = world.fleet.list_instances()
    world.store.save_instances(instances, datetime.now(UTC))
    run, lease = start_run(world.store, "patch", [i for i in instances if i.instance_id == world.instance_id], {})
    hand_over(world.store, lease)
    server = {"run_id": run.run_id, "instance_id": world.instance_id}
    assert invoke(calls, "PlanFunction", {"run_id": run.run_id})["servers"] == [world.instance_id]
    assert invoke(calls, "GateFunction", server) == {"start": True, "snapshot": False}

    def refused(*args: Any, **kwargs: Any) -> str:
        raise ExecutionError("sending: AccessDeniedException")

    # NextKb sends a KB nothing delays itself; SendInstall sends one after a back-off. Both once only.
    with monkeypatch.context() as patched:
        patched.setattr(world.fleet, "send_install", refused)
        with pytest.raises(ExecutionError):
            invoke(calls, "NextKbFunction", server)
    # The retry acts again, and finds the attempt recorded before the refused send: its fate is unknown.
    step = invoke(calls, "NextKbFunction", server)
    assert (step["phase"], step["kb"], step["attempt"]) == ("sending", KB_OCTOBER_OOB, 1)
    step = invoke(calls, "LookForSendFunction", {**server, "step": step})
    assert step["phase"] == "transient"  # looked for by its token: never created
    step = invoke(calls, "NextKbFunction", server)
    assert (step["phase"], step["attempt"], step["delay"]) == ("send", 2, 2)  # after the Backoff Wait
    with monkeypatch.context() as patched:
        patched.setattr(world.fleet, "send_install", refused)
        with pytest.raises(ExecutionError):
            invoke(calls, "SendInstallFunction", {**server, "step": step})
    assert invoke(calls, "SendInstallFunction", {**server, "step": step})["phase"] == "sending"
    assert invoke(calls, "LookForSendFunction", {**server, "step": step})["phase"] == "transient"
    step = invoke(calls, "NextKbFunction", server)
    assert (step["phase"], step["attempt"], step["delay"]) == ("send", 3, 4)
    step = invoke(calls, "SendInstallFunction", {**server, "step": step})
    assert step["phase"] == "sent"
    step = invoke(calls, "RecordCommandFunction", {**server, "step": step})
    assert step["phase"] == "reboot"  # recorded and settled in one task

    def away(instance_id: str) -> str:
        raise TransientError("InvalidInstanceId: the agent is not connected")

    with monkeypatch.context() as patched:
        patched.setattr(world.fleet, "reboot", away)
        assert invoke(calls, "RebootFunction", {**server, "step": step})["phase"] == "done"
    [item] = [i for i in world.store.run_items(run.run_id) if i.kb == KB_OCTOBER_OOB]
    assert item.state is KbState.SUCCESS and "reboot pending" in item.reason

    def broken(*args: Any, **kwargs: Any) -> None:
        raise StoreError("DynamoDB: ProvisionedThroughputExceeded after 10 tries")

    with monkeypatch.context() as patched:
        patched.setattr(world.store, "record_notification", broken)
        with pytest.raises(StoreError):
            invoke(calls, "NotifyFunction", {"run_id": run.run_id})
    [result] = invoke(calls, "NotifyFunction", {"run_id": run.run_id})["notified"]
    assert result == {"notifier": f"sns:{world.topic}", "ok": True, "error": None}
    assert invoke(calls, "FinishServerFunction", server) == {"status": "Done"}


def call_the_other_handlers(world: World, calls: ApiCalls, tmp_path: Path) -> None:
    """What no run calls: the command-event target with a waiting task, discovery, the catalog, scan and reboot."""
    sent = world.fleet.send_scan(world.instance_id)
    world.store.put_waiter(f"command#{sent}", "token-of-a-task-that-already-moved-on")
    event = command_event(sent, world.instance_id, "Success")
    assert invoke(calls, "CommandEventsFunction", event) == {"completed": False}  # InvalidToken: it moved on
    assert invoke(calls, "CommandEventsFunction", event) == {"completed": False}  # no token left: nothing
    assert invoke(calls, "DiscoverFunction", {})["instances"] == 2
    folder = tmp_path / "msrc"
    folder.mkdir()
    (folder / "2017-May-B.xml.gz").symlink_to(xml_path("2017-May-B"))
    world.runtime.settings = world.runtime.settings.model_copy(update={"catalog_dir": folder})
    assert invoke(calls, "CatalogUpdateFunction", {"source": "aws.events"})["documents_imported"] == 1
    [row] = invoke(calls, "ScanFunction", {"instance_ids": [world.instance_id]})["servers"]
    assert row["result"] == "scanned"
    assert invoke(calls, "RebootInstanceFunction", {"instance_id": world.instance_id}) == {
        "rebooted": world.instance_id
    }


def call_the_api_function(world: World, calls: ApiCalls, monkeypatch: pytest.MonkeyPatch, catalog: Path) -> None:
    """The API function through Mangum, configured as the template configures it, on the same tables.

    Each request is one an operator makes: a token, the fleet and its exposure, the original's
    fleet discovery, a scan, a run handed to Step Functions, a catalog job handed to its function,
    the original's catalog import.
    """
    states = boto3.client("stepfunctions", region_name=REGION)
    role = "arn:aws:iam::123456789012:role/autopatch-workflow"
    machine = states.create_state_machine(name="api-runs", definition=PASS_MACHINE, roleArn=role)["stateMachineArn"]
    environment = {
        "AUTOPATCH_STORE": "dynamodb",
        "AUTOPATCH_CATALOG_TABLE": "autopatch-catalog",
        "AUTOPATCH_STATE_TABLE": "autopatch-state",
        "AUTOPATCH_AWS_REGION": REGION,
        "AUTOPATCH_FLEET": "ssm",
        "AUTOPATCH_STATE_MACHINE_ARN": machine,
        "AUTOPATCH_CATALOG_UPDATE_FUNCTION": "CatalogUpdateFunction",  # run in-process by the moto harness
        "AUTOPATCH_CATALOG_DIR": str(catalog),
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    _, admin = create_token(world.store, "api-admin", "admin")
    api_handler.asgi_handler.cache_clear()

    def request(method: str, path: str, body: Any = None) -> dict[str, Any]:
        with calls.acting_as_in_every_thread("ApiFunction"):  # the app runs its sync routes in worker threads
            response = api_handler.handler(http_api_event(method, path, admin, body), FakeContext("ApiFunction"))
        answer: dict[str, Any] = {"status": response["statusCode"], "body": json.loads(response["body"] or "null")}
        return answer

    try:
        assert request("POST", "/api/v1/tokens", {"name": "dashboard", "role": "viewer"})["status"] == 201
        assert request("DELETE", "/api/v1/tokens/dashboard")["status"] == 200
        assert request("POST", "/fetch-os-info", {})["status"] == 200
        assert request("GET", "/api/v1/exposure")["status"] == 200
        scanned = request("POST", f"/api/v1/instances/{world.instance_id}/scan")
        assert scanned["status"] == 200, scanned
        started = request("POST", "/api/v1/runs", {"instance_ids": [world.instance_id]})
        assert started["status"] == 202, started
        cancelled = request("POST", f"/api/v1/runs/{started['body']['run_id']}/cancel")
        assert cancelled["status"] == 200, cancelled
        job = request("POST", "/api/v1/catalog/update")
        assert job["status"] == 202, job
        done = request("GET", f"/api/v1/jobs/{job['body']['job_id']}")["body"]
        assert done["status"] == "succeeded" and done["summary"]["documents_unchanged"] == 1
        assert request("POST", "/api/v1/catalog/update")["status"] == 202  # the last job has ended: checked
        assert request("POST", "/update-cve", {})["status"] == 200
    finally:
        api_handler.asgi_handler.cache_clear()


def run_a_window_pass(world: World, calls: ApiCalls) -> None:
    """The scheduler's pass starts the run of a window that opened, handed to the fleet-run workflow."""
    states = boto3.client("stepfunctions", region_name=REGION)
    role = "arn:aws:iam::123456789012:role/autopatch-workflow"
    machine = states.create_state_machine(name="window-runs", definition=PASS_MACHINE, roleArn=role)["stateMachineArn"]
    settings = world.runtime.settings
    world.runtime.settings = settings.model_copy(update={"state_machine_arn": machine})
    world.store.create_window(build_window("nightly", "0 2 * * *", "4h", "Name=on-prem", cutoff="1h"))
    opened = datetime(2026, 11, 28, 2, 5, tzinfo=UTC).timestamp()
    clock = world.runtime.clock
    world.runtime.clock = lambda: opened
    try:
        [action] = invoke(calls, "SchedulerFunction", {})["actions"]
        assert action["action"] == "started" and action["window"] == "nightly", action
        [execution] = states.list_executions(stateMachineArn=machine)["executions"]
        assert execution["name"] == action["run_id"]
        assert invoke(calls, "SchedulerFunction", {})["actions"] == []  # the occurrence is claimed: once
    finally:
        world.runtime.clock = clock
        world.runtime.settings = settings


def fail_a_server(world: World, calls: ApiCalls) -> None:
    """FailServer, the Catch target: the KB in flight and the server fail with the caught error."""
    instances = world.fleet.list_instances()
    run, lease = start_run(world.store, "patch", [i for i in instances if i.instance_id == world.instance_id], {})
    hand_over(world.store, lease)
    server = {"run_id": run.run_id, "instance_id": world.instance_id}
    invoke(calls, "PlanFunction", {"run_id": run.run_id})
    invoke(calls, "GateFunction", server)
    invoke(calls, "NextKbFunction", server)
    cause = json.dumps({"errorType": "ExecutionError", "errorMessage": "reading command x: AccessDeniedException"})
    error = {"Error": "ExecutionError", "Cause": cause}
    assert invoke(calls, "FailServerFunction", {**server, "error": error})["status"] == "Failed"
    [item] = [i for i in world.store.run_items(run.run_id) if i.kb == KB_OCTOBER_OOB]
    assert item.state is KbState.FAILED and item.reason == "ExecutionError: reading command x: AccessDeniedException"


def _dies(*args: Any, **kwargs: Any) -> None:
    raise ExecutionError("Runtime.ExitError: the Lambda was stopped")


def fail_an_install_and_lose_a_server(world: World, calls: ApiCalls, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed install (Settle fails the KB), and a server that never came back (WaitOnline gives up)."""
    instances = [i for i in world.fleet.list_instances() if i.instance_id == world.instance_id]
    # A failed install settled by RecordCommand, one settled by Settle after RecordCommand died, a reboot.
    for failing, dies in ((True, False), (True, True), (False, False)):
        world.agent.reset()
        world.agent.failing = failing
        run, lease = start_run(world.store, "patch", instances, {"max_errors": 1})  # the gate counts failed servers
        hand_over(world.store, lease)
        server = {"run_id": run.run_id, "instance_id": world.instance_id}
        invoke(calls, "PlanFunction", {"run_id": run.run_id})
        assert invoke(calls, "GateFunction", server) == {"start": True, "snapshot": False}
        step = invoke(calls, "NextKbFunction", server)
        assert step["phase"] == "sent"  # sent by NextKb
        if dies:  # RecordCommand's Lambda dies between the record and the settle: Settle finishes it
            with monkeypatch.context() as patched:
                patched.setattr(install_tasks, "settle", _dies)
                with pytest.raises(ExecutionError):
                    invoke(calls, "RecordCommandFunction", {**server, "step": step})
            step = invoke(calls, "NextKbFunction", server)
            assert step["phase"] == "verdict"
            step = invoke(calls, "SettleFunction", {**server, "step": step})
        else:
            step = invoke(calls, "RecordCommandFunction", {**server, "step": step})
        if failing:
            assert step["phase"] == "done"
        else:
            step = invoke(calls, "RebootFunction", {**server, "step": step})
            assert step["phase"] == "rebooting" and step["command_id"]
            step = invoke(calls, "WaitOnlineFunction", {**server, "step": {**step, "deadline": 0.0}})
            assert step["phase"] == "done"
        assert invoke(calls, "FinishServerFunction", server) == {"status": "Failed"}
        invoke(calls, "FinishRunFunction", {"run_id": run.run_id})


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ApiCalls]:
    with aws_mock(monkeypatch), recording_api_calls() as calls:
        world = build_world(monkeypatch, calls)
        with use_runtime(world.runtime):
            fail_each_once_only_task(world, calls, monkeypatch)
            world.agent.reset()
            drive_a_run_on_step_functions(world, calls, monkeypatch)
            world.agent.reset()
            skip_a_server_whose_snapshot_fails(world, calls, monkeypatch)
            world.agent.reset()
            check_a_ring_that_fails_its_gate(world, calls, monkeypatch)
            fail_an_install_and_lose_a_server(world, calls, monkeypatch)
            world.agent.reset()
            fail_a_server(world, calls)
            call_the_other_handlers(world, calls, tmp_path)
            call_the_api_function(world, calls, monkeypatch, tmp_path / "msrc")
            run_a_window_pass(world, calls)
        yield calls


def test_every_function_calls_only_the_actions_the_registry_grants_and_needs_each_of_them(recorded: ApiCalls) -> None:
    missing = {name: sorted(actions - function_named(name).actions) for name, actions in recorded.by_function.items()}
    assert {name: actions for name, actions in missing.items() if actions} == {}
    unused = {f.name: sorted(f.actions - recorded.by_function.get(f.name, set())) for f in FUNCTIONS}
    assert {name: actions for name, actions in unused.items() if actions} == {}


def test_every_function_in_the_registry_has_a_handler_and_a_unique_name() -> None:
    names = [function.name for function in FUNCTIONS]
    assert len(names) == len(set(names))
    for function in FUNCTIONS:
        assert callable(handler_of(function.name))
        assert all(":" in action and action == action.strip() for action in function.actions)
    assert all(action.startswith(("s3:", "logs:")) for group in OUTPUT_READ_ACTIONS.values() for action in group)
