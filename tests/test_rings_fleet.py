"""The fleet port's health check: SSM sends the operator's script as data, the simulator models the verdict."""

from __future__ import annotations

from typing import Any

import pytest

from autopatch.domain.fleet import CommandStatus
from autopatch.errors import ValidationError
from autopatch.fleet.simulator import FleetSimulator, ManualClock, SimulatorConfig
from autopatch.fleet.ssm import HEALTH_CHECK_COMMENT, SsmFleet, health_check_commands
from autopatch.store.sqlite import SqliteStore

from . import test_fleet_ssm
from .test_fleet_ssm import launch, sent_commands

# The SSM adapter's moto fixtures, shared with its own tests.
pytestmark = pytest.mark.usefixtures("fake_aws_credentials")
aws, ec2, ssm, windows_ami = test_fleet_ssm.aws, test_fleet_ssm.ec2, test_fleet_ssm.ssm, test_fleet_ssm.windows_ami

# Quotes, a subexpression, backticks, a semicolon and a non-ASCII name: all of it must arrive as written.
SCRIPT = (
    "$service = Get-Service -Name 'W32Time'\n"
    'Write-Output "state: $($service.Status) `"ok`"; Zürich"\n'
    "if ($service.Status -ne 'Running') { exit 3 }\n"
    "exit 0\n"
)


def test_ssm_sends_the_health_script_as_the_commands_parameter_line_by_line_unchanged(
    ec2: Any, ssm: Any, windows_ami: str
) -> None:
    server = launch(ec2, windows_ami, "web-01")
    command_id = SsmFleet(ssm_client=ssm, ec2_client=ec2).send_health_check(server, SCRIPT)
    assert sent_commands(ssm, command_id, execution_timeout="600") == SCRIPT.splitlines()
    assert ssm.list_commands(CommandId=command_id)["Commands"][0]["Comment"] == HEALTH_CHECK_COMMENT
    assert health_check_commands("\ufeff" + SCRIPT) == SCRIPT.splitlines()  # an editor's byte-order mark is dropped


def test_ssm_refuses_a_script_that_is_not_text_before_anything_is_sent(ec2: Any, ssm: Any, windows_ami: str) -> None:
    server = launch(ec2, windows_ami, "web-01")
    fleet = SsmFleet(ssm_client=ssm, ec2_client=ec2)
    for bad in ("", "exit 0\x00", "x" * 20_000):
        with pytest.raises(ValidationError, match="health-check script"):
            fleet.send_health_check(server, bad)
    with pytest.raises(ValidationError, match="instance_id"):
        fleet.send_health_check("i-0123456789abcdef0; whoami", SCRIPT)
    assert ssm.list_commands()["Commands"] == []


def test_the_simulator_fails_the_health_check_of_its_configured_servers_only(catalog: SqliteStore) -> None:
    clock = ManualClock()
    config = SimulatorConfig(servers=3, offline_fraction=0.0, products=["Windows Server 2022"], scan_seconds=30.0)
    with FleetSimulator(catalog, config, clock=clock) as probe:
        sick, well, _ = (server.instance_id for server in probe.servers)
    with FleetSimulator(
        catalog, config.model_copy(update={"health_check_failing_servers": [sick]}), clock=clock
    ) as fleet:
        commands = {instance_id: fleet.send_health_check(instance_id, SCRIPT) for instance_id in (sick, well)}
        assert fleet.get_command(well, commands[well]).status is CommandStatus.IN_PROGRESS
        clock.advance(31)
        failed, passed = (fleet.get_command(i, commands[i]) for i in (sick, well))
        assert (failed.status, failed.exit_code) == (CommandStatus.FAILED, 1) and "unhealthy" in failed.output
        assert (passed.status, passed.exit_code) == (CommandStatus.SUCCESS, 0) and "healthy" in passed.output
        with pytest.raises(ValidationError):
            fleet.send_health_check(well, " ")
