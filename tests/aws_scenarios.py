"""One table of patch-run scenarios, driven by the local engine and by Step Functions alike.

Each scenario builds the same simulated fleet (4 Windows Server 2022 servers, all behind, three
of them at September's build), the same run, the same faults, and reads the same outcome: the state
of every (server, KB), each server's status and reboots, the run's status and reason, how often
each KB was sent. ``test_aws_workflow`` runs every row through both drivers and asserts the two
outcomes are equal and what the row expects. Both drivers use the DynamoDB store on moto, so that
even the order servers are listed in is the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3

from autopatch.aws.run_starter import hand_over
from autopatch.aws.wiring import Runtime, Timing
from autopatch.domain.patching import KbState, RebootPolicy
from autopatch.domain.polling import PollPolicy
from autopatch.domain.ring_gates import RingGate
from autopatch.domain.runs import RunItem, RunRecord, RunServer
from autopatch.domain.snapshots import RunSnapshot
from autopatch.domain.summary import RunSummary
from autopatch.engine.driving import plan_if_unplanned, prepare_retry
from autopatch.engine.options import RunOptions
from autopatch.engine.ownership import RunLease, new_owner_id
from autopatch.engine.planning import RunPlan, new_run, start_run, store_plan
from autopatch.engine.report import send_summary
from autopatch.engine.runner import Engine
from autopatch.errors import TransientError
from autopatch.fleet.base import FleetAdapter
from autopatch.fleet.simulator import FleetSimulator, SimulatorConfig
from autopatch.scanning import scan_instances
from autopatch.store.base import Store
from autopatch.store.dynamodb import DynamoStore

from .aws_support import KB_OCTOBER, KB_OCTOBER_OOB, REGION, EventBridge, RecordingFleet, StepFunctions, import_catalog

INSTALL_FAILURE = -2147023293  # 0x80070643
FAST = PollPolicy(first_delay=0.001, factor=1.5, max_delay=0.01, timeout=5.0)
SEPTEMBER_SERVER = 0  # index of a server at September's build (two KBs behind)


def fleet_config(time_scale: float) -> SimulatorConfig:
    """Seed 169: four servers, three at 10.0.20348.4171 (September), one at .4294 (October); none up to date."""
    return SimulatorConfig(
        servers=4,
        seed=169,
        offline_fraction=0.0,
        core_fraction=0.0,
        failure_rate=0.0,
        time_scale=time_scale,
        products=["Windows Server 2022"],
    )


class Unreachable:
    """The fleet with one server's agent gone after the plan: every install send is refused (transient)."""

    def __init__(self, fleet: Any, instance_id: str) -> None:
        self.fleet = fleet
        self.instance_id = instance_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fleet, name)

    def send_install(self, instance_id: str, kb: str, token: str | None = None) -> str:
        if instance_id == self.instance_id:
            raise TransientError(f"InvalidInstanceId: {instance_id} is not connected")
        result: str = self.fleet.send_install(instance_id, kb, token)
        return result


def no_faults(fleet: FleetSimulator, ids: list[str]) -> None:
    """Nothing goes wrong."""


@dataclass(frozen=True)
class Scenario:
    name: str
    expect: Callable[[Outcome, list[str]], None]
    concurrency: int = 4
    max_errors: int | None = None
    reboot: RebootPolicy = RebootPolicy.IF_REQUIRED
    time_scale: float = 100_000.0  # simulated seconds per real second: 600 s installs take 6 ms
    install_timeout: float = 30.0
    reboot_timeout: float = 30.0
    transient_retries: int = 3
    faults: Callable[[FleetSimulator, list[str]], None] = no_faults
    unreachable: int | None = None  # index of a server whose agent is gone once the plan is made
    two_kbs: bool = False  # only the September server, planned by hand with October's LCU and its OOB fix
    retry: bool = False  # the outcome is that of a one-KB retry of the September server's failed KB
    lose_event: Callable[[str, str, str], bool] | None = None  # Step Functions only: EventBridge loses these
    on_step_functions: Callable[[Outcome], None] = lambda outcome: None  # what only an execution shows
    rings: str | None = None  # --rings (a percentage takes the lowest instance ids first)
    health_script: str | None = None  # --health-script
    soak_seconds: int = 0  # --soak
    snapshot: bool = False  # --snapshot


