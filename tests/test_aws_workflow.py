"""The patch run on Step Functions (moto executing the real definitions) ends as the local engine's run does.

One table of scenarios (``aws_scenarios.py``) runs through both drivers on the same simulated
fleet and the DynamoDB store on moto: each row asserts what it expects, and the two drivers' final
states — every (server, KB), every server, the run — must be equal.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autopatch.aws.functions import function_named
from autopatch.aws.run_starter import hand_over
from autopatch.aws.wiring import Runtime, use_runtime
from autopatch.domain.patching import RebootPolicy
from autopatch.fleet.simulator import FleetSimulator
from autopatch.store.sqlite import SqliteStore

from .aws_scenarios import (
    INSTALL_FAILURE,
    SEPTEMBER_SERVER,
    Outcome,
    Scenario,
    aws_timing,
    create_run,
    dynamo_store,
    fleet_config,
    run_local,
    run_on_step_functions,
)
from .aws_support import KB_OCTOBER, KB_OCTOBER_OOB, StepFunctions, aws_mock, import_catalog, recording_api_calls


def all_installed(outcome: Outcome, ids: list[str]) -> None:
    assert str(outcome.run.status) == "Succeeded", outcome.run.reason
    assert set(outcome.states.values()) <= {"Success", "Superseded", "Already Installed", "Not Available"}
    assert all(outcome.states[(i, KB_OCTOBER_OOB)] == "Success" for i in ids)
    assert outcome.reboots == dict.fromkeys(ids, 1)
    assert all(count == 1 for count in outcome.installs.values())
    assert len(outcome.summaries) == 1


def one_failed(outcome: Outcome, ids: list[str]) -> None:
    victim = ids[SEPTEMBER_SERVER]
    assert str(outcome.run.status) == "Failed" and outcome.run.reason == "1 server(s) with failed KBs"
    assert outcome.states[(victim, KB_OCTOBER_OOB)] == "Failed"
    assert outcome.servers[victim] == "Failed"
    assert all(outcome.states[(i, KB_OCTOBER_OOB)] == "Success" for i in ids if i != victim)


def failed_with_0x80070643(outcome: Outcome, ids: list[str]) -> None:
    one_failed(outcome, ids)
    assert outcome.installs[(ids[SEPTEMBER_SERVER], KB_OCTOBER_OOB)] == 1
    assert "HRESULT 0x80070643" in outcome.reasons[(ids[SEPTEMBER_SERVER], KB_OCTOBER_OOB)]


def timed_out(outcome: Outcome, ids: list[str]) -> None:
    one_failed(outcome, ids)
    assert outcome.reasons[(ids[SEPTEMBER_SERVER], KB_OCTOBER_OOB)] == "no result within 1 s"


def gave_up_after_transient_failures(outcome: Outcome, ids: list[str]) -> None:
    one_failed(outcome, ids)
    assert outcome.reasons[(ids[SEPTEMBER_SERVER], KB_OCTOBER_OOB)].startswith("gave up after 3 transient failures")


def two_reboots(outcome: Outcome, ids: list[str]) -> None:
    server = ids[SEPTEMBER_SERVER]
    assert str(outcome.run.status) == "Succeeded", outcome.run.reason
    assert outcome.states == {(server, KB_OCTOBER): "Success", (server, KB_OCTOBER_OOB): "Success"}
    assert outcome.reboots == {server: 2}


def one_reboot_at_the_end(outcome: Outcome, ids: list[str]) -> None:
    server = ids[SEPTEMBER_SERVER]
    assert str(outcome.run.status) == "Succeeded", outcome.run.reason
    assert outcome.states == {(server, KB_OCTOBER): "Success", (server, KB_OCTOBER_OOB): "Success"}
    assert outcome.reboots == {server: 1}


def two_at_a_time(outcome: Outcome, ids: list[str]) -> None:
    all_installed(outcome, ids)
    assert outcome.peak == 2


def stopped_after_one_failed_server(outcome: Outcome, ids: list[str]) -> None:
    assert str(outcome.run.status) == "Failed"
    assert outcome.run.reason == "stopped after 1 failed server(s) (--max-errors)"
    assert sorted(outcome.servers.values()) == ["Failed", "Pending", "Pending", "Pending"]
    assert sorted(outcome.states[(i, KB_OCTOBER_OOB)] for i in ids) == ["Failed", "Pending", "Pending", "Pending"]


def retried_and_installed(outcome: Outcome, ids: list[str]) -> None:
    server = ids[SEPTEMBER_SERVER]
    assert outcome.run.kind == "retry" and str(outcome.run.status) == "Succeeded", outcome.run.reason
    assert outcome.states == {(server, KB_OCTOBER_OOB): "Success"}
    assert outcome.installs[(server, KB_OCTOBER_OOB)] == 2  # the failed install, then the retry's
    assert len(outcome.summaries) == 1


def never_verified(outcome: Outcome, ids: list[str]) -> None:
    one_failed(outcome, ids)
    assert outcome.reasons[(ids[SEPTEMBER_SERVER], KB_OCTOBER_OOB)] == "no scan from after the reboot within 1 s"


def never_returns(fleet: FleetSimulator, ids: list[str]) -> None:
    fleet.set_reboot_never_returns(ids[SEPTEMBER_SERVER])


def fail_once(fleet: FleetSimulator, ids: list[str]) -> None:
    fleet.inject_failure(ids[SEPTEMBER_SERVER], KB_OCTOBER_OOB, INSTALL_FAILURE, times=1)


def fail_always(fleet: FleetSimulator, ids: list[str]) -> None:
    for instance_id in ids:
        fleet.inject_failure(instance_id, KB_OCTOBER_OOB, INSTALL_FAILURE, times=None)


def slow_install(fleet: FleetSimulator, ids: list[str]) -> None:
    fleet.set_install_seconds(ids[SEPTEMBER_SERVER], 5_000.0)  # 5 s at 1,000x: past the 1 s install timeout


def install_events(kind: str, instance_id: str, command_id: str) -> bool:
    return kind == "install"


def few_transitions_per_kb(outcome: Outcome) -> None:
    """No poll loop: a KB with its reboot costs a bounded number of transitions (about 22 measured)."""
    kbs = sum(1 for state in outcome.states.values() if state in ("Success", "Failed"))
    assert outcome.execution.transitions <= 6 + 26 * kbs
    assert outcome.execution.entered("WaitCommand") == kbs


def woke_by_heartbeat_fallback(outcome: Outcome) -> None:
    """Install events were lost: each such wait ended on its heartbeat, and RecordCommand read the command.

    A command that already ended when its wait began completes at once (no event needed): on a
    loaded machine that can happen to some of the four, so the count is of the events really lost.
    """
    assert outcome.lost
    assert outcome.execution.timeouts >= len(outcome.lost)


def gave_up_waiting(outcome: Outcome) -> None:
    assert outcome.execution.timeouts >= 1


def three_never_started(outcome: Outcome) -> None:
    assert outcome.execution.entered("NotStarted") == 3


# --- rings with health gates (a percentage takes the lowest instance ids first: the canary is the lowest)

HEALTHY = "if (-not (Get-Service W32Time)) { exit 1 }\nexit 0\n"
NOT_STARTED = "not started: ring canary halted the run"


def untouched(outcome: Outcome, server: str) -> set[str]:
    """The server's KB states, asserted to be those of a server never patched (the plan's, and Pending)."""
    states = {state for (i, _), state in outcome.states.items() if i == server}
    assert states <= {"Pending", "Already Installed", "Not Available", "Superseded"}, (server, states)
    return states


def canary_fails_its_kb(fleet: FleetSimulator, ids: list[str]) -> None:
    fleet.inject_failure(sorted(ids)[0], KB_OCTOBER_OOB, INSTALL_FAILURE, times=1)


def second_server_unhealthy(fleet: FleetSimulator, ids: list[str]) -> None:
    fleet.config = fleet.config.model_copy(update={"health_check_failing_servers": [sorted(ids)[1]]})


def halted_by_the_canary(outcome: Outcome, ids: list[str]) -> None:
    canary, *rest = sorted(ids)
    assert str(outcome.run.status) == "Halted"
    assert outcome.run.reason.startswith(f"ring canary failed its health gate: {outcome.names[canary]} ({canary}): ")
    assert f"{KB_OCTOBER_OOB} Failed" in outcome.run.reason and "0x80070643" in outcome.run.reason
    assert [(g.name, str(g.status)) for g in outcome.gates] == [("canary", "Failed"), ("rest", "Not Started")]
    assert outcome.gates[1].reason == NOT_STARTED
    assert {key[0] for key in outcome.installs} == {canary}  # later rings untouched
    for server in rest:
        assert outcome.servers[server] == "Pending" and outcome.waiting_reasons[server] == NOT_STARTED
        assert "Pending" in untouched(outcome, server)
    assert len(outcome.summaries) == 1 and outcome.summaries[0].status == "Halted"


def gate_halted_before_checking(outcome: Outcome) -> None:
    """The canary's gate failed at its first check (a KB failed): no server was checked, the next ring never ran."""
    execution = outcome.execution
    assert (execution.entered("Servers"), execution.entered("Checks"), execution.entered("Notify")) == (1, 0, 1)


