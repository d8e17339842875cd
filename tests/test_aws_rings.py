"""Rings and snapshots on the Step Functions driver, one task at a time: what no scenario execution shows.

``test_aws_workflow`` executes ring runs and snapshot runs in moto and compares them with the local
driver; here the tasks are called as the state machine would call them, on SQLite and the simulator,
to reach the paths between: a new execution continuing from the stored gates (a run whose workflow
stopped during its soak), a cancel during the soak, a check that ended without a verdict, a server
that does not come back for its check, and snapshots that have not started yet.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from autopatch.aws.run_models import CheckTask, RingTask
from autopatch.aws.run_starter import hand_over, workflow_owner
from autopatch.aws.wiring import Runtime, Timing, use_runtime
from autopatch.domain.patching import RebootPolicy, RunStatus
from autopatch.domain.polling import PollPolicy
from autopatch.domain.ring_gates import GateStatus, MemberCheck
from autopatch.domain.snapshots import TAG_RUN
from autopatch.engine import steps
from autopatch.engine.options import RunOptions
from autopatch.engine.ownership import RunLease
from autopatch.engine.planning import start_run
from autopatch.engine.runner import Engine
from autopatch.fleet.simulator import FleetSimulator
from autopatch.operations import cancel_run
from autopatch.store.sqlite import SqliteStore

from .aws_scenarios import FAST, fleet_config
from .aws_support import FakeContext, handler_of, import_catalog

SOAK = 600


@dataclass
class Lab:
    store: SqliteStore
    fleet: FleetSimulator
    runtime: Runtime

    def call(self, name: str, event: dict[str, Any]) -> Any:
        """One task, as the state machine invokes it."""
        return handler_of(name)(event, FakeContext(name))

    def ring_run(self, rings: str, **options: Any) -> tuple[str, list[str]]:
        """A run with rings over the four servers, handed to its workflow; its servers, lowest id first."""
        instances = self.fleet.list_instances()
        self.store.save_instances(instances, datetime.now(UTC))
        stored = RunOptions(concurrency=4, rings=rings, **options).as_dict()
        run, lease = start_run(self.store, "patch", instances, stored)
        hand_over(self.store, lease)
        return run.run_id, sorted(instance.instance_id for instance in instances)

    def patch(self, run_id: str, servers: list[str]) -> None:
        """What the Servers Map does with a ring's servers (the local driver's own patching stands in for it)."""
        options = RunOptions.from_dict(self.store.get_run(run_id).options)
        fast = RunOptions(concurrency=4, poll=FAST, reboot_timeout=30.0, install_timeout=30.0, rings=options.rings)
        Engine(self.store, self.fleet).patch_servers(run_id, fast, RunLease(self.store, run_id, "test"), servers)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    store = SqliteStore(tmp_path / "store.db")
    import_catalog(store)
    fleet = FleetSimulator(store, fleet_config(100_000.0), state_path=tmp_path / "fleet.db")
    timing = Timing(
        install_timeout=30.0,
        reboot_timeout=30.0,
        silence_seconds=1,
        wait_timeout_seconds=2,
        online_poll=PollPolicy(first_delay=4.0, factor=2.0, max_delay=60.0),
        snapshot_poll=PollPolicy(first_delay=5.0, max_delay=60.0),
    )
    runtime = Runtime(store=store, fleet=fleet, states=None, timing=timing, sleep=lambda seconds: None)
    with use_runtime(runtime):
        yield Lab(store, fleet, runtime)
    fleet.close()
    store.close()


def soaking(lab: Lab) -> tuple[str, list[str]]:
    """A two-ring run whose canary was patched and checked, now soaking: NextRing answered ``soak``."""
    run_id, servers = lab.ring_run("canary=25%;rest=*", soak_seconds=SOAK)
    canary = servers[0]
    first = lab.call("PlanFunction", {"run_id": run_id})
    assert (first["ring"]["action"], first["ring"]["position"], first["servers"]) == ("patch", 0, [canary])
    lab.patch(run_id, [canary])
    checks = lab.call("NextRingFunction", {"run_id": run_id, "ring": first["ring"]})
    assert checks["ring"] | {"delay": 0} == {
        "action": "check",
        "position": 0,
        "round": 1,
        "members": [canary],
        "delay": 0,
        "sweep": False,
    }
    step = lab.call(
        "CheckMemberFunction", {"run_id": run_id, "instance_id": canary, "position": 0, "step": {"phase": "offline"}}
    )
    assert step["phase"] == "done"
    soak = lab.call("NextRingFunction", {"run_id": run_id, "ring": checks["ring"]})
    assert (soak["ring"]["action"], soak["ring"]["delay"]) == ("soak", 300)  # a look every 300 s: cancels are noticed
    assert lab.store.ring_gates(run_id)[0].status is GateStatus.SOAKING
    return run_id, servers


def test_a_new_execution_continues_a_soaking_gate_and_the_next_ring_starts_once_it_passed(lab: Lab) -> None:
    run_id, servers = soaking(lab)
    # The execution stopped during the soak (its lease ran out); another one starts from the stored gate.
    lab.store.release_run(run_id, workflow_owner(run_id))
    again = lab.call("PlanFunction", {"run_id": run_id})
    assert (again["finished"], again["ring"]["action"], again["ring"]["position"]) == (False, "soak", 0)
    assert lab.fleet.install_counts and {key[0] for key in lab.fleet.install_counts} == {servers[0]}
    lab.runtime.clock = lambda: datetime.now(UTC).timestamp() + SOAK  # the soak is over
    recheck = lab.call("NextRingFunction", {"run_id": run_id, "ring": again["ring"]})
    assert (recheck["ring"]["action"], recheck["ring"]["round"], recheck["ring"]["members"]) == (
        "check",
        2,
        [servers[0]],
    )
    event = {"run_id": run_id, "instance_id": servers[0], "position": 0, "step": {"phase": "offline"}}
    assert lab.call("CheckMemberFunction", event)["phase"] == "done"
    rest = lab.call("NextRingFunction", {"run_id": run_id, "ring": recheck["ring"]})
    assert (rest["ring"]["action"], rest["ring"]["position"], sorted(rest["servers"])) == ("patch", 1, servers[1:])
    assert [gate.status for gate in lab.store.ring_gates(run_id)] == [GateStatus.PASSED, GateStatus.PATCHING]


def send_one_install(lab: Lab, run_id: str, instance_id: str) -> None:
    """The server's first KB sent (``steps.send_install``, as NextKb sends it): an install in flight."""
    item = steps.next_kb(lab.store, run_id, instance_id, RebootPolicy.IF_REQUIRED)
    assert item is not None
    steps.send_install(lab.store, lab.fleet, item)