@dataclass
class Outcome:
    run: RunRecord
    states: dict[tuple[str, str], str]
    servers: dict[str, str]
    reboots: dict[str, int]
    reasons: dict[tuple[str, str], str]
    installs: dict[tuple[str, str], int]
    peak: int
    summaries: list[RunSummary] = field(default_factory=list)
    execution: Any = None  # Step Functions only: the execution (its history, transitions)
    lost: list[str] = field(default_factory=list)  # Step Functions only: command events EventBridge lost
    gates: list[RingGate] = field(default_factory=list)  # --rings: each ring and its gate
    checks: dict[tuple[int, str], tuple[int, str, str]] = field(default_factory=dict)  # (ring, server): its check
    snapshots: dict[str, RunSnapshot] = field(default_factory=dict)  # --snapshot: each server's record
    first_started: dict[str, str] = field(default_factory=dict)  # when each server's first KB left Pending
    waiting_reasons: dict[str, str] = field(default_factory=dict)  # why a Pending or Skipped server was not patched
    names: dict[str, str] = field(default_factory=dict)  # each server's name

    def comparable(self) -> dict[str, Any]:
        """What both drivers must agree on (times, command ids and snapshot ids aside: the simulator numbers
        those in the order it is asked, which the drivers' concurrency decides)."""
        compared = {
            "status": str(self.run.status),
            "reason": self.run.reason,
            "states": self.states,
            "servers": self.servers,
            "reboots": self.reboots,
            "installs": self.installs,
            "kb_reasons": self.reasons,
            "summaries": len(self.summaries),
            "gates": [(gate.name, str(gate.status), gate.reason) for gate in self.gates],
            "checks": self.checks,
            "snapshots": {server: (str(s.phase), len(s.volumes)) for server, s in self.snapshots.items()},
            "waiting_reasons": self.waiting_reasons,
        }
        return {key: _without_snapshot_ids(value) for key, value in compared.items()}