def passed_both_gates(outcome: Outcome, ids: list[str]) -> None:
    all_installed(outcome, ids)
    canary, *rest = sorted(ids)
    assert [(g.name, str(g.status)) for g in outcome.gates] == [("canary", "Passed"), ("rest", "Passed")]
    # The canary checked twice (after patching, after the soak), the last ring once and without a soak.
    healthy = "online; health script exited 0"
    assert outcome.checks == {(0, canary): (2, "Passed", healthy)} | {(1, i): (1, "Passed", healthy) for i in rest}
    canary_gate = outcome.gates[0]
    assert canary_gate.soak_until is not None and canary_gate.finished_at is not None
    assert canary_gate.finished_at >= canary_gate.soak_until[:23]
    assert all(outcome.first_started[i] >= canary_gate.finished_at for i in rest)  # the next ring waited for it


def checked_soaked_and_checked_again(outcome: Outcome) -> None:
    """Three rounds of checks (canary, canary after the soak, rest), each health script awaited on its token."""
    execution = outcome.execution
    assert (execution.entered("Servers"), execution.entered("Checks")) == (2, 3)
    assert execution.entered("WaitHealthCheck") == 5 and execution.entered("Soak") >= 1


def halted_by_a_health_script(outcome: Outcome, ids: list[str]) -> None:
    canary = sorted(ids)[:2]
    assert str(outcome.run.status) == "Halted"
    sick = canary[1]
    assert outcome.run.reason.startswith(
        f"ring canary failed its health gate: {outcome.names[sick]} ({sick}): health script exited 1"
    )
    assert {key: check[1] for key, check in outcome.checks.items() if key[0] == 0} == {
        (0, canary[0]): "Passed",
        (0, sick): "Failed",
    }
    assert {key[0] for key in outcome.installs} == set(canary)


