"""Runs with rings on the simulator: a canary failure halts the run, a passing gate lets it go on.

Planning runs on a fast simulated fleet; the run itself on the same fleet reopened with a
``ManualClock`` that the engine's ``sleep`` advances, so installs, reboots, health checks and
a 30-minute soak all take simulated time only (the test takes about a second).
"""

from __future__ import annotations

import io
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from autopatch.domain.patching import KbState, RunStatus
from autopatch.domain.ring_gates import GateStatus, MemberCheck
from autopatch.engine.driving import drive_run
from autopatch.engine.options import RunOptions
from autopatch.engine.ownership import RunLease
from autopatch.engine.planning import RunPlan, plan_run, store_plan
from autopatch.engine.runner import Engine
from autopatch.fleet.simulator import FleetSimulator, ManualClock, SimulatorConfig
from autopatch.notify.console import ConsoleNotifier
from autopatch.scanning import discover_instances
from autopatch.store.sqlite import SqliteStore

INSTALL_FAILURE = -2147023293  # 0x80070643
FLEET = SimulatorConfig(
    servers=10,
    seed=11,
    offline_fraction=0.0,
    failure_rate=0.0,
    time_scale=100_000.0,
    products=["Windows Server 2022"],
    core_fraction=0.0,
)
SOAK = 1800


class SharedClock(ManualClock):
    """A ``ManualClock`` the engine's threads advance together: one lock, so no advance is lost or undone."""

    def __init__(self, start: float) -> None:
        super().__init__(start)
        self._lock = threading.Lock()

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


class Crash(BaseException):
    """The orchestrator dies here (kill -9): no handler of ours runs."""


@dataclass
class Lab:
    store: SqliteStore
    catalog: SqliteStore
    folder: Path
    plan: RunPlan | None = None
    fleet: FleetSimulator | None = None
    clock: SharedClock = field(default_factory=lambda: SharedClock(time.time()))
    slept: list[float] = field(default_factory=list)
    on_sleep: Callable[[], None] | None = None

    def planned(self, options: RunOptions) -> RunPlan:
        """Plan every server on the fast fleet, then reopen it on the manual clock for the run."""
        with FleetSimulator(self.catalog, FLEET, state_path=self.folder / "fleet.db") as fast:
            targets = discover_instances(fast, self.store)
            self.plan = plan_run(self.store, fast, targets, options=options.as_dict())
            store_plan(self.store, self.plan)
        return self.plan

    def survey(self) -> RunPlan:
        """A plan that is not stored: which servers have work (the fleet is the same every time)."""
        with FleetSimulator(self.catalog, FLEET, state_path=self.folder / "fleet.db") as fast:
            self.plan = plan_run(self.store, fast, discover_instances(fast, self.store))
        return self.plan

    def open_fleet(self, real_time: bool = False, **config: object) -> FleetSimulator:
        """The planned fleet for the run: on the manual clock (1 simulated second each), or fast on real time."""
        if self.fleet is not None:
            self.fleet.close()
        path = self.folder / "fleet.db"
        if real_time:
            self.fleet = FleetSimulator(self.catalog, FLEET.model_copy(update=config), state_path=path)
        else:
            timed = FLEET.model_copy(update={"time_scale": 1.0, **config})
            self.fleet = FleetSimulator(self.catalog, timed, state_path=path, clock=self.clock)
        return self.fleet

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if self.on_sleep is not None:
            self.on_sleep()
        self.clock.advance(seconds)

    def engine(self) -> Engine:
        assert self.fleet is not None
        wall = lambda: datetime.fromtimestamp(self.clock(), UTC)  # noqa: E731
        return Engine(self.store, self.fleet, sleep=self.sleep, clock=self.clock, wall_clock=wall)

    def names(self) -> dict[str, str]:
        assert self.plan is not None
        return {server.instance_id: server.name for server in self.plan.servers}

    def with_work(self) -> list[str]:
        assert self.plan is not None
        return [s.instance_id for s in self.plan.servers if self.plan.pending(s.instance_id)]


@pytest.fixture
def lab(catalog_db: Path, tmp_path: Path) -> Iterator[Lab]:
    shutil.copyfile(catalog_db, tmp_path / "runs.db")
    here = Lab(SqliteStore(tmp_path / "runs.db"), SqliteStore(catalog_db), tmp_path)
    yield here
    if here.fleet is not None:
        here.fleet.close()
    here.store.close()
    here.catalog.close()


def ringed(rings: str, soak: int = 0, script: str | None = None) -> RunOptions:
    return RunOptions(concurrency=3, rings=rings, soak_seconds=soak, health_script=script)