def _without_snapshot_ids(value: Any) -> Any:
    """``value`` with every snapshot id in its texts written ``snap-*``."""
    if isinstance(value, str):
        return re.sub(r"snap-[0-9a-f]+", "snap-*", value)
    if isinstance(value, dict):
        return {_without_snapshot_ids(key): _without_snapshot_ids(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_without_snapshot_ids(item) for item in value)
    return value


class Collecting:
    """A notifier that keeps what it was sent."""

    name = "collecting"

    def __init__(self) -> None:
        self.summaries: list[RunSummary] = []

    def send(self, summary: RunSummary) -> None:
        self.summaries.append(summary)


def dynamo_store() -> DynamoStore:
    client = boto3.client("dynamodb", region_name=REGION)
    store = DynamoStore("autopatch-catalog", "autopatch-state", client=client, sleep=lambda _: None)
    store.create_tables(wait=False)
    import_catalog(store)
    return store


def peak_parallel(servers: list[RunServer]) -> int:
    """The most servers patched at once, from their start and end stamps (ends first on a tie)."""
    marks = sorted(
        [(s.started_at, 1) for s in servers if s.started_at] + [(s.finished_at, -1) for s in servers if s.finished_at],
        key=lambda mark: (mark[0], mark[1]),
    )
    running = peak = 0
    for _, change in marks:
        running += change
        peak = max(peak, running)
    return peak


def outcome(store: Store, fleet: FleetSimulator, run_id: str, summaries: list[RunSummary]) -> Outcome:
    items = store.run_items(run_id)
    servers = store.run_servers(run_id)
    first_started: dict[str, str] = {}
    for transition in store.transitions(run_id):
        if transition.to_state == "InProgress":
            first_started[transition.instance_id] = min(first_started.get(transition.instance_id, "~"), transition.at)
    return Outcome(
        run=store.get_run(run_id),
        states={(i.instance_id, i.kb): str(i.state) for i in items},
        servers={s.instance_id: s.status for s in servers},
        reboots={s.instance_id: s.reboots for s in servers},
        reasons={(i.instance_id, i.kb): i.reason for i in items if i.state is KbState.FAILED},
        installs=dict(fleet.install_counts),
        peak=peak_parallel(servers),
        summaries=list(summaries),
        gates=store.ring_gates(run_id),
        checks={(m.position, m.instance_id): (m.round, str(m.check), m.detail) for m in store.ring_members(run_id)},
        snapshots={record.instance_id: record for record in store.run_snapshots(run_id)},
        first_started=first_started,
        waiting_reasons={s.instance_id: s.reason for s in servers if s.status in ("Pending", "Skipped")},
        names={s.instance_id: s.name for s in servers},
    )


def run_options(scenario: Scenario) -> dict[str, object]:
    return RunOptions(
        concurrency=scenario.concurrency,
        max_errors=scenario.max_errors,
        reboot=scenario.reboot,
        rings=scenario.rings,
        health_script=scenario.health_script,
        soak_seconds=scenario.soak_seconds,
        snapshot=scenario.snapshot,
    ).as_dict()


def create_run(scenario: Scenario, store: Store, fleet: FleetSimulator) -> tuple[str, RunLease]:
    """The run as the CLI or the API creates it: servers claimed, unplanned (or planned by hand: ``two_kbs``)."""
    instances = fleet.list_instances()
    store.save_instances(instances, datetime.now(UTC))
    if not scenario.two_kbs:
        run, lease = start_run(store, "patch", instances, run_options(scenario))
        return run.run_id, lease
    target = instances[SEPTEMBER_SERVER]
    scan_instances(fleet, store, [target])
    owner = new_owner_id()
    run = new_run("patch", run_options(scenario), owner=owner)
    server = RunServer(run.run_id, target.instance_id, target.name, "Windows Server 2022", "10.0.20348.4171")
    items = [
        RunItem(run.run_id, target.instance_id, kb, position, KbState.PENDING, "Security Update", build, "Yes")
        for position, (kb, build) in enumerate(((KB_OCTOBER, "10.0.20348.4294"), (KB_OCTOBER_OOB, "10.0.20348.4297")))
    ]
    store_plan(store, RunPlan(run, [server], items))
    return run.run_id, RunLease(store, run.run_id, owner)


def aws_timing(scenario: Scenario) -> Timing:
    return Timing(
        install_timeout=scenario.install_timeout,
        reboot_timeout=scenario.reboot_timeout,
        transient_retries=scenario.transient_retries,
        retry_backoff=PollPolicy(first_delay=1.0, max_delay=2.0),
        silence_seconds=1,
        wait_timeout_seconds=2,
        online_poll=PollPolicy(first_delay=1.0, factor=1.0, max_delay=1.0),
        scan_poll=FAST,
        snapshot_poll=PollPolicy(first_delay=1.0, factor=2.0, max_delay=1.0),
        lookup_delay=0.01,
    )


def local_options(scenario: Scenario) -> RunOptions:
    return RunOptions(
        concurrency=scenario.concurrency,
        max_errors=scenario.max_errors,
        reboot=scenario.reboot,
        install_timeout=scenario.install_timeout,
        reboot_timeout=scenario.reboot_timeout,
        transient_retries=scenario.transient_retries,
        poll=FAST,
        rings=scenario.rings,
        health_script=scenario.health_script,
        soak_seconds=scenario.soak_seconds,
        snapshot=scenario.snapshot,
    )


def drive_locally(
    scenario: Scenario, store: Store, fleet: FleetAdapter, run_id: str, lease: RunLease
) -> list[RunSummary]:
    """The local driver, as ``driving.drive_run`` (plan if unplanned, execute as the lease holder, notify)."""
    notifier = Collecting()
    plan_if_unplanned(store, fleet, store.get_run(run_id))
    with lease:
        Engine(store, fleet).execute(run_id, local_options(scenario), lease)
    send_summary(store, run_id, [notifier])
    return notifier.summaries


def run_local(scenario: Scenario, simulator: FleetSimulator) -> Outcome:
    store = dynamo_store()
    ids = [server.instance_id for server in simulator.servers]
    scenario.faults(simulator, ids)
    run_id, lease = create_run(scenario, store, simulator)
    fleet: FleetAdapter = simulator
    if scenario.unreachable is not None:
        plan_if_unplanned(store, fleet, store.get_run(run_id))
        fleet = Unreachable(simulator, ids[scenario.unreachable])  # type: ignore[assignment]
    summaries = drive_locally(scenario, store, fleet, run_id, lease)
    if scenario.retry:
        plan, lease = prepare_retry(store, simulator, ids[SEPTEMBER_SERVER], KB_OCTOBER_OOB)
        run_id = plan.run.run_id
        summaries = drive_locally(scenario, store, simulator, run_id, lease)
    return outcome(store, simulator, run_id, summaries)


def run_on_step_functions(scenario: Scenario, simulator: FleetSimulator, states: StepFunctions) -> Outcome:
    """The Step Functions driver: the patch-run (then, for a retry, the retry) state machine, EventBridge played."""
    from autopatch.aws.wiring import use_runtime

    store = dynamo_store()
    ids = [server.instance_id for server in simulator.servers]
    scenario.faults(simulator, ids)
    run_id, lease = create_run(scenario, store, simulator)
    hand_over(store, lease)  # as the API does: the run's lease goes to its workflow
    recording = RecordingFleet(simulator)
    fleet: Any = recording
    if scenario.unreachable is not None:
        plan_if_unplanned(store, simulator, store.get_run(run_id))
        fleet = Unreachable(recording, ids[scenario.unreachable])
    notifier = Collecting()
    runtime = Runtime(
        store=store,
        fleet=fleet,
        states=states.client,
        timing=aws_timing(scenario),
        notifiers=[notifier],  # type: ignore[list-item]
        idempotency_table="autopatch-state",
        idempotency_client=boto3.client("dynamodb", region_name=REGION),
        sleep=lambda seconds: None,
    )
    with use_runtime(runtime), EventBridge(recording, states.calls) as events:
        if scenario.lose_event is not None:
            events.lose = scenario.lose_event
        execution = states.execute("PatchRunStateMachine", run_id)
        if scenario.retry:
            plan, lease = prepare_retry(store, simulator, ids[SEPTEMBER_SERVER], KB_OCTOBER_OOB)
            hand_over(store, lease)
            notifier.summaries.clear()
            run_id = plan.run.run_id
            execution = states.execute("RetryKbStateMachine", run_id)
    result = outcome(store, simulator, run_id, notifier.summaries)
    result.execution = execution
    result.lost = list(events.lost)
    return result