# --- snapshots before patching


def first_snapshot_fails(fleet: FleetSimulator, ids: list[str]) -> None:
    fleet.config = fleet.config.model_copy(update={"snapshot_failing_servers": [sorted(ids)[0]]})


def snapshotted_first_and_one_skipped(outcome: Outcome, ids: list[str]) -> None:
    broken, *others = sorted(ids)
    assert str(outcome.run.status) == "Failed"
    assert "1 server(s) not patched (1 snapshot failed: snapshot snap-" in outcome.run.reason
    assert outcome.servers[broken] == "Skipped"
    assert outcome.waiting_reasons[broken].startswith("snapshot failed: snapshot snap-")
    assert "is in state error" in outcome.waiting_reasons[broken]
    assert "Pending" in untouched(outcome, broken)
    assert not [key for key in outcome.installs if key[0] == broken]
    assert str(outcome.snapshots[broken].phase) == "failed"
    for server in others:
        snapshot = outcome.snapshots[server]
        assert outcome.servers[server] == "Done" and str(snapshot.phase) == "started" and snapshot.volumes
        assert snapshot.started_at is not None and snapshot.started_at <= outcome.first_started[server]
        assert outcome.states[(server, KB_OCTOBER_OOB)] == "Success"


def one_snapshot_task_per_server_and_one_skipped(outcome: Outcome) -> None:
    assert outcome.execution.entered("Snapshot") >= 4 and outcome.execution.entered("ServerSkipped") == 1