def test_a_kb_failing_on_the_canary_halts_the_run_before_the_next_ring_and_notifies(lab: Lab) -> None:
    lab.survey()
    canary = lab.with_work()[0]
    options = ringed(f"canary=Name={lab.names()[canary]} ; rest=*")
    plan = lab.planned(options)
    kb = plan.pending(canary)[0].kb
    lab.open_fleet(real_time=True).inject_failure(canary, kb, INSTALL_FAILURE, times=1)  # drive_run sleeps for real
    mail = io.StringIO()
    lease = RunLease.claim(lab.store, plan.run.run_id)
    assert lease is not None
    with lease.start():
        status, results = drive_run(lab.store, lab.fleet, plan.run.run_id, lease, [ConsoleNotifier(mail)])  # type: ignore[arg-type]
    assert status is RunStatus.HALTED
    run = lab.store.get_run(plan.run.run_id)
    assert run.status is RunStatus.HALTED and run.finished_at is not None
    assert run.reason.startswith(f"ring canary failed its health gate: {lab.names()[canary]} ({canary}): {kb} Failed")
    assert "0x80070643" in run.reason
    first, rest = lab.store.ring_gates(plan.run.run_id)
    assert (first.status, rest.status) == (GateStatus.FAILED, GateStatus.NOT_STARTED)
    assert rest.reason == "not started: ring canary halted the run"
    assert lab.fleet is not None and set(lab.fleet.install_counts) <= {(canary, i.kb) for i in plan.pending(canary)}
    servers = {s.instance_id: s for s in lab.store.run_servers(plan.run.run_id)}
    for instance_id in lab.with_work()[1:]:  # later rings untouched: every KB still Pending, the server says why
        assert {
            i.state
            for i in lab.store.run_items(plan.run.run_id, instance_id)
            if i.kb in {p.kb for p in plan.pending(instance_id)}
        } == {KbState.PENDING}
        assert servers[instance_id].status == "Pending"
        assert servers[instance_id].reason == "not started: ring canary halted the run"
    assert [r.ok for r in results] == [True]
    assert "Halted: ring canary failed its health gate" in mail.getvalue()
    assert lab.store.notifications(plan.run.run_id) == [("console", True, None)]
    assert lab.store.unfinished_runs() == []  # Halted is terminal: the servers are free again


def test_a_passing_gate_soaks_on_the_simulated_clock_checks_again_and_lets_the_next_ring_start(lab: Lab) -> None:
    options = ringed("canary=20%;rest=*", soak=SOAK, script="if (-not (Get-Service W32Time)) { exit 1 }\nexit 0\n")
    plan = lab.planned(options)
    lab.open_fleet()
    started = lab.clock()
    status = lab.engine().execute(plan.run.run_id, options)
    assert status is RunStatus.SUCCEEDED, lab.store.get_run(plan.run.run_id).reason
    canary, rest = lab.store.ring_gates(plan.run.run_id)
    assert (canary.status, rest.status) == (GateStatus.PASSED, GateStatus.PASSED)
    members = lab.store.ring_members(plan.run.run_id)
    assert [m.instance_id for m in members if m.position == 0] == sorted(s.instance_id for s in plan.servers)[:2]
    # The canary was checked twice (after patching, after the soak); the last ring once, without a soak.
    assert {(m.position, m.round, m.check) for m in members} == {(0, 2, MemberCheck.PASSED), (1, 1, MemberCheck.PASSED)}
    assert all(m.detail == "online; health script exited 0" for m in members)
    assert canary.soak_until is not None and rest.soak_until is None
    assert sum(s for s in lab.slept) >= SOAK and lab.clock() - started >= SOAK  # simulated, not real, time
    first_rest_start = min(
        t.at
        for t in lab.store.transitions(plan.run.run_id)
        if t.to_state == "InProgress" and t.instance_id in {m.instance_id for m in members if m.position == 1}
    )
    assert canary.finished_at is not None and first_rest_start >= canary.finished_at
    assert lab.fleet is not None and all(count == 1 for count in lab.fleet.install_counts.values())


def test_a_health_script_failing_on_a_canary_server_halts_the_run(lab: Lab) -> None:
    options = ringed("canary=30%;rest=*", script="exit 0")
    plan = lab.planned(options)
    canary = sorted(s.instance_id for s in plan.servers)[:3]
    lab.open_fleet(health_check_failing_servers=[canary[1]])
    assert lab.engine().execute(plan.run.run_id, options) is RunStatus.HALTED
    reason = lab.store.get_run(plan.run.run_id).reason
    assert reason.startswith(
        f"ring canary failed its health gate: {lab.names()[canary[1]]} ({canary[1]}): health script exited 1"
    )
    checks = {m.instance_id: m.check for m in lab.store.ring_members(plan.run.run_id, 0)}
    assert checks == {canary[0]: MemberCheck.PASSED, canary[1]: MemberCheck.FAILED, canary[2]: MemberCheck.PASSED}
    assert lab.fleet is not None and {key[0] for key in lab.fleet.install_counts} <= set(canary)


