"""The fleet simulator on the real test catalog (2021-Jul, 2023-Oct … 2024-Mar, 2024-Nov, 2025-Jan/Sep/Oct)."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydantic
import pytest

from autopatch.catalog.queries import product_updates, resolve_products
from autopatch.domain.fleet import CommandStatus
from autopatch.errors import NotFoundError, TransientError, ValidationError
from autopatch.fleet.base import FleetAdapter
from autopatch.fleet.reports import WU_E_NOT_APPLICABLE, parse_install_output, parse_scan_output
from autopatch.fleet.simulator import FleetSimulator, ManualClock, SimulatedServer, SimulatorConfig, build_fleet
from autopatch.fleet.simulator_model import INSTALL_FAILURE_HRESULTS, signed_hresult
from autopatch.store.sqlite import SqliteStore

WS2022 = "Windows Server 2022"
NEWEST_WS2022_LCU = "KB5070884"  # 10.0.20348.4297, the October 2025 out-of-band cumulative update
# One Windows Server 2022 fleet large enough to hold servers on every rung of the ladder.
WS2022_FLEET = SimulatorConfig(
    servers=300, products=[WS2022], core_fraction=0.0, offline_fraction=0.0, failure_rate=0.0
)


def make_simulator(catalog: SqliteStore, config: SimulatorConfig, **options: Any) -> tuple[FleetSimulator, ManualClock]:
    clock = ManualClock()
    return FleetSimulator(catalog, config, clock=clock, **options), clock


def server_at(simulator: FleetSimulator, build: str, product: str = WS2022) -> SimulatedServer:
    return next(s for s in simulator.servers if s.product == product and s.build == build and s.online)


def finish(simulator: FleetSimulator, clock: ManualClock, instance_id: str, command_id: str) -> dict[str, Any]:
    """Advance simulated time until the command ends; return its parsed JSON output."""
    for _ in range(100):
        invocation = simulator.get_command(instance_id, command_id)
        if invocation.status.is_terminal:
            assert invocation.status in (CommandStatus.SUCCESS, CommandStatus.FAILED), invocation
            parsed: dict[str, Any] = json.loads(invocation.output)
            return parsed
        clock.advance(60)
    raise AssertionError(f"{command_id} never finished")


def test_same_seed_builds_the_same_fleet_and_another_seed_a_different_one(catalog: SqliteStore) -> None:
    first = build_fleet(catalog, SimulatorConfig(servers=50, seed=11))
    again = build_fleet(catalog, SimulatorConfig(servers=50, seed=11))
    other = build_fleet(catalog, SimulatorConfig(servers=50, seed=12))
    assert first == again
    assert [s.instance_id for s in first] != [s.instance_id for s in other]
    assert [(s.product, s.build) for s in first] != [(s.product, s.build) for s in other]


def test_every_build_is_the_fixed_build_of_a_real_cumulative_update_of_its_product(catalog: SqliteStore) -> None:
    fleet = build_fleet(catalog, SimulatorConfig(servers=200))
    ladders: dict[str, dict[str, str]] = {}
    for server in fleet:
        if server.product not in ladders:
            [product] = [p for p in resolve_products(catalog, server.product) if p.name == server.product]
            updates = product_updates(catalog, product.product_id)
            ladders[server.product] = {u.fixed_build: f"KB{u.kb}" for u in updates if u.subtype == "Security Update"}
        # Like Get-HotFix, a server lists only the cumulative update its build came from.
        assert server.installed_kbs == (ladders[server.product][server.build],)
    assert "10.0.20348.2227" in ladders[WS2022]


def test_fleet_spreads_servers_over_products_core_variants_and_patch_levels(catalog: SqliteStore) -> None:
    fleet = build_fleet(catalog, SimulatorConfig(servers=400))
    products = {server.product for server in fleet}
    assert {
        "Windows Server 2016",
        "Windows Server 2019 (Server Core installation)",
        "Windows Server 2022, 23H2 Edition (Server Core installation)",
        "Windows Server 2025",
    } <= products
    assert all(s.installation_type == "Server Core" for s in fleet if "23H2" in s.product)
    ws2022 = [s for s in fleet if s.product == WS2022]
    newest = [s for s in ws2022 if s.build == "10.0.20348.4297"]
    assert newest and len(newest) < len(ws2022)  # some fully patched, most behind
    assert len({s.build for s in ws2022}) >= 8


def test_instances_carry_ec2_ids_readable_names_platform_and_tags(catalog: SqliteStore) -> None:
    simulator, _ = make_simulator(catalog, SimulatorConfig(servers=60))
    instances = simulator.list_instances()
    assert len({i.instance_id for i in instances}) == 60
    assert all(re.fullmatch(r"i-[0-9a-f]{17}", i.instance_id) for i in instances)
    ws2022 = next(i for i in instances if i.tags["OS"] == WS2022)
    assert re.fullmatch(r"sim-ws2022-\d{3}", ws2022.name)
    assert ws2022.platform_name in (
        "Microsoft Windows Server 2022 Datacenter",
        "Microsoft Windows Server 2022 Standard",
    )
    assert ws2022.platform_version == "10.0.20348"
    assert ws2022.tags["Name"] == ws2022.name and ws2022.tags["Environment"] in ("prod", "test")
    assert ws2022.ami_name is not None and ws2022.ami_name.startswith("Windows_Server-2022-English-Full-Base-")
    assert {i.tags["Environment"] for i in instances} == {"prod", "test"}


def test_offline_fraction_takes_that_share_of_the_fleet_offline(catalog: SqliteStore) -> None:
    simulator, _ = make_simulator(catalog, SimulatorConfig(servers=50, offline_fraction=0.1))
    assert sum(not instance.online for instance in simulator.list_instances()) == 5


def test_scan_of_a_server_at_the_2024_01_build_lists_kb5034129_and_offers_the_newest_lcu(
    catalog: SqliteStore,
) -> None:
    simulator, clock = make_simulator(catalog, WS2022_FLEET)
    server = server_at(simulator, "10.0.20348.2227")
    command_id = simulator.send_scan(server.instance_id)
    report = finish(simulator, clock, server.instance_id, command_id)
    assert report == {
        "schema": 1,
        "computer_name": server.computer_name,
        "os_caption": server.platform_name,
        "os_version": "10.0.20348",
        "current_build": "20348",
        "ubr": 2227,
        "installation_type": "Server",
        "installed_kbs": ["KB5034129"],
        "offered_updates": [
            {
                "kb": NEWEST_WS2022_LCU,
                "title": "2025-10 Cumulative Update for Microsoft server operating system version 21H2 "
                "for x64-based Systems (KB5070884)",
            }
        ],
        "pending_reboot": False,
        "last_boot_time": "2024-01-01T00:00:00Z",  # built at simulated time 0, never restarted since
        "error": None,
    }


def test_scan_and_install_output_pass_the_parser_the_engine_uses(catalog: SqliteStore) -> None:
    simulator, clock = make_simulator(catalog, WS2022_FLEET)
    server = server_at(simulator, "10.0.20348.2227")
    scan_id = simulator.send_scan(server.instance_id)
    finish(simulator, clock, server.instance_id, scan_id)
    scanned_at = datetime.now(UTC)
    scan = parse_scan_output(server.instance_id, simulator.get_command(server.instance_id, scan_id).output, scanned_at)
    assert scan.build == "10.0.20348.2227" and scan.installed_kbs == {"KB5034129"}
    assert scan.offered_kbs == {NEWEST_WS2022_LCU} and scan.installation_type == "Server"
    install_id = simulator.send_install(server.instance_id, NEWEST_WS2022_LCU)
    finish(simulator, clock, server.instance_id, install_id)
    report = parse_install_output(simulator.get_command(server.instance_id, install_id).output)
    assert (report.kb, report.result_code, report.hresult, report.reboot_required) == (NEWEST_WS2022_LCU, 2, 0, True)


def test_fully_patched_server_is_offered_nothing(catalog: SqliteStore) -> None:
    simulator, clock = make_simulator(catalog, WS2022_FLEET)
    server = server_at(simulator, "10.0.20348.4297")
    report = finish(simulator, clock, server.instance_id, simulator.send_scan(server.instance_id))
    assert report["installed_kbs"] == [NEWEST_WS2022_LCU] and report["offered_updates"] == []


def test_scan_stays_in_progress_until_scan_seconds_of_simulated_time_have_passed(catalog: SqliteStore) -> None:
    simulator, clock = make_simulator(catalog, WS2022_FLEET.model_copy(update={"scan_seconds": 30.0}))
    server = simulator.servers[0]
    command_id = simulator.send_scan(server.instance_id)
    clock.advance(29)
    assert simulator.get_command(server.instance_id, command_id).status is CommandStatus.IN_PROGRESS
    clock.advance(1)
    invocation = simulator.get_command(server.instance_id, command_id)
    assert invocation.status is CommandStatus.SUCCESS and invocation.exit_code == 0


def test_time_scale_turns_a_600_second_install_into_about_one_real_second(catalog: SqliteStore) -> None:
    config = WS2022_FLEET.model_copy(update={"time_scale": 600.0, "install_seconds_jitter": 0.3})
    simulator, clock = make_simulator(catalog, config)
    server = server_at(simulator, "10.0.20348.2227")
    command_id = simulator.send_install(server.instance_id, NEWEST_WS2022_LCU)
    clock.advance(0.69)  # at most 600 * 0.7 = 420 simulated seconds: never enough
    assert simulator.get_command(server.instance_id, command_id).status is CommandStatus.IN_PROGRESS
    clock.advance(0.62)  # 1.31 real s * 600 = 786 simulated s > 600 * 1.3
    assert simulator.get_command(server.instance_id, command_id).status is CommandStatus.SUCCESS


def test_install_moves_the_build_to_the_kb_fixed_build_and_sets_pending_reboot(catalog: SqliteStore) -> None:
    simulator, clock = make_simulator(catalog, WS2022_FLEET)
    server = server_at(simulator, "10.0.20348.2227")
    command_id = simulator.send_install(server.instance_id, "kb5034770")
    assert simulator.get_command(server.instance_id, command_id).status is CommandStatus.IN_PROGRESS
    result = finish(simulator, clock, server.instance_id, command_id)
    assert result["kb"] == "KB5034770" and result["result_code"] == 2 and result["hresult"] == 0
    assert result["reboot_required"] is True and result["schema"] == 1
    assert simulator.get_command(server.instance_id, command_id).exit_code == 0
    after = simulator.server(server.instance_id)
    assert after.build == "10.0.20348.2322" and after.pending_reboot
    # The February cumulative update replaces January's in the installed list.
    assert after.installed_kbs == ("KB5034770",)
    scan = finish(simulator, clock, server.instance_id, simulator.send_scan(server.instance_id))
    assert scan["ubr"] == 2322 and scan["pending_reboot"] is True
    assert scan["offered_updates"][0]["kb"] == NEWEST_WS2022_LCU


def test_scan_sent_after_an_unpolled_install_sees_its_result(catalog: SqliteStore) -> None:
    simulator, clock = make_simulator(catalog, WS2022_FLEET)
    server = server_at(simulator, "10.0.20348.2227")
    simulator.send_install(server.instance_id, NEWEST_WS2022_LCU)
    clock.advance(3600)
    scan = finish(simulator, clock, server.instance_id, simulator.send_scan(server.instance_id))
    assert scan["ubr"] == 4297 and scan["installed_kbs"] == [NEWEST_WS2022_LCU] and scan["offered_updates"] == []


def test_restart_flag_maybe_also_requires_a_reboot(catalog: SqliteStore) -> None:
    config = SimulatorConfig(servers=100, products=["Windows Server 2019"], offline_fraction=0.0, failure_rate=0.0)
    simulator, clock = make_simulator(catalog, config)
    server = server_at(simulator, "10.0.17763.5329", "Windows Server 2019")
    # KB5070883 (WS2019, 10.0.17763.7922) carries Restart Required "Maybe" in the catalog.
    result = finish(simulator, clock, server.instance_id, simulator.send_install(server.instance_id, "KB5070883"))
    assert result["result_code"] == 2 and result["reboot_required"] is True


def test_installing_an_installed_kb_succeeds_without_a_reboot(catalog: SqliteStore) -> None:
    simulator, clock = make_simulator(catalog, WS2022_FLEET)
    server = server_at(simulator, "10.0.20348.2227")
    result = finish(simulator, clock, server.instance_id, simulator.send_install(server.instance_id, "KB5034129"))
    assert result == {**result, "result_code": 2, "hresult": 0, "reboot_required": False}
    assert not simulator.server(server.instance_id).pending_reboot


@pytest.mark.parametrize(
    ("kb", "why"),
    [
        ("KB5033118", "December 2023's LCU is older than the server's January build"),
        ("KB5034127", "January 2024's LCU for Windows Server 2019, not 2022"),
        ("KB1234567", "not in the catalog at all"),
    ],
)
def test_install_of_a_non_applicable_kb_fails_with_wu_e_not_applicable(catalog: SqliteStore, kb: str, why: str) -> None:
    simulator, clock = make_simulator(catalog, WS2022_FLEET)
    server = server_at(simulator, "10.0.20348.2227")
    command_id = simulator.send_install(server.instance_id, kb)
    result = finish(simulator, clock, server.instance_id, command_id)
    invocation = simulator.get_command(server.instance_id, command_id)
    assert invocation.status is CommandStatus.FAILED and invocation.exit_code == 1, why
    assert result["result_code"] == 4 and result["hresult"] == -2145124329 == WU_E_NOT_APPLICABLE
    assert simulator.server(server.instance_id).build == "10.0.20348.2227"


def test_random_failures_report_real_install_hresults_and_change_nothing(catalog: SqliteStore) -> None:
    simulator, clock = make_simulator(catalog, WS2022_FLEET.model_copy(update={"failure_rate": 1.0}))
    server = server_at(simulator, "10.0.20348.2227")
    result = finish(simulator, clock, server.instance_id, simulator.send_install(server.instance_id, "KB5034770"))
    assert result["result_code"] == 4 and result["hresult"] in INSTALL_FAILURE_HRESULTS
    assert -2147023293 in INSTALL_FAILURE_HRESULTS  # 0x80070643, ERROR_INSTALL_FAILURE
    assert simulator.server(server.instance_id).build == "10.0.20348.2227"


def test_injected_failure_fails_the_next_install_only(catalog: SqliteStore) -> None:
    simulator, clock = make_simulator(catalog, WS2022_FLEET)
    server = server_at(simulator, "10.0.20348.2227")
    simulator.inject_failure(server.instance_id, "KB5034770", 0x800F0922)
    failed = finish(simulator, clock, server.instance_id, simulator.send_install(server.instance_id, "KB5034770"))
    assert failed["result_code"] == 4 and failed["hresult"] == signed_hresult(0x800F0922) == -2146498270
    retried = finish(simulator, clock, server.instance_id, simulator.send_install(server.instance_id, "KB5034770"))
    assert retried["result_code"] == 2


def test_a_command_to_an_absent_agent_waits_then_times_out_undelivered(catalog: SqliteStore) -> None:
    simulator, clock = make_simulator(catalog, WS2022_FLEET.model_copy(update={"delivery_timeout_seconds": 600.0}))
    server = simulator.servers[0]
    simulator.set_online(server.instance_id, False)
    assert not simulator.is_online(server.instance_id)
    commands = [simulator.send_scan(server.instance_id), simulator.send_install(server.instance_id, "KB5034770")]
    assert {simulator.get_command(server.instance_id, c).status for c in commands} == {CommandStatus.PENDING}
    clock.advance(600)
    for command_id in commands:
        invocation = simulator.get_command(server.instance_id, command_id)
        assert invocation.status is CommandStatus.DELIVERY_TIMED_OUT and invocation.exit_code is None
    assert simulator.server(server.instance_id).build == server.build  # it never ran


def test_a_command_waiting_for_an_agent_runs_when_the_agent_comes_back(catalog: SqliteStore) -> None:
    simulator, clock = make_simulator(catalog, WS2022_FLEET)
    server = server_at(simulator, "10.0.20348.2227")
    simulator.set_online(server.instance_id, False)
    command_id = simulator.send_install(server.instance_id, "KB5034770")
    clock.advance(300)
    simulator.set_online(server.instance_id, True)
    assert simulator.get_command(server.instance_id, command_id).status is CommandStatus.IN_PROGRESS
    assert finish(simulator, clock, server.instance_id, command_id)["result_code"] == 2


def test_an_install_longer_than_the_execution_timeout_is_killed_without_effect(catalog: SqliteStore) -> None:
    config = WS2022_FLEET.model_copy(update={"execution_timeout_seconds": 3600.0})
    simulator, clock = make_simulator(catalog, config)
    server = server_at(simulator, "10.0.20348.2227")
    simulator.set_install_seconds(server.instance_id, 5400.0)  # a slow cumulative update on an old server
    command_id = simulator.send_install(server.instance_id, "KB5034770")
    clock.advance(3599)
    assert simulator.get_command(server.instance_id, command_id).status is CommandStatus.IN_PROGRESS
    clock.advance(1)
    invocation = simulator.get_command(server.instance_id, command_id)
    assert invocation.status is CommandStatus.EXECUTION_TIMED_OUT and "execution timeout" in invocation.error
    assert simulator.server(server.instance_id).build == "10.0.20348.2227"


def test_a_retry_of_an_installed_kb_reports_already_installed(catalog: SqliteStore) -> None:
    simulator, clock = make_simulator(catalog, WS2022_FLEET)
    server = server_at(simulator, "10.0.20348.2227")
    finish(simulator, clock, server.instance_id, simulator.send_install(server.instance_id, "KB5034770"))
    again = finish(simulator, clock, server.instance_id, simulator.send_install(server.instance_id, "KB5034770"))
    assert again["result_code"] == 2 and again["status"] == "already-installed"


def test_reboot_takes_the_server_offline_then_back_online_with_no_reboot_pending(catalog: SqliteStore) -> None:
    simulator, clock = make_simulator(catalog, WS2022_FLEET.model_copy(update={"reboot_seconds": 120.0}))
    server = server_at(simulator, "10.0.20348.2227")
    finish(simulator, clock, server.instance_id, simulator.send_install(server.instance_id, "KB5034770"))
    assert simulator.server(server.instance_id).pending_reboot
    booted = simulator.server(server.instance_id).boot_time
    simulator.reboot(server.instance_id)
    # Windows takes a while to shut down: it still answers, and a scan shows the old boot time.
    assert simulator.is_online(server.instance_id)
    scan = simulator.send_scan(server.instance_id)  # 30 s: it ends as Windows goes down
    clock.advance(30)
    report = json.loads(simulator.get_command(server.instance_id, scan).output)
    assert report["last_boot_time"] == booted.strftime("%Y-%m-%dT%H:%M:%SZ")
    clock.advance(1)  # down now: the agent is gone, and a send is refused as SSM refuses it
    with pytest.raises(TransientError, match="InvalidInstanceId"):
        simulator.send_scan(server.instance_id)
    assert simulator.is_online(server.instance_id)  # but the heartbeat still says Online, for a while
    clock.advance(60)  # 91 s after the request
    assert not simulator.is_online(server.instance_id)
    clock.advance(58)
    assert not simulator.is_online(server.instance_id)
    clock.advance(1)  # 150 s: 30 s shutdown + 120 s restart
    assert simulator.is_online(server.instance_id)
    after = simulator.server(server.instance_id)
    assert not after.pending_reboot and after.boot_time > booted


def test_reboot_cuts_off_a_running_install(catalog: SqliteStore) -> None:
    simulator, clock = make_simulator(catalog, WS2022_FLEET)
    server = server_at(simulator, "10.0.20348.2227")
    command_id = simulator.send_install(server.instance_id, "KB5034770")
    simulator.reboot(server.instance_id)
    clock.advance(3600)
    assert simulator.get_command(server.instance_id, command_id).status is CommandStatus.FAILED
    assert simulator.server(server.instance_id).build == "10.0.20348.2227"


def test_reboot_that_never_returns_keeps_the_server_offline_until_set_online(catalog: SqliteStore) -> None:
    simulator, clock = make_simulator(catalog, WS2022_FLEET)
    server = simulator.servers[0]
    simulator.set_reboot_never_returns(server.instance_id)
    simulator.reboot(server.instance_id)
    clock.advance(10 * 24 * 3600)
    assert not simulator.is_online(server.instance_id)
    simulator.set_online(server.instance_id, True)
    assert simulator.is_online(server.instance_id)


def test_set_install_seconds_fixes_the_install_duration(catalog: SqliteStore) -> None:
    simulator, clock = make_simulator(catalog, WS2022_FLEET)
    server = server_at(simulator, "10.0.20348.2227")
    simulator.set_install_seconds(server.instance_id, 5000)
    command_id = simulator.send_install(server.instance_id, "KB5034770")
    clock.advance(4999)
    assert simulator.get_command(server.instance_id, command_id).status is CommandStatus.IN_PROGRESS
    clock.advance(1)
    assert simulator.get_command(server.instance_id, command_id).status is CommandStatus.SUCCESS


def test_install_counts_count_every_install_of_the_same_kb(catalog: SqliteStore) -> None:
    simulator, clock = make_simulator(catalog, WS2022_FLEET)
    server = server_at(simulator, "10.0.20348.2227")
    for _ in range(2):
        finish(simulator, clock, server.instance_id, simulator.send_install(server.instance_id, "KB5034770"))
    simulator.send_install(server.instance_id, "5070884")
    assert simulator.install_counts == {(server.instance_id, "KB5034770"): 2, (server.instance_id, "KB5070884"): 1}


def test_expected_completion_says_how_many_real_seconds_are_left(catalog: SqliteStore) -> None:
    simulator, clock = make_simulator(catalog, WS2022_FLEET.model_copy(update={"time_scale": 10.0}))
    server = server_at(simulator, "10.0.20348.2227")
    simulator.set_install_seconds(server.instance_id, 600)
    command_id = simulator.send_install(server.instance_id, "KB5034770")
    clock.advance(20)  # 200 simulated seconds
    left = simulator.expected_completion(server.instance_id, command_id)
    assert left is not None and 40 <= left < 40.01
    clock.advance(left)
    assert simulator.get_command(server.instance_id, command_id).status is CommandStatus.SUCCESS
    assert simulator.expected_completion(server.instance_id, command_id) == 0.0


def test_find_command_returns_the_command_sent_with_a_token(catalog: SqliteStore) -> None:
    simulator, _ = make_simulator(catalog, WS2022_FLEET)
    server = simulator.servers[0]
    token = f"run-1/{server.instance_id}/KB5034770/1"
    command_id = simulator.send_install(server.instance_id, "KB5034770", token)
    assert simulator.find_command(server.instance_id, token) == command_id
    assert simulator.find_command(server.instance_id, "run-1/other/KB5034770/1") is None
    assert simulator.find_command(simulator.servers[1].instance_id, token) is None


def test_state_survives_reopening_with_an_in_flight_install_that_completes_afterwards(
    catalog: SqliteStore, tmp_path: Path
) -> None:
    state = tmp_path / "fleet.db"
    clock = ManualClock(1000.0)
    first = FleetSimulator(catalog, WS2022_FLEET, state_path=state, clock=clock)
    done = server_at(first, "10.0.20348.2227")
    first_install = first.send_install(done.instance_id, "KB5034770")
    finish(first, clock, done.instance_id, first_install)
    running = next(s for s in first.servers if s.build == "10.0.20348.2227" and s.instance_id != done.instance_id)
    first.set_install_seconds(running.instance_id, 600)
    command_id = first.send_install(running.instance_id, NEWEST_WS2022_LCU, token="run-7/attempt-1")
    clock.advance(300)
    # A crash: the first simulator is never closed; a second one opens the same file.
    second = FleetSimulator(catalog, state_path=state, clock=clock)
    assert second.config == WS2022_FLEET
    assert [s.instance_id for s in second.servers] == [s.instance_id for s in first.servers]
    assert second.server(done.instance_id).build == "10.0.20348.2322"
    assert second.server(done.instance_id).pending_reboot
    assert second.find_command(running.instance_id, "run-7/attempt-1") == command_id
    assert second.get_command(running.instance_id, command_id).status is CommandStatus.IN_PROGRESS
    clock.advance(300)
    assert second.get_command(running.instance_id, command_id).status is CommandStatus.SUCCESS
    assert second.server(running.instance_id).build == "10.0.20348.4297"
    assert second.install_counts == {(done.instance_id, "KB5034770"): 1, (running.instance_id, NEWEST_WS2022_LCU): 1}
    assert second.send_scan(done.instance_id) not in {first_install, command_id}  # the id sequence was persisted
    second.close()
    first.close()


def test_downtime_between_openings_counts_as_simulated_time(catalog: SqliteStore, tmp_path: Path) -> None:
    state = tmp_path / "fleet.db"
    clock = ManualClock()
    with FleetSimulator(catalog, WS2022_FLEET, state_path=state, clock=clock) as first:
        server = server_at(first, "10.0.20348.2227")
        first.set_install_seconds(server.instance_id, 600)
        command_id = first.send_install(server.instance_id, "KB5034770")
    clock.advance(601)  # the servers kept installing while nothing watched them
    with FleetSimulator(catalog, state_path=state, clock=clock) as second:
        assert second.get_command(server.instance_id, command_id).status is CommandStatus.SUCCESS


def test_reopening_a_fleet_with_another_shape_is_refused(catalog: SqliteStore, tmp_path: Path) -> None:
    state = tmp_path / "fleet.db"
    FleetSimulator(catalog, SimulatorConfig(servers=10), state_path=state).close()
    with pytest.raises(ValidationError, match="config"):
        FleetSimulator(catalog, SimulatorConfig(servers=11), state_path=state)
    faster = FleetSimulator(catalog, SimulatorConfig(servers=10, time_scale=60.0), state_path=state)
    assert faster.config.time_scale == 60.0 and len(faster.servers) == 10


def test_invalid_kb_unknown_instance_and_unknown_command_are_input_errors(catalog: SqliteStore) -> None:
    simulator, _ = make_simulator(catalog, WS2022_FLEET)
    instance_id = simulator.servers[0].instance_id
    with pytest.raises(ValidationError, match="kb"):
        simulator.send_install(instance_id, "KB5034129; Restart-Computer")
    with pytest.raises(NotFoundError):
        simulator.send_install("i-00000000000000000", "KB5034129")
    with pytest.raises(ValidationError, match="instance_id"):
        simulator.send_scan("web-01; Restart-Computer")
    with pytest.raises(NotFoundError):
        simulator.get_command(instance_id, "00000000-0000-4000-8000-000000000000")
    with pytest.raises(ValidationError, match="hresult"):
        simulator.inject_failure(instance_id, "KB5034770", 2**33)
    assert simulator.install_counts == {}


@pytest.mark.parametrize(
    "bad",
    [{"servers": 0}, {"servers": 100_001}, {"failure_rate": 1.5}, {"time_scale": 0}, {"products": []}, {"typo": 1}],
)
def test_config_rejects_values_out_of_range_and_unknown_settings(bad: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        SimulatorConfig.model_validate(bad)


def test_products_missing_from_the_catalog_are_skipped(catalog: SqliteStore) -> None:
    fleet = build_fleet(catalog, SimulatorConfig(servers=20, products=["Windows 95", "Windows Server 2019"]))
    assert {s.product.removesuffix(" (Server Core installation)") for s in fleet} == {"Windows Server 2019"}
    with pytest.raises(ValidationError, match="products"):
        build_fleet(catalog, SimulatorConfig(products=["Windows 95"]))


def test_ten_thousand_servers_build_with_unique_ids_and_names(catalog: SqliteStore, tmp_path: Path) -> None:
    simulator = FleetSimulator(catalog, SimulatorConfig(servers=10_000), state_path=tmp_path / "big.db")
    instances = simulator.list_instances()
    assert len(instances) == 10_000
    assert len({i.instance_id for i in instances}) == 10_000 and len({i.name for i in instances}) == 10_000
    simulator.close()


def test_simulator_is_a_fleet_adapter(catalog: SqliteStore) -> None:
    adapter: FleetAdapter = make_simulator(catalog, WS2022_FLEET)[0]
    assert all(callable(getattr(adapter, name)) for name in ("list_instances", "send_scan", "get_command", "reboot"))


def test_a_version_1_state_file_opens_and_is_upgraded(catalog: SqliteStore, tmp_path: Path) -> None:
    state = tmp_path / "fleet.db"
    clock = ManualClock()
    with FleetSimulator(catalog, WS2022_FLEET, state_path=state, clock=clock) as first:
        server = server_at(first, "10.0.20348.2227")
        command_id = first.send_install(server.instance_id, "KB5034770", token="run-1/attempt-1")
    with sqlite3.connect(state) as db:  # what the first version of the simulator wrote
        db.execute("DROP INDEX commands_unfinished")
        db.execute("DROP INDEX commands_token")
        db.execute("DROP TABLE snapshots")  # version 3's
        for table, column in (("servers", "reboot_at"), ("servers", "booted_at"), ("commands", "run_seconds")):
            db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        db.execute("PRAGMA user_version = 1")
    db.close()
    with FleetSimulator(catalog, state_path=state, clock=clock) as second:
        assert second.find_command(server.instance_id, "run-1/attempt-1") == command_id
        finish(second, clock, server.instance_id, command_id)
        assert second.server(server.instance_id).build == "10.0.20348.2322"
    with sqlite3.connect(state) as db:
        indexes = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    db.close()
    assert {"commands_unfinished", "commands_token"} <= indexes