def test_a_cancel_during_the_soak_ends_the_run_with_its_rings_and_the_next_ring_never_starts(lab: Lab) -> None:
    run_id, servers = soaking(lab)
    cancel_run(lab.store, run_id)  # nothing in flight: Cancelled at once, the rings with it
    finish = lab.call("NextRingFunction", {"run_id": run_id, "ring": {"action": "soak", "position": 0, "delay": 300}})
    assert (finish["ring"]["action"], finish["servers"]) == ("finish", [])
    assert [gate.status for gate in lab.store.ring_gates(run_id)] == [GateStatus.CANCELLED, GateStatus.CANCELLED]
    assert lab.call("FinishRunFunction", {"run_id": run_id})["status"] == "Cancelled"
    assert {key[0] for key in lab.fleet.install_counts} == {servers[0]}


def test_a_cancel_with_an_install_in_flight_sweeps_the_unfinished_servers_once_then_finishes(lab: Lab) -> None:
    run_id, servers = lab.ring_run("canary=25%;rest=*")
    first = lab.call("PlanFunction", {"run_id": run_id})
    assert lab.call("GateFunction", {"run_id": run_id, "instance_id": servers[0]})["start"] is True
    send_one_install(lab, run_id, servers[0])
    assert cancel_run(lab.store, run_id) is RunStatus.CANCELLING  # the install in flight ends first
    sweep = lab.call("NextRingFunction", {"run_id": run_id, "ring": first["ring"]})
    assert (sweep["ring"]["action"], sweep["ring"]["sweep"], sweep["servers"]) == ("patch", True, [servers[0]])
    lab.patch(run_id, sweep["servers"])  # the Map's iteration records the install in flight, starts nothing new
    finish = lab.call("NextRingFunction", {"run_id": run_id, "ring": sweep["ring"]})
    assert finish["ring"]["action"] == "finish"
    assert [gate.status for gate in lab.store.ring_gates(run_id)] == [GateStatus.CANCELLED, GateStatus.CANCELLED]
    assert lab.call("FinishRunFunction", {"run_id": run_id})["status"] == "Cancelled"
    assert set(lab.fleet.install_counts.values()) == {1} and {key[0] for key in lab.fleet.install_counts} == {
        servers[0]
    }


def test_a_check_that_ended_without_a_verdict_fails_the_gate_and_the_run_halts(lab: Lab) -> None:
    run_id, _ = lab.ring_run("canary=25%;rest=*")
    first = lab.call("PlanFunction", {"run_id": run_id})
    lab.patch(run_id, first["servers"])
    checks = lab.call("NextRingFunction", {"run_id": run_id, "ring": first["ring"]})
    assert checks["ring"]["action"] == "check"
    # The round's iteration ended without recording its server (nothing reaches here on AWS: FailCheck
    # records every error); NextRing never waits for it forever.
    halted = lab.call("NextRingFunction", {"run_id": run_id, "ring": checks["ring"]})
    assert halted["ring"]["action"] == "finish"
    [member] = lab.store.ring_members(run_id, 0)
    assert (member.check, member.detail) == (MemberCheck.FAILED, "not checked: its check ended without a verdict")
    assert lab.call("FinishRunFunction", {"run_id": run_id})["status"] == "Halted"
    run = lab.store.get_run(run_id)
    assert run.reason.startswith("ring canary failed its health gate: ") and run.reason.endswith("without a verdict")
    assert run.owner is None  # FinishRun gave the lease up


