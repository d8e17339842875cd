"""The SSM fleet adapter against moto (EC2, SendCommand, GetCommandInvocation, reboots) and botocore's
Stubber for DescribeInstanceInformation, which moto does not implement (see AWS_TESTING.md).

moto runs nothing and returns empty output, so the send path is tested by reading back what was
sent (ListCommands), and the read path by writing real-shaped output into moto's backend.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ssm.models import ssm_backends

from autopatch.domain.fleet import CommandStatus, OfferedUpdate
from autopatch.errors import ExecutionError, NotFoundError, TransientError, ValidationError
from autopatch.fleet.reports import parse_scan_output, scan_json
from autopatch.fleet.ssm import KB_VARIABLE, SsmFleet, install_commands, install_comment, scan_commands, script_text

REGION = "us-east-1"
AMI_NAME = "Windows_Server-2022-English-Core-Base-2024.01.10"
MANAGED_ID = "mi-0123456789abcdef0"
HOSTILE_KB = "KB5034129'; Remove-Item C:\\ -Recurse #"
WINDOWS_FILTER = [{"Key": "PlatformTypes", "Values": ["Windows"]}]
# Stubbed clients never retry: one queued error is what the adapter sees after its retries.
NO_RETRIES = Config(retries={"total_max_attempts": 1})


@pytest.fixture(autouse=True)
def _fake_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(variable, value)


@pytest.fixture
def aws() -> Iterator[None]:
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


def sent_commands(ssm: Any, command_id: str) -> list[str]:
    command = ssm.list_commands(CommandId=command_id)["Commands"][0]
    assert command["DocumentName"] == "AWS-RunPowerShellScript"
    assert command["Parameters"]["executionTimeout"] == ["900"]
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
        expected_params={"Filters": WINDOWS_FILTER},
    )
    stubber.add_response(
        "describe_instance_information",
        {
            "InstanceInformationList": [
                information(database, ping="ConnectionLost"),
                information(MANAGED_ID, ResourceType="ManagedInstance", Name="branch-office", ComputerName="BRANCH01"),
            ]
        },
        expected_params={"Filters": WINDOWS_FILTER, "NextToken": "page-2"},
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
    assert managed.name == "BRANCH01" and managed.online and managed.ami_id is None and managed.tags == {}


def test_instances_beyond_one_ec2_filter_batch_all_get_their_names(ec2: Any, ssm: Any, windows_ami: str) -> None:
    launched = ec2.run_instances(ImageId=windows_ami, MinCount=205, MaxCount=205)["Instances"]
    ids = [instance["InstanceId"] for instance in launched]
    for instance_id in ids:
        ec2.create_tags(Resources=[instance_id], Tags=[{"Key": "Name", "Value": f"name-{instance_id}"}])
    stubber = Stubber(ssm)
    stubber.add_response(
        "describe_instance_information",
        {"InstanceInformationList": [information(instance_id) for instance_id in ids]},
        expected_params={"Filters": WINDOWS_FILTER},
    )
    with stubber:
        instances = SsmFleet(ssm_client=ssm, ec2_client=ec2).list_instances()
    assert len(instances) == 205
    assert all(
        instance.name == f"name-{instance.instance_id}" and instance.ami_name == AMI_NAME for instance in instances
    )


def test_a_linux_record_that_slips_through_the_filter_is_still_left_out() -> None:
    ssm = boto3.client("ssm", region_name=REGION)
    stubber = Stubber(ssm)
    linux = information("i-0aaaaaaaaaaaaaaaa", PlatformType="Linux", PlatformName="Amazon Linux")
    stubber.add_response(
        "describe_instance_information",
        {"InstanceInformationList": [linux, information(MANAGED_ID)]},
        expected_params={"Filters": WINDOWS_FILTER},
    )
    with stubber:
        instances = SsmFleet(ssm_client=ssm, ec2_client=boto3.client("ec2", region_name=REGION)).list_instances()
    assert [instance.instance_id for instance in instances] == [MANAGED_ID]


def test_a_scan_sends_the_packaged_scan_script_unchanged(ec2: Any, ssm: Any, windows_ami: str) -> None:
    server = launch(ec2, windows_ami, "web-01")
    command_id = SsmFleet(ssm_client=ssm, ec2_client=ec2).send_scan(server)

    commands = sent_commands(ssm, command_id)
    assert "\n".join(commands) == script_text("scan.ps1").rstrip("\n")
    assert commands == scan_commands()
    assert server in ssm.list_commands(CommandId=command_id)["Commands"][0]["InstanceIds"]


def test_an_install_sends_the_kb_only_base64_encoded_around_the_unchanged_install_script(
    ec2: Any, ssm: Any, windows_ami: str
) -> None:
    server = launch(ec2, windows_ami, "web-01")
    command_id = SsmFleet(ssm_client=ssm, ec2_client=ec2).send_install(server, "kb5034129")

    commands = sent_commands(ssm, command_id)
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
        ("TimedOut", "ExecutionTimedOut", -1, CommandStatus.TIMED_OUT, None),
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


def test_a_reboot_goes_to_ec2_for_exactly_that_instance(ec2: Any, ssm: Any, windows_ami: str) -> None:
    server = launch(ec2, windows_ami, "web-01")
    requests: list[dict[str, Any]] = []
    ec2.meta.events.register("provide-client-params.ec2.RebootInstances", lambda params, **_: requests.append(params))
    SsmFleet(ssm_client=ssm, ec2_client=ec2).reboot(server)
    assert requests == [{"InstanceIds": [server]}]


def test_rebooting_an_unknown_instance_is_not_found(ec2: Any, ssm: Any) -> None:
    with pytest.raises(NotFoundError, match=r"i-0123456789abcdef0.*InvalidInstanceID\.NotFound"):
        SsmFleet(ssm_client=ssm, ec2_client=ec2).reboot("i-0123456789abcdef0")


def test_a_managed_instance_cannot_be_rebooted_through_ec2(ec2: Any, ssm: Any) -> None:
    with pytest.raises(ValidationError, match=r"instance_id: 'mi-.*only EC2 instances"):
        SsmFleet(ssm_client=ssm, ec2_client=ec2).reboot(MANAGED_ID)


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
        expected_params={"Filters": [{"Key": "InstanceIds", "Values": [MANAGED_ID]}]},
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
    stubber.add_client_error("send_command", service_error_code=code, http_status_code=status)
    with stubber, pytest.raises(TransientError, match=message):
        SsmFleet(ssm_client=ssm, ec2_client=object()).send_scan("i-0123456789abcdef0")


def test_an_unreachable_endpoint_is_transient() -> None:
    config = Config(retries={"total_max_attempts": 1}, connect_timeout=1)
    ssm = boto3.client("ssm", region_name=REGION, endpoint_url="http://127.0.0.1:9", config=config)
    with pytest.raises(TransientError, match="AWS could not be reached"):
        SsmFleet(ssm_client=ssm, ec2_client=object()).send_scan("i-0123456789abcdef0")


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


def test_sending_to_an_instance_ssm_does_not_manage_is_not_found() -> None:
    ssm = boto3.client("ssm", region_name=REGION, config=NO_RETRIES)
    stubber = Stubber(ssm)
    stubber.add_client_error("send_command", service_error_code="InvalidInstanceId", http_status_code=400)
    with stubber, pytest.raises(NotFoundError, match="i-0123456789abcdef0"):
        SsmFleet(ssm_client=ssm, ec2_client=object()).send_install("i-0123456789abcdef0", "KB5034770")


def test_other_aws_errors_become_execution_errors_naming_the_action() -> None:
    ssm = boto3.client("ssm", region_name=REGION, config=NO_RETRIES)
    stubber = Stubber(ssm)
    stubber.add_client_error("describe_instance_information", service_error_code="AccessDeniedException")
    with stubber, pytest.raises(ExecutionError, match="listing SSM managed instances failed: AccessDeniedException"):
        SsmFleet(ssm_client=ssm, ec2_client=object()).list_instances()


def test_clients_are_built_on_first_use_with_adaptive_retries() -> None:
    fleet = SsmFleet(region="eu-west-1")
    assert fleet._ssm_client is None and fleet._ec2_client is None
    assert fleet.ssm.meta.region_name == "eu-west-1" and fleet.ec2.meta.region_name == "eu-west-1"
    # botocore counts ``max_attempts`` as retries: 10 retries are 11 attempts in all.
    assert fleet.ssm.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 11}


def test_a_timeout_below_what_ssm_accepts_is_rejected() -> None:
    with pytest.raises(ValidationError, match="timeout_seconds"):
        SsmFleet(timeout_seconds=5)


def test_the_packaged_scripts_are_valid_powershell_and_need_no_extra_module() -> None:
    tree_sitter = pytest.importorskip("tree_sitter")
    powershell = pytest.importorskip("tree_sitter_powershell")
    parser = tree_sitter.Parser(tree_sitter.Language(powershell.language()))
    for name, text in [
        ("scan.ps1", script_text("scan.ps1")),
        ("install.ps1", script_text("install.ps1")),
        ("install commands", "\n".join(install_commands("KB5034129"))),
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