SCENARIOS = [
    Scenario("happy_path", all_installed, on_step_functions=few_transitions_per_kb),
    Scenario("a_failed_kb", failed_with_0x80070643, faults=fail_once),
    Scenario(
        "a_command_that_times_out",
        timed_out,
        faults=slow_install,
        time_scale=1_000.0,
        install_timeout=1.0,
        on_step_functions=gave_up_waiting,
    ),
    Scenario("a_reboot_between_kbs", two_reboots, two_kbs=True),
    Scenario("one_reboot_at_the_end", one_reboot_at_the_end, two_kbs=True, reboot=RebootPolicy.ALWAYS_AT_END),
    Scenario("max_concurrency", two_at_a_time, concurrency=2, time_scale=2_000.0),
    Scenario(
        "max_errors",
        stopped_after_one_failed_server,
        faults=fail_always,
        concurrency=1,
        max_errors=1,
        on_step_functions=three_never_started,
    ),
    Scenario(
        "a_missed_heartbeat",
        all_installed,
        time_scale=500.0,
        lose_event=install_events,
        on_step_functions=woke_by_heartbeat_fallback,
    ),
    Scenario(
        "an_unreachable_agent", gave_up_after_transient_failures, unreachable=SEPTEMBER_SERVER, transient_retries=2
    ),
    Scenario("a_server_that_never_comes_back", never_verified, faults=never_returns, reboot_timeout=1.0),
    Scenario("a_retry_of_one_kb", retried_and_installed, faults=fail_once, retry=True),
    Scenario(
        "a_canary_failure_halts_the_run",
        halted_by_the_canary,
        rings="canary=25%;rest=*",
        faults=canary_fails_its_kb,
        on_step_functions=gate_halted_before_checking,
    ),
    Scenario(
        "a_passing_gate_lets_the_next_ring_run",
        passed_both_gates,
        rings="canary=25%;rest=*",
        health_script=HEALTHY,
        soak_seconds=1,
        on_step_functions=checked_soaked_and_checked_again,
    ),
    Scenario(
        "a_failing_health_script_halts_the_run",
        halted_by_a_health_script,
        rings="canary=50%;rest=*",
        health_script="exit 0",
        faults=second_server_unhealthy,
    ),
    Scenario(
        "snapshots_before_patching",
        snapshotted_first_and_one_skipped,
        snapshot=True,
        faults=first_snapshot_fails,
        on_step_functions=one_snapshot_task_per_server_and_one_skipped,
    ),
]


@pytest.fixture
def simulator(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[FleetSimulator]:
    scenario: Scenario = request.param
    catalog = SqliteStore(":memory:")
    import_catalog(catalog)
    fleet = FleetSimulator(catalog, fleet_config(scenario.time_scale), state_path=tmp_path / "fleet.db")
    yield fleet
    fleet.close()
    catalog.close()


@pytest.mark.parametrize("simulator", SCENARIOS, ids=[s.name for s in SCENARIOS], indirect=True)
def test_step_functions_and_the_local_engine_end_each_scenario_alike(
    simulator: FleetSimulator, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    scenario: Scenario = request.node.callspec.params["simulator"]
    ids = [server.instance_id for server in simulator.servers]
    with aws_mock(monkeypatch), recording_api_calls() as calls:
        states = StepFunctions(monkeypatch, calls)
        on_aws = run_on_step_functions(scenario, simulator, states)
    assert on_aws.execution.status == "SUCCEEDED", "\n".join(states.errors)
    scenario.expect(on_aws, ids)
    catalog = SqliteStore(":memory:")
    import_catalog(catalog)
    twin = FleetSimulator(catalog, fleet_config(scenario.time_scale), state_path=tmp_path / "twin.db")
    try:
        with aws_mock(monkeypatch):
            local = run_local(scenario, twin)
    finally:
        twin.close()
        catalog.close()
    scenario.expect(local, ids)
    assert on_aws.comparable() == local.comparable()
    scenario.on_step_functions(on_aws)
    # Whatever path the scenario took, its functions called nothing the registry does not grant.
    beyond = {name: sorted(actions - function_named(name).actions) for name, actions in calls.by_function.items()}
    assert {name: actions for name, actions in beyond.items() if actions} == {}


@pytest.mark.parametrize("simulator", SCENARIOS[:1], ids=["happy_path"], indirect=True)
def test_an_execution_leaves_alone_a_run_another_driver_took_over(
    simulator: FleetSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``autopatch resume`` took the run once the workflow's lease lapsed: the execution stops, touching nothing."""
    with aws_mock(monkeypatch):
        states = StepFunctions(monkeypatch)
        store = dynamo_store()
        run_id, lease = create_run(SCENARIOS[0], store, simulator)
        owner = hand_over(store, lease)
        assert store.claim_run(run_id, "ops-host:4242:resume", time.time() + 30, time.time(), dead_owner=owner)
        runtime = Runtime(store=store, fleet=simulator, states=states.client, timing=aws_timing(SCENARIOS[0]))
        with use_runtime(runtime):
            execution = states.execute("PatchRunStateMachine", run_id)
        assert execution.status == "SUCCEEDED" and execution.entered("TakenOver") == 1
        assert execution.entered("Servers") == 0 and sum(simulator.install_counts.values()) == 0
        run = store.get_run(run_id)
        assert run.owner == "ops-host:4242:resume" and not run.planned
