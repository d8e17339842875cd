"""The SSM fleet adapter against moto (EC2, S3, CloudWatch Logs, SendCommand, GetCommandInvocation) and
botocore's Stubber for DescribeInstanceInformation, which moto does not implement (see AWS_TESTING.md),
and for request shapes (ListCommands filters and paging, ListTagsForResource).

moto runs nothing and returns empty output, so the send path is tested by reading back what was
sent (ListCommands, or the request itself), and the read path by writing real-shaped output into
moto's backend. Retries are only visible on the wire (Stubber answers before botocore's retry loop),
so "sent once" is tested against a local HTTP server that answers 500.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import boto3
import moto.ec2.utils
import pytest
from botocore.config import Config
from botocore.stub import Stubber
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ssm.models import ssm_backends

from autopatch.domain.fleet import CommandStatus, OfferedUpdate
from autopatch.errors import DeliveryUncertainError, ExecutionError, NotFoundError, TransientError, ValidationError
from autopatch.fleet.reports import parse_scan_output, scan_json
from autopatch.fleet.ssm import (
    KB_VARIABLE,
    REBOOT_COMMENT,
    SsmFleet,
    install_commands,
    install_comment,
    reboot_commands,
    scan_commands,
    script_text,
)
from autopatch.fleet.ssm_output import TRUNCATION_MARKER

REGION = "us-east-1"
AMI_NAME = "Windows_Server-2022-English-Core-Base-2024.01.10"
MANAGED_ID = "mi-0123456789abcdef0"
COMMAND_ID = "e8d3c0e4-71f7-4491-898f-c9b35bee5f3b"
HOSTILE_KB = "KB5034129'; Remove-Item C:\\ -Recurse #"
WINDOWS_FILTER = [{"Key": "PlatformTypes", "Values": ["Windows"]}]
WINDOWS_LISTING = {"Filters": WINDOWS_FILTER, "MaxResults": 50}
# Stubbed clients never retry: one queued error is what the adapter sees after its retries.
NO_RETRIES = Config(retries={"total_max_attempts": 1})


pytestmark = pytest.mark.usefixtures("fake_aws_credentials")


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # moto 5.2.5 lacks DescribeInstances' "platform" filter; its instances carry the AMI's platform.
    monkeypatch.setitem(moto.ec2.utils.filter_dict_attribute_mapping, "platform", "platform")
    with mock_aws():
        yield


@pytest.fixture
def ec2(aws: None) -> Any:
    return boto3.client("ec2", region_name=REGION)


@pytest.fixture
def ssm(aws: None) -> Any:
    return boto3.client("ssm", region_name=REGION)


@pytest.fixture
def windows_ami(ec2: Any) -> str:
    """An AMI named like Amazon's Server Core images, made from one of moto's Windows AMIs."""
    base = ec2.describe_images(Filters=[{"Name": "platform", "Values": ["windows"]}])["Images"][0]["ImageId"]
    builder = ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    image_id = str(ec2.create_image(InstanceId=builder, Name=AMI_NAME)["ImageId"])
    ec2.terminate_instances(InstanceIds=[builder])
    return image_id


def launch(ec2: Any, image_id: str, name: str, **tags: str) -> str:
    tag_list = [{"Key": "Name", "Value": name}] + [{"Key": key, "Value": value} for key, value in tags.items()]
    response = ec2.run_instances(
        ImageId=image_id,
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tag_list}],
    )
    return str(response["Instances"][0]["InstanceId"])


def information(instance_id: str, ping: str = "Online", **extra: str) -> dict[str, Any]:
    """One InstanceInformation record of the documented DescribeInstanceInformation shape."""
    record: dict[str, Any] = {
        "InstanceId": instance_id,
        "PingStatus": ping,
        "PlatformType": "Windows",
        "PlatformName": "Microsoft Windows Server 2022 Datacenter",
        "PlatformVersion": "10.0.20348",
        "ResourceType": "EC2Instance",
        "ComputerName": f"EC2AMAZ-{instance_id[-6:].upper()}",
        "AgentVersion": "3.3.40.0",
        "IsLatestVersion": True,
    }
    record.update(extra)
    return record


def sent_commands(ssm: Any, command_id: str, execution_timeout: str) -> list[str]:
    command = ssm.list_commands(CommandId=command_id)["Commands"][0]
    assert command["DocumentName"] == "AWS-RunPowerShellScript"
    assert command["Parameters"]["executionTimeout"] == [execution_timeout]
    assert command["TimeoutSeconds"] == 600  # the delivery timeout, separate from the execution one
    return list(command["Parameters"]["commands"])


def set_invocation(command_id: str, instance_id: str, **fields: Any) -> None:
    """moto answers every command with empty success: write what a real server would have printed."""
    backend = ssm_backends[DEFAULT_ACCOUNT_ID][REGION]
    command = backend.get_command_by_id(command_id)
    invocation = next(item for item in command.invocations if item["InstanceId"] == instance_id)
    invocation.update(fields)


def test_instances_are_listed_across_ssm_pages_joined_with_ec2_names_tags_and_ami_names(
    ec2: Any, ssm: Any, windows_ami: str
) -> None:
    web = launch(ec2, windows_ami, "web-01", OS="Windows Server 2022", Team="payments")
    database = launch(ec2, windows_ami, "db-01")
    stubber = Stubber(ssm)
    # The filter is what keeps Linux servers out, server-side: the stub only answers this request.
    stubber.add_response(
        "describe_instance_information",
        {"InstanceInformationList": [information(web, IPAddress="10.0.0.5")], "NextToken": "page-2"},
        expected_params=WINDOWS_LISTING,
    )
    stubber.add_response(
        "describe_instance_information",
        {
            "InstanceInformationList": [
                information(database, ping="ConnectionLost"),
                information(MANAGED_ID, ResourceType="ManagedInstance", Name="branch-office", ComputerName="BRANCH01"),
            ]
        },
        expected_params={**WINDOWS_LISTING, "NextToken": "page-2"},
    )
    stubber.add_response(
        "list_tags_for_resource",
        {"TagList": [{"Key": "Environment", "Value": "branch"}]},
        expected_params={"ResourceType": "ManagedInstance", "ResourceId": MANAGED_ID},
    )
    with stubber:
        instances = {
            instance.instance_id: instance for instance in SsmFleet(ssm_client=ssm, ec2_client=ec2).list_instances()
        }
    stubber.assert_no_pending_responses()

    assert set(instances) == {web, database, MANAGED_ID}
    assert instances[web].name == "web-01" and instances[web].online
    assert instances[web].tags == {"Name": "web-01", "OS": "Windows Server 2022", "Team": "payments"}
    assert instances[web].ami_id == windows_ami and instances[web].ami_name == AMI_NAME
    assert instances[web].ip_address == "10.0.0.5"
    assert instances[web].platform_name == "Microsoft Windows Server 2022 Datacenter"
    assert instances[web].platform_version == "10.0.20348"
    assert not instances[database].online and instances[database].ip_address  # EC2's private IP fills in
    managed = instances[MANAGED_ID]
    assert managed.name == "BRANCH01" and managed.online and managed.ami_id is None
    assert managed.tags == {"Environment": "branch"}


def test_instances_beyond_one_ec2_filter_batch_all_get_their_names(ec2: Any, ssm: Any, windows_ami: str) -> None:
    launched = ec2.run_instances(ImageId=windows_ami, MinCount=205, MaxCount=205)["Instances"]
    ids = [instance["InstanceId"] for instance in launched]
    for instance_id in ids:
        ec2.create_tags(Resources=[instance_id], Tags=[{"Key": "Name", "Value": f"name-{instance_id}"}])
    stubber = Stubber(ssm)
    stubber.add_response(
        "describe_instance_information",
        {"InstanceInformationList": [information(instance_id) for instance_id in ids[:50]], "NextToken": "2"},
        expected_params=WINDOWS_LISTING,
    )
    for start in range(50, 205, 50):
        stubber.add_response(
            "describe_instance_information",
            {"InstanceInformationList": [information(instance_id) for instance_id in ids[start : start + 50]]}
            | ({"NextToken": str(start // 50 + 2)} if start + 50 < 205 else {}),
            expected_params={**WINDOWS_LISTING, "NextToken": str(start // 50 + 1)},
        )
    with stubber:
        instances = SsmFleet(ssm_client=ssm, ec2_client=ec2).list_instances()
    assert len(instances) == 205
    assert all(
        instance.name == f"name-{instance.instance_id}" and instance.ami_name == AMI_NAME for instance in instances
    )


def test_a_linux_record_that_slips_through_the_filter_is_still_left_out(ec2: Any, ssm: Any) -> None:
    linux_ami = next(
        image["ImageId"] for image in ec2.describe_images()["Images"] if image.get("Platform") != "windows"
    )
    ec2.run_instances(ImageId=linux_ami, MinCount=1, MaxCount=1)  # EC2's listing leaves it out too
    stubber = Stubber(ssm)
    linux = information("i-0aaaaaaaaaaaaaaaa", PlatformType="Linux", PlatformName="Amazon Linux")
    stubber.add_response(
        "describe_instance_information",
        {"InstanceInformationList": [linux, information(MANAGED_ID)]},
        expected_params=WINDOWS_LISTING,
    )
    stubber.add_response("list_tags_for_resource", {"TagList": []})
    with stubber:
        instances = SsmFleet(ssm_client=ssm, ec2_client=ec2).list_instances()
    assert [instance.instance_id for instance in instances] == [MANAGED_ID]


def test_a_scan_sends_the_packaged_scan_script_unchanged(ec2: Any, ssm: Any, windows_ami: str) -> None:
    server = launch(ec2, windows_ami, "web-01")
    command_id = SsmFleet(ssm_client=ssm, ec2_client=ec2).send_scan(server)

    commands = sent_commands(ssm, command_id, execution_timeout="3600")
    assert "\n".join(commands) == script_text("scan.ps1").rstrip("\n")
    assert commands == scan_commands()
    assert server in ssm.list_commands(CommandId=command_id)["Commands"][0]["InstanceIds"]


def test_an_install_sends_the_kb_only_base64_encoded_around_the_unchanged_install_script(
    ec2: Any, ssm: Any, windows_ami: str
) -> None:
    server = launch(ec2, windows_ami, "web-01")
    command_id = SsmFleet(ssm_client=ssm, ec2_client=ec2).send_install(server, "kb5034129")

    commands = sent_commands(ssm, command_id, execution_timeout="7200")  # a 2016 cumulative update runs past 1 h
    assert not any("5034129" in line for line in commands)  # neither "KB5034129" nor its digits
    decoder = (
        r"\[System\.Text\.Encoding\]::UTF8\.GetString\(\[System\.Convert\]::FromBase64String\('([A-Za-z0-9+/=]+)'\)\)"
    )
    binding = re.fullmatch(re.escape(KB_VARIABLE) + " = " + decoder, commands[0])
    assert binding is not None
    assert base64.b64decode(binding.group(1)).decode() == "KB5034129"
    assert commands[1] == "& {" and commands[-1] == "} -KbId " + KB_VARIABLE
    assert "\n".join(commands[2:-1]) == script_text("install.ps1").rstrip("\n")


def test_a_hostile_kb_is_rejected_before_anything_is_sent(ec2: Any, ssm: Any, windows_ami: str) -> None:
    server = launch(ec2, windows_ami, "web-01")
    with pytest.raises(ValidationError, match="6 or 7 digits"):
        SsmFleet(ssm_client=ssm, ec2_client=ec2).send_install(server, HOSTILE_KB)
    with pytest.raises(ValidationError):
        install_commands(HOSTILE_KB)
    assert ssm.list_commands()["Commands"] == []


def test_a_malformed_instance_id_is_rejected_before_anything_is_sent(ssm: Any) -> None:
    fleet = SsmFleet(ssm_client=ssm, ec2_client=object())
    for bad in ("i-123", "I-0123456789ABCDEF0", "i-0123456789abcdef0; whoami"):
        with pytest.raises(ValidationError, match="instance_id"):
            fleet.send_scan(bad)
    assert ssm.list_commands()["Commands"] == []


def test_a_finished_scan_comes_back_with_status_exit_code_and_parseable_output(
    ec2: Any, ssm: Any, windows_ami: str
) -> None:
    server = launch(ec2, windows_ami, "web-01")
    fleet = SsmFleet(ssm_client=ssm, ec2_client=ec2)
    command_id = fleet.send_scan(server)
    printed = scan_json(
        computer_name="EC2AMAZ-WEB01",
        os_caption="Microsoft Windows Server 2022 Datacenter",
        build="10.0.20348.2227",
        installation_type="Server Core",
        installed_kbs=["KB5034129"],
        offered_updates=[OfferedUpdate("KB5034770", "2024-02 Cumulative Update for Microsoft server operating system")],
    )
    set_invocation(command_id, server, StandardOutputContent=printed + "\r\n", StandardErrorContent="")

    invocation = fleet.get_command(server, command_id)
    assert invocation.status is CommandStatus.SUCCESS and invocation.status.is_terminal
    assert invocation.exit_code == 0
    report = parse_scan_output(server, invocation.output, datetime(2024, 2, 14, tzinfo=UTC))
    assert report.build == "10.0.20348.2227" and report.offered_kbs == {"KB5034770"}


@pytest.mark.parametrize(
    ("status", "details", "response_code", "expected", "exit_code"),
    [
        ("InProgress", "InProgress", -1, CommandStatus.IN_PROGRESS, None),
        ("TimedOut", "ExecutionTimedOut", -1, CommandStatus.EXECUTION_TIMED_OUT, None),
        ("TimedOut", "DeliveryTimedOut", -1, CommandStatus.DELIVERY_TIMED_OUT, None),
        ("TimedOut", "Delivery Timed Out", -1, CommandStatus.DELIVERY_TIMED_OUT, None),  # the docs' spelling
        ("TimedOut", "TimedOut", -1, CommandStatus.TIMED_OUT, None),
        ("Failed", "Failed", 1, CommandStatus.FAILED, 1),
        ("Failed", "Undeliverable", -1, CommandStatus.UNDELIVERABLE, None),
        ("Failed", "Terminated", -1, CommandStatus.TERMINATED, None),
    ],
)
def test_invocation_statuses_map_to_command_statuses_and_minus_one_means_no_exit_code(
    ec2: Any,
    ssm: Any,
    windows_ami: str,
    status: str,
    details: str,
    response_code: int,
    expected: CommandStatus,
    exit_code: int | None,
) -> None:
    server = launch(ec2, windows_ami, "web-01")
    fleet = SsmFleet(ssm_client=ssm, ec2_client=ec2)
    command_id = fleet.send_install(server, "KB5034770")
    set_invocation(command_id, server, Status=status, StatusDetails=details, ResponseCode=response_code)

    invocation = fleet.get_command(server, command_id)
    assert invocation.status is expected and invocation.exit_code == exit_code


def test_an_invocation_not_visible_yet_reads_as_pending(ec2: Any, ssm: Any, windows_ami: str) -> None:
    server = launch(ec2, windows_ami, "web-01")
    fleet = SsmFleet(ssm_client=ssm, ec2_client=ec2)
    command_id = fleet.send_scan(server)
    elsewhere = "i-0fedcba9876543210"  # moto has no invocation for it: InvocationDoesNotExist
    invocation = fleet.get_command(elsewhere, command_id)
    assert invocation.status is CommandStatus.PENDING and invocation.exit_code is None


def test_a_malformed_command_id_is_rejected_naming_the_field(ssm: Any) -> None:
    with pytest.raises(ValidationError, match="command_id"):
        SsmFleet(ssm_client=ssm, ec2_client=object()).get_command("i-0123456789abcdef0", "abc'; drop")


def test_a_reboot_sends_the_packaged_reboot_script_through_ssm_and_never_calls_ec2(
    ec2: Any, ssm: Any, windows_ami: str
) -> None:
    server = launch(ec2, windows_ami, "web-01")
    ec2_reboots: list[dict[str, Any]] = []
    ec2.meta.events.register(
        "provide-client-params.ec2.RebootInstances", lambda params, **_: ec2_reboots.append(params)
    )

    command_id = SsmFleet(ssm_client=ssm, ec2_client=ec2).reboot(server)

    assert ec2_reboots == []  # a hard reset while Windows finishes updates is what this replaces
    commands = sent_commands(ssm, command_id, execution_timeout="7200")
    assert commands == reboot_commands() and "\n".join(commands) == script_text("reboot.ps1").rstrip("\n")
    command = ssm.list_commands(CommandId=command_id)["Commands"][0]
    assert command["Comment"] == REBOOT_COMMENT and server in command["InstanceIds"]


def test_a_managed_instance_is_rebooted_through_ssm_like_any_other() -> None:
    ssm = boto3.client("ssm", region_name=REGION)
    stubber = Stubber(ssm)
    command_id = "e8d3c0e4-71f7-4491-898f-c9b35bee5f3b"
    stubber.add_response(
        "send_command",
        {"Command": {"CommandId": command_id}},
        expected_params={
            "InstanceIds": [MANAGED_ID],
            "DocumentName": "AWS-RunPowerShellScript",
            "Comment": REBOOT_COMMENT,
            "TimeoutSeconds": 600,
            "Parameters": {"commands": reboot_commands(), "executionTimeout": ["7200"]},
        },
    )
    with stubber:
        assert SsmFleet(ssm_client=ssm, ec2_client=object()).reboot(MANAGED_ID) == command_id
    stubber.assert_no_pending_responses()


def test_the_reboot_script_restarts_through_exit_3010_and_reports_the_boot_time_on_its_second_run() -> None:
    text = script_text("reboot.ps1")
    assert "exit 3010" in text  # the agent's "reboot and resume"
    assert "$env:ProgramData" in text and "Remove-Item -LiteralPath $marker" in text
    assert "LastBootUpTime.ToUniversalTime()" in text and "rebooted       = $true" in text
    assert "Restart-Computer" not in text  # the agent restarts Windows, and then runs the script again


def test_rebooting_an_instance_whose_agent_is_not_connected_is_transient() -> None:
    ssm = boto3.client("ssm", region_name=REGION, config=NO_RETRIES)
    stubber = Stubber(ssm)
    stubber.add_client_error("send_command", service_error_code="InvalidInstanceId", http_status_code=400)
    with stubber, pytest.raises(TransientError, match="agent is not connected") as error:
        SsmFleet(ssm_client=ssm, ec2_client=object()).reboot(MANAGED_ID)
    assert not isinstance(error.value, DeliveryUncertainError)  # a 400: nothing was created


@pytest.mark.parametrize(
    ("records", "online"),
    [([information(MANAGED_ID)], True), ([information(MANAGED_ID, ping="ConnectionLost")], False), ([], False)],
)
def test_online_means_ssm_pings_the_instance(records: list[dict[str, Any]], online: bool) -> None:
    ssm = boto3.client("ssm", region_name=REGION)
    stubber = Stubber(ssm)
    stubber.add_response(
        "describe_instance_information",
        {"InstanceInformationList": records},
        expected_params={"Filters": [{"Key": "InstanceIds", "Values": [MANAGED_ID]}], "MaxResults": 50},
    )
    with stubber:
        assert SsmFleet(ssm_client=ssm, ec2_client=object()).is_online(MANAGED_ID) is online


@pytest.mark.parametrize(
    ("code", "status", "message"),
    [
        ("ThrottlingException", 400, "kept throttling after 10 adaptive retries"),
        ("InternalServerError", 500, "AWS failed on its side"),
    ],
)
def test_throttling_that_outlives_the_retries_and_aws_failures_are_transient(
    code: str, status: int, message: str
) -> None:
    ssm = boto3.client("ssm", region_name=REGION, config=NO_RETRIES)
    stubber = Stubber(ssm)
    stubber.add_client_error("get_command_invocation", service_error_code=code, http_status_code=status)
    with stubber, pytest.raises(TransientError, match=message):
        SsmFleet(ssm_client=ssm, ec2_client=object()).get_command("i-0123456789abcdef0", COMMAND_ID)


@pytest.mark.parametrize(
    ("code", "status", "expected", "message"),
    [
        ("ThrottlingException", 400, TransientError, "throttled it .*nothing was created"),
        ("InvalidInstanceId", 400, TransientError, "agent is not connected"),
        ("AccessDeniedException", 400, ExecutionError, "AccessDeniedException"),
        ("InternalServerError", 500, DeliveryUncertainError, "may exist: look it up"),
        ("ServiceUnavailable", 503, DeliveryUncertainError, "may exist: look it up"),
    ],
)
def test_a_failed_send_says_whether_the_command_may_exist(
    code: str, status: int, expected: type[Exception], message: str
) -> None:
    ssm = boto3.client("ssm", region_name=REGION, config=NO_RETRIES)
    stubber = Stubber(ssm)
    stubber.add_client_error("send_command", service_error_code=code, http_status_code=status)
    with stubber, pytest.raises(expected, match=message) as error:
        SsmFleet(ssm_client=ssm, ec2_client=object()).send_install("i-0123456789abcdef0", "KB5034770", token="t-1")
    assert isinstance(error.value, DeliveryUncertainError) is (status >= 500)


def test_an_unreachable_endpoint_is_transient() -> None:
    config = Config(retries={"total_max_attempts": 1}, connect_timeout=1)
    ssm = boto3.client("ssm", region_name=REGION, endpoint_url="http://127.0.0.1:9", config=config)
    with pytest.raises(TransientError, match="AWS could not be reached") as error:
        SsmFleet(ssm_client=ssm, ec2_client=object()).send_scan("i-0123456789abcdef0")
    assert not isinstance(error.value, DeliveryUncertainError)  # refused: nothing left this machine


def test_missing_credentials_are_a_configuration_error_not_a_transient_one(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(variable)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # A fresh session: boto3's default one caches the credentials other tests resolved.
    ssm = boto3.session.Session().client("ssm", region_name=REGION, config=NO_RETRIES)
    with pytest.raises(ExecutionError, match="AWS client configuration") as error:
        SsmFleet(ssm_client=ssm, ec2_client=object()).send_scan("i-0123456789abcdef0")
    assert not isinstance(error.value, TransientError)


def test_an_install_sent_with_a_token_can_be_found_again_after_a_crash(ec2: Any, ssm: Any, windows_ami: str) -> None:
    server = launch(ec2, windows_ami, "web-01")
    fleet = SsmFleet(ssm_client=ssm, ec2_client=ec2)
    token = f"p-20240214-093000-abc123/{server}/KB5034770/1"
    fleet.send_scan(server)
    fleet.send_install(server, "KB5034770", token=f"p-20240214-093000-abc123/{server}/KB5034770/0")
    command_id = fleet.send_install(server, "KB5034770", token=token)

    assert ssm.list_commands(CommandId=command_id)["Commands"][0]["Comment"] == f"AutoPatch KB5034770 {token}"
    assert fleet.find_command(server, token) == command_id
    assert fleet.find_command(server, token.replace("/1", "/2")) is None


def test_a_token_too_long_for_a_comment_is_matched_by_its_digest(ec2: Any, ssm: Any, windows_ami: str) -> None:
    server = launch(ec2, windows_ami, "web-01")
    fleet = SsmFleet(ssm_client=ssm, ec2_client=ec2)
    token = "run with spaces/" + "x" * 120
    command_id = fleet.send_install(server, "KB5034770", token=token)
    comment = ssm.list_commands(CommandId=command_id)["Commands"][0]["Comment"]
    assert comment == install_comment("KB5034770", token) and len(comment) <= 100 and "sha256:" in comment
    assert fleet.find_command(server, token) == command_id


def test_ssm_cannot_say_when_a_command_will_finish(ssm: Any) -> None:
    assert SsmFleet(ssm_client=ssm, ec2_client=object()).expected_completion("i-0123456789abcdef0", "x") is None


def test_closing_leaves_injected_clients_to_their_owner() -> None:
    class Injected:
        closed = False

        def close(self) -> None:
            self.closed = True

    injected = Injected()
    fleet = SsmFleet(ssm_client=injected, region=REGION)
    built = fleet.ec2
    fleet.close()
    assert not injected.closed and fleet.ssm is injected
    assert fleet.ec2 is not built  # a closed client of ours is rebuilt on next use


def test_an_instance_whose_agent_is_away_is_transient_when_sending_and_reading() -> None:
    # Discovery knows the server (unknown ids never get here): InvalidInstanceId then means its agent
    # is not connected right now, e.g. Windows is restarting after an install.
    ssm = boto3.client("ssm", region_name=REGION, config=NO_RETRIES)
    stubber = Stubber(ssm)
    stubber.add_client_error("send_command", service_error_code="InvalidInstanceId", http_status_code=400)
    stubber.add_client_error("get_command_invocation", service_error_code="InvalidInstanceId", http_status_code=400)
    fleet = SsmFleet(ssm_client=ssm, ec2_client=object())
    with stubber:
        with pytest.raises(TransientError, match=r"i-0123456789abcdef0.*agent is not connected"):
            fleet.send_install("i-0123456789abcdef0", "KB5034770")
        with pytest.raises(TransientError, match="agent is not connected") as error:
            fleet.get_command("i-0123456789abcdef0", COMMAND_ID)
    assert not isinstance(error.value, NotFoundError)


def test_other_aws_errors_become_execution_errors_naming_the_action() -> None:
    ssm = boto3.client("ssm", region_name=REGION, config=NO_RETRIES)
    stubber = Stubber(ssm)
    stubber.add_client_error("describe_instance_information", service_error_code="AccessDeniedException")
    with stubber, pytest.raises(ExecutionError, match="listing SSM managed instances failed: AccessDeniedException"):
        SsmFleet(ssm_client=ssm, ec2_client=object()).list_instances()


def test_clients_are_built_on_first_use_from_one_session_and_sends_are_never_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sessions: list[Any] = []
    real_session = boto3.session.Session

    def counting_session(*args: Any, **kwargs: Any) -> Any:
        sessions.append(real_session(*args, **kwargs))
        return sessions[-1]

    monkeypatch.setattr(boto3.session, "Session", counting_session)
    monkeypatch.setattr(boto3, "client", lambda *_, **__: pytest.fail("the module-level default session is shared"))
    fleet = SsmFleet(region="eu-west-1")
    assert sessions == []  # nothing built before first use
    clients = [fleet.ssm, fleet.ssm_send, fleet.ec2, fleet.ssm]
    assert len(sessions) == 1 and all(client.meta.region_name == "eu-west-1" for client in clients)
    assert clients[0] is clients[3] and clients[0] is not clients[1]
    # botocore counts ``max_attempts`` as retries: 10 retries are 11 attempts in all.
    assert fleet.ssm.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 11}
    assert fleet.ssm_send.meta.config.retries == {"mode": "standard", "total_max_attempts": 1}


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("install_timeout_seconds", 0),
        ("install_timeout_seconds", 172_801),
        ("scan_timeout_seconds", 0),
        ("delivery_timeout_seconds", 5),
    ],
)
def test_a_timeout_outside_what_ssm_accepts_is_rejected(argument: str, value: int) -> None:
    with pytest.raises(ValidationError, match=argument):
        SsmFleet(**{argument: value})


def test_the_three_timeouts_are_sent_separately(ec2: Any, ssm: Any, windows_ami: str) -> None:
    server = launch(ec2, windows_ami, "web-01")
    fleet = SsmFleet(
        ssm_client=ssm,
        ec2_client=ec2,
        install_timeout_seconds=9000,
        scan_timeout_seconds=1800,
        delivery_timeout_seconds=120,
    )
    scan = ssm.list_commands(CommandId=fleet.send_scan(server))["Commands"][0]
    install = ssm.list_commands(CommandId=fleet.send_install(server, "KB5034770"))["Commands"][0]
    assert scan["Parameters"]["executionTimeout"] == ["1800"] and install["Parameters"]["executionTimeout"] == ["9000"]
    assert scan["TimeoutSeconds"] == install["TimeoutSeconds"] == 120


def test_the_packaged_scripts_are_valid_powershell_and_need_no_extra_module() -> None:
    tree_sitter = pytest.importorskip("tree_sitter")
    powershell = pytest.importorskip("tree_sitter_powershell")
    parser = tree_sitter.Parser(tree_sitter.Language(powershell.language()))
    for name, text in [
        ("scan.ps1", script_text("scan.ps1")),
        ("install.ps1", script_text("install.ps1")),
        ("install commands", "\n".join(install_commands("KB5034129"))),
        ("reboot.ps1", script_text("reboot.ps1")),
    ]:
        assert not parser.parse(text.encode()).root_node.has_error, name
        for module_command in ("Import-Module", "Get-WindowsUpdate", "Install-WindowsUpdate"):
            assert module_command not in text, (name, module_command)
    for field in (
        "schema",
        "computer_name",
        "os_caption",
        "os_version",
        "current_build",
        "ubr",
        "installation_type",
        "installed_kbs",
        "offered_updates",
        "pending_reboot",
    ):
        assert re.search(rf"^\s+{field}\s+=", script_text("scan.ps1"), re.MULTILINE), field
    assert "[ValidatePattern('^KB\\d{6,7}$')][string]$KbId" in script_text("install.ps1")


class _FailingSsm(BaseHTTPRequestHandler):
    """An SSM endpoint that answers every request with a 500 (after ``delay`` seconds), counting them."""

    requests: list[str]
    delay = 0.0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).requests.append(self.headers.get("X-Amz-Target", ""))
        time.sleep(self.delay)
        body = json.dumps({"__type": "InternalServerError", "message": "We encountered an internal error"}).encode()
        try:
            self.send_response(500)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up first (read timeout)
            pass

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def failing_ssm(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_FailingSsm]]:
    handler = type("Handler", (_FailingSsm,), {"requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", f"http://127.0.0.1:{server.server_address[1]}")
    # botocore's backoff between retries, so that the old retrying send fails fast instead of waiting.
    monkeypatch.setattr("botocore.endpoint.time", SimpleNamespace(sleep=lambda _: None))
    yield handler
    server.shutdown()
    server.server_close()


def test_a_send_answered_with_a_500_is_made_exactly_once_and_may_have_been_delivered(
    failing_ssm: type[_FailingSsm],
) -> None:
    fleet = SsmFleet(region=REGION)  # the adapter's own clients, as the CLI builds them
    with pytest.raises(DeliveryUncertainError, match="may exist: look it up"):
        fleet.send_install("i-0123456789abcdef0", "KB5034770", token="p-1/i-0123456789abcdef0/KB5034770/0")
    fleet.close()
    assert failing_ssm.requests == ["AmazonSSM.SendCommand"]  # botocore would have sent it 11 times


def test_reads_are_still_retried_by_botocore(failing_ssm: type[_FailingSsm]) -> None:
    fleet = SsmFleet(region=REGION)
    with pytest.raises(TransientError, match="AWS failed on its side") as error:
        fleet.get_command("i-0123456789abcdef0", COMMAND_ID)
    fleet.close()
    assert not isinstance(error.value, DeliveryUncertainError)
    assert len(failing_ssm.requests) == 11  # a read is harmless to repeat


def test_a_send_without_an_answer_in_time_may_have_been_delivered(failing_ssm: type[_FailingSsm]) -> None:
    failing_ssm.delay = 2.0
    send_client = boto3.session.Session().client(
        "ssm", region_name=REGION, config=Config(read_timeout=0.5, retries={"total_max_attempts": 1})
    )
    fleet = SsmFleet(send_client=send_client, region=REGION)
    with pytest.raises(DeliveryUncertainError, match="no answer after the request left"):
        fleet.send_scan("i-0123456789abcdef0")
    assert failing_ssm.requests == ["AmazonSSM.SendCommand"]


def _listed_command(command_id: str, comment: str) -> dict[str, Any]:
    return {"CommandId": command_id, "Comment": comment, "DocumentName": "AWS-RunPowerShellScript"}


def test_find_command_asks_only_for_commands_invoked_after_the_attempt_and_follows_pages() -> None:
    ssm = boto3.client("ssm", region_name=REGION)
    server, token = "i-0123456789abcdef0", "p-20240214-093000-abc123/i-0123456789abcdef0/KB5034770/1"
    found = "0b5a4c3d-1e2f-4a5b-8c7d-9e0f1a2b3c4d"
    since = datetime(2024, 2, 14, 10, 30, tzinfo=timezone(timedelta(hours=1)))  # 09:30 UTC
    filters = [
        {"key": "DocumentName", "value": "AWS-RunPowerShellScript"},
        {"key": "InvokedAfter", "value": "2024-02-14T09:25:00Z"},  # minus the clock-skew margin
    ]
    stubber = Stubber(ssm)
    stubber.add_response(
        "list_commands",
        {"Commands": [_listed_command(COMMAND_ID, "AutoPatch scan")], "NextToken": "page-2"},
        expected_params={"InstanceId": server, "Filters": filters, "MaxResults": 50},
    )
    stubber.add_response(
        "list_commands",
        {"Commands": [_listed_command(found, install_comment("KB5034770", token))]},
        expected_params={"InstanceId": server, "Filters": filters, "MaxResults": 50, "NextToken": "page-2"},
    )
    with stubber:
        assert SsmFleet(ssm_client=ssm, ec2_client=object()).find_command(server, token, since=since) == found
    stubber.assert_no_pending_responses()


def test_a_stopped_windows_instance_ssm_no_longer_lists_is_reported_offline_from_ec2(
    ec2: Any, ssm: Any, windows_ami: str
) -> None:
    running = launch(ec2, windows_ami, "web-01")
    stopped = launch(ec2, windows_ami, "db-01", Environment="test")
    ec2.stop_instances(InstanceIds=[stopped])
    terminated = launch(ec2, windows_ami, "old-01")
    ec2.terminate_instances(InstanceIds=[terminated])
    linux_ami = next(
        image["ImageId"] for image in ec2.describe_images()["Images"] if image.get("Platform") != "windows"
    )
    linux = ec2.run_instances(ImageId=linux_ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    stubber = Stubber(ssm)
    stubber.add_response(
        "describe_instance_information",
        {"InstanceInformationList": [information(running)]},
        expected_params=WINDOWS_LISTING,
    )
    with stubber:
        instances = {
            instance.instance_id: instance for instance in SsmFleet(ssm_client=ssm, ec2_client=ec2).list_instances()
        }

    assert set(instances) == {running, stopped} and linux not in instances and terminated not in instances
    offline = instances[stopped]
    assert not offline.online and offline.name == "db-01" and offline.tags == {"Name": "db-01", "Environment": "test"}
    assert offline.ami_id == windows_ami and offline.ami_name == AMI_NAME
    assert offline.platform_name == "Microsoft Windows Server 2022" and offline.platform_version == ""
    assert instances[running].online


def test_a_managed_instance_takes_its_name_and_tags_from_ssm() -> None:
    ssm = boto3.client("ssm", region_name=REGION)
    ec2 = boto3.client("ec2", region_name=REGION)
    ssm_stubber, ec2_stubber = Stubber(ssm), Stubber(ec2)
    ssm_stubber.add_response(
        "describe_instance_information",
        {"InstanceInformationList": [information(MANAGED_ID, ResourceType="ManagedInstance", ComputerName="BRANCH01")]},
        expected_params=WINDOWS_LISTING,
    )
    ssm_stubber.add_response(
        "list_tags_for_resource",
        {"TagList": [{"Key": "Name", "Value": "branch-file-server"}, {"Key": "Environment", "Value": "prod"}]},
        expected_params={"ResourceType": "ManagedInstance", "ResourceId": MANAGED_ID},
    )
    ec2_stubber.add_response("describe_instances", {"Reservations": []})
    with ssm_stubber, ec2_stubber:
        [managed] = SsmFleet(ssm_client=ssm, ec2_client=ec2).list_instances()
    assert managed.name == "branch-file-server" and managed.tags == {
        "Name": "branch-file-server",
        "Environment": "prod",
    }
    ssm_stubber.assert_no_pending_responses()


def _long_scan_output() -> str:
    offered = [OfferedUpdate(f"KB{5000000 + number}", "Update " + "x" * 200) for number in range(200)]
    return scan_json(
        computer_name="EC2AMAZ-WEB01",
        os_caption="Microsoft Windows Server 2016 Datacenter",
        build="10.0.14393.6709",
        installation_type="Server",
        installed_kbs=["KB5034767"],
        offered_updates=offered,
    )


def _cut(output: str) -> str:
    return output[:23_976] + "\n" + TRUNCATION_MARKER


def test_an_output_cut_by_ssm_is_flagged_rather_than_passed_on_as_whole(ec2: Any, ssm: Any, windows_ami: str) -> None:
    server = launch(ec2, windows_ami, "web-01")
    fleet = SsmFleet(ssm_client=ssm, ec2_client=ec2)
    command_id = fleet.send_scan(server)
    assert len(_long_scan_output()) > 24_000
    set_invocation(command_id, server, StandardOutputContent=_cut(_long_scan_output()), StandardErrorContent="warn")

    invocation = fleet.get_command(server, command_id)
    assert invocation.error.startswith("SSM truncated the output at 24,000 characters")
    assert "output_s3_bucket" in invocation.error and invocation.error.endswith("\nwarn")


def test_an_output_cut_by_ssm_is_read_in_full_from_the_s3_bucket_it_was_sent_to(
    ec2: Any, ssm: Any, windows_ami: str
) -> None:
    server = launch(ec2, windows_ami, "web-01")
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="autopatch-output")
    fleet = SsmFleet(ssm_client=ssm, ec2_client=ec2, output_s3_bucket="autopatch-output", s3_client=s3)
    command_id = fleet.send_scan(server)
    command = ssm.list_commands(CommandId=command_id)["Commands"][0]
    assert (command["OutputS3BucketName"], command["OutputS3KeyPrefix"]) == ("autopatch-output", "autopatch")
    key = f"autopatch/{command_id}/{server}/awsrunPowerShellScript/0.awsrunPowerShellScript/stdout"
    s3.put_object(Bucket="autopatch-output", Key=key, Body=_long_scan_output().encode() + b"\r\n")
    set_invocation(command_id, server, StandardOutputContent=_cut(_long_scan_output()))

    invocation = fleet.get_command(server, command_id)
    assert invocation.error == ""
    report = parse_scan_output(server, invocation.output, datetime(2024, 2, 14, tzinfo=UTC))
    assert len(report.offered) == 200


def test_an_output_cut_by_ssm_is_read_in_full_from_cloudwatch_logs(ec2: Any, ssm: Any, windows_ami: str) -> None:
    server = launch(ec2, windows_ami, "web-01")
    logs = boto3.client("logs", region_name=REGION)
    fleet = SsmFleet(ssm_client=ssm, ec2_client=ec2, cloudwatch_output=True, logs_client=logs)
    requests: list[dict[str, Any]] = []
    ssm.meta.events.register("provide-client-params.ssm.SendCommand", lambda params, **_: requests.append(params))
    command_id = fleet.send_scan(server)
    assert requests[0]["CloudWatchOutputConfig"] == {
        "CloudWatchLogGroupName": "/aws/ssm/AWS-RunPowerShellScript",
        "CloudWatchOutputEnabled": True,
    }
    group, stream = "/aws/ssm/AWS-RunPowerShellScript", f"{command_id}/{server}/aws-runPowerShellScript/stdout"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    logs.create_log_stream(logGroupName=group, logStreamName=stream.replace("stdout", "stderr"))
    now = int(time.time() * 1000)
    logs.put_log_events(
        logGroupName=group,
        logStreamName=stream,
        logEvents=[{"timestamp": now, "message": "preamble"}, {"timestamp": now + 1, "message": _long_scan_output()}],
    )
    set_invocation(command_id, server, StandardOutputContent=_cut(_long_scan_output()))

    invocation = fleet.get_command(server, command_id)
    assert invocation.error == "" and invocation.output.startswith("preamble\n")
    assert len(parse_scan_output(server, invocation.output, datetime(2024, 2, 14, tzinfo=UTC)).offered) == 200


def test_an_output_bucket_name_is_validated_before_anything_is_sent() -> None:
    with pytest.raises(ValidationError, match="output_s3_bucket"):
        SsmFleet(output_s3_bucket="Bad Bucket; rm")