class Offline:
    """The simulator with one server that never answers (SSM: ConnectionLost)."""

    def __init__(self, fleet: FleetSimulator, instance_id: str) -> None:
        self.fleet = fleet
        self.instance_id = instance_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fleet, name)

    def is_online(self, instance_id: str) -> bool:
        return instance_id != self.instance_id and bool(self.fleet.is_online(instance_id))

    def expected_online(self, instance_id: str) -> float | None:
        return None if instance_id == self.instance_id else self.fleet.expected_online(instance_id)


def test_a_server_that_does_not_answer_is_looked_at_again_until_the_reboot_timeout_then_fails_its_check(
    lab: Lab,
) -> None:
    run_id, servers = lab.ring_run("canary=25%;rest=*", health_script="exit 0")
    first = lab.call("PlanFunction", {"run_id": run_id})
    lab.patch(run_id, first["servers"])
    lab.call("NextRingFunction", {"run_id": run_id, "ring": first["ring"]})
    lab.runtime.fleet = Offline(lab.fleet, servers[0])
    event = {"run_id": run_id, "instance_id": servers[0], "position": 0, "step": {"phase": "offline"}}
    looks = [lab.call("CheckMemberFunction", event)]
    looks.append(lab.call("CheckMemberFunction", event | {"step": looks[0]}))
    assert [(look["phase"], look["delay"], look["polls"]) for look in looks] == [("offline", 4, 1), ("offline", 8, 2)]
    assert looks[1]["deadline"] == looks[0]["deadline"]  # the reboot timeout counts from the first look
    gone = lab.call("CheckMemberFunction", event | {"step": looks[1] | {"deadline": 0.0}})
    assert gone["phase"] == "done"
    [member] = lab.store.ring_members(run_id, 0)
    assert (member.check, member.detail) == (MemberCheck.FAILED, "offline: not online within 30s")
    assert member.command_id is None  # no health script was sent to a server that did not answer


def test_snapshots_not_started_yet_are_looked_at_again_later_and_a_cancel_lets_the_server_go_on(lab: Lab) -> None:
    lab.fleet.config = lab.fleet.config.model_copy(update={"snapshot_start_seconds": 10_000_000.0})
    instances = lab.fleet.list_instances()
    lab.store.save_instances(instances, datetime.now(UTC))
    run, lease = start_run(lab.store, "patch", instances[:2], RunOptions(snapshot=True).as_dict())
    hand_over(lab.store, lease)
    waiting, busy = ({"run_id": run.run_id, "instance_id": i.instance_id} for i in instances[:2])
    lab.call("PlanFunction", {"run_id": run.run_id})
    assert lab.call("GateFunction", waiting) == {"start": True, "snapshot": True}
    step = lab.call("SnapshotFunction", waiting)
    assert (step["phase"], step["delay"]) == ("snapshot", 5)  # EC2 does not list them started yet
    assert lab.call("SnapshotFunction", waiting)["phase"] == "snapshot"
    record = lab.store.run_snapshot(run.run_id, waiting["instance_id"])
    assert record is not None and str(record.phase) == "requested"
    asked = lab.fleet.list_snapshots({TAG_RUN: run.run_id}).snapshots
    assert asked and {s.instance_id for s in asked} == {waiting["instance_id"]}
    assert lab.call("GateFunction", busy)["start"] is True
    send_one_install(lab, run.run_id, busy["instance_id"])
    assert cancel_run(lab.store, run.run_id) is RunStatus.CANCELLING
    assert lab.call("SnapshotFunction", waiting)["phase"] == "done"  # NextKb cancels its KBs: none is installed
    assert len(lab.fleet.list_snapshots({TAG_RUN: run.run_id}).snapshots) == len(asked)  # asked once, never again
    assert not [key for key in lab.fleet.install_counts if key[0] == waiting["instance_id"]]


def test_ring_and_check_inputs_are_checked_at_the_edge() -> None:
    ring = {"action": "check", "position": 0, "round": 1, "members": ["i-0123456789abcdef0"]}
    good = {"run_id": "p-20260105-030000-abcdef", "ring": ring}
    assert RingTask.model_validate(good).ring.members == ["i-0123456789abcdef0"]
    for bad in (
        {"action": "reboot"},  # not an action of the fleet run's RunOpen
        ring | {"members": ["i-0123; Restart-Computer"]},
        ring | {"round": 3},
        ring | {"position": -1},
    ):
        with pytest.raises(ValidationError):
            RingTask.model_validate(good | {"ring": bad})
    check = {"run_id": good["run_id"], "instance_id": "mi-0123456789abcdef0", "position": 1, "step": {"phase": "sent"}}
    assert CheckTask.model_validate(check).position == 1
    with pytest.raises(ValidationError):
        CheckTask.model_validate(check | {"position": "first"})