def test_a_server_turning_unhealthy_during_the_soak_halts_the_run_at_the_second_round(lab: Lab) -> None:
    options = ringed("canary=10%;rest=*", soak=SOAK, script="exit 0")
    plan = lab.planned(options)
    [canary] = sorted(s.instance_id for s in plan.servers)[:1]
    fleet = lab.open_fleet()

    def breaks_during_the_soak() -> None:
        if lab.store.ring_gates(plan.run.run_id)[0].status is GateStatus.SOAKING:
            fleet.config = fleet.config.model_copy(update={"health_check_failing_servers": [canary]})

    lab.on_sleep = breaks_during_the_soak
    assert lab.engine().execute(plan.run.run_id, options) is RunStatus.HALTED
    gate = lab.store.ring_gates(plan.run.run_id)[0]
    assert gate.reason.endswith(
        "health script exited 1: "
        + f"{lab.names()[canary]}: unhealthy (a simulated health-check failure) after the soak"
    )
    [member] = lab.store.ring_members(plan.run.run_id, 0)
    assert (member.round, member.check) == (2, MemberCheck.FAILED)


def test_a_crash_during_the_soak_resumes_at_the_gate_without_installing_again(lab: Lab) -> None:
    options = ringed("canary=20%;rest=*", soak=SOAK)
    plan = lab.planned(options)
    lab.open_fleet()
    soaked: list[float] = []

    def dies_ten_minutes_into_the_soak() -> None:
        gate = lab.store.ring_gates(plan.run.run_id)[0]
        if gate.status is GateStatus.SOAKING:
            soaked.append(lab.slept[-1])
            if sum(soaked) >= 600:
                raise Crash

    lab.on_sleep = dies_ten_minutes_into_the_soak
    with pytest.raises(Crash):
        lab.engine().execute(plan.run.run_id, options)
    canary = lab.store.ring_gates(plan.run.run_id)[0]
    assert canary.status is GateStatus.SOAKING
    assert lab.fleet is not None
    installed = dict(lab.fleet.install_counts)
    assert installed and {key[0] for key in installed} <= {
        m.instance_id for m in lab.store.ring_members(plan.run.run_id, 0)
    }
    resumed: list[float] = []

    def records_the_rest_of_the_soak() -> None:
        if lab.store.ring_gates(plan.run.run_id)[0].status is GateStatus.SOAKING:
            resumed.append(lab.slept[-1])

    lab.on_sleep = records_the_rest_of_the_soak
    lab.store.release_run(plan.run.run_id, lab.store.get_run(plan.run.run_id).owner or "")  # its lease ran out
    assert lab.engine().execute(plan.run.run_id, options) is RunStatus.SUCCEEDED  # a new driver: `autopatch resume`
    counts = lab.fleet.install_counts
    assert all(count == 1 for count in counts.values()) and all(counts[key] == 1 for key in installed)
    # It waited only for what was left of the stored soak (the last sleep before the kill never happened),
    # then checked the canary again.
    left = SOAK - (sum(soaked) - soaked[-1])
    assert left - 1 <= sum(resumed) <= left + 1
    assert [m.round for m in lab.store.ring_members(plan.run.run_id, 0)] == [2, 2]
    assert all(gate.status is GateStatus.PASSED for gate in lab.store.ring_gates(plan.run.run_id))


def test_cancelling_during_the_soak_cancels_the_rings_and_the_servers_not_started(lab: Lab) -> None:
    options = ringed("canary=20%;rest=*", soak=SOAK)
    plan = lab.planned(options)
    lab.open_fleet()

    def cancels_during_the_soak() -> None:
        if lab.store.ring_gates(plan.run.run_id)[0].status is GateStatus.SOAKING:
            lab.store.cancel_run(plan.run.run_id, "operator")

    lab.on_sleep = cancels_during_the_soak
    assert lab.engine().execute(plan.run.run_id, options) is RunStatus.CANCELLED
    assert [g.status for g in lab.store.ring_gates(plan.run.run_id)] == [GateStatus.CANCELLED, GateStatus.CANCELLED]
    rest = {m.instance_id for m in lab.store.ring_members(plan.run.run_id, 1)}
    assert lab.fleet is not None and not {key[0] for key in lab.fleet.install_counts} & rest


def test_a_gate_failing_after_the_last_ring_fails_the_run_with_its_reason(lab: Lab) -> None:
    options = ringed("canary=10%;rest=*", script="exit 0")
    plan = lab.planned(options)
    last = sorted(s.instance_id for s in plan.servers)[-1]
    lab.open_fleet(health_check_failing_servers=[last])
    assert lab.engine().execute(plan.run.run_id, options) is RunStatus.FAILED  # nothing left to halt
    run = lab.store.get_run(plan.run.run_id)
    assert run.reason.startswith(f"ring rest failed its health gate: {lab.names()[last]} ({last}): health script")
    assert [g.status for g in lab.store.ring_gates(plan.run.run_id)] == [GateStatus.PASSED, GateStatus.FAILED]
