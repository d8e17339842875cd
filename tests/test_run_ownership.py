"""One driver per run: leases, server claims, take-over of a dead owner, cancel, across processes."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from autopatch.domain.identifiers import parse_build
from autopatch.domain.patching import KbState, RunStatus
from autopatch.domain.runs import RunItem, RunServer
from autopatch.engine.ownership import RunLease, new_owner_id, owner_is_dead
from autopatch.engine.planning import new_run, plan_run, start_run, store_plan
from autopatch.engine.report import instance_status
from autopatch.engine.runner import Engine
from autopatch.errors import ConflictError
from autopatch.fleet.simulator import FleetSimulator
from autopatch.fleet.simulator_model import load_ladders
from autopatch.scanning import discover_instances
from autopatch.store.sqlite import SqliteStore

from .test_engine import options


def started(store: SqliteStore, fleet: FleetSimulator) -> tuple[str, RunLease]:
    targets = discover_instances(fleet, store)
    run, lease = start_run(store, "patch", targets, {})
    store_plan(store, plan_run(store, fleet, targets, run=run))
    return run.run_id, lease


def test_a_second_run_on_held_servers_is_refused_naming_the_holder(lab: tuple[SqliteStore, FleetSimulator]) -> None:
    store, fleet = lab
    targets = discover_instances(fleet, store)
    run, _ = start_run(store, "patch", targets[:3], {})
    with pytest.raises(ConflictError, match=f"held by run {run.run_id}"):
        start_run(store, "patch", targets[2:5], {})
    # Other servers are free, and nothing of the refused run was stored.
    other, _ = start_run(store, "patch", targets[3:5], {})
    assert {r.run_id for r in store.list_runs()} == {run.run_id, other.run_id}


def test_a_live_lease_keeps_other_drivers_out_and_a_released_one_lets_them_in(
    lab: tuple[SqliteStore, FleetSimulator],
) -> None:
    store, fleet = lab
    run_id, lease = started(store, fleet)
    with lease:
        assert RunLease.claim(store, run_id) is None
        with pytest.raises(ConflictError, match="is being driven by"):
            Engine(store, fleet).execute(run_id, options())
    taken = RunLease.claim(store, run_id)
    assert taken is not None and store.get_run(run_id).owner == taken.owner


def test_an_expired_lease_is_taken_over_and_its_old_holder_notices(lab: tuple[SqliteStore, FleetSimulator]) -> None:
    store, fleet = lab
    run_id, lease = started(store, fleet)
    store.renew_lease(run_id, lease.owner, time.time() - 1)  # its process stalled past the lease
    newcomer = RunLease.claim(store, run_id)
    assert newcomer is not None
    assert store.renew_lease(run_id, lease.owner, time.time() + 30) is False


def test_a_dead_local_owner_is_replaced_at_once_and_a_live_one_is_not() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = f"{new_owner_id().split(':')[0]}:{child.pid}:abcd"
        assert not owner_is_dead(alive)
    finally:
        child.kill()
        child.wait()
    assert owner_is_dead(alive)
    assert not owner_is_dead("other-host:1:abcd") and not owner_is_dead(new_owner_id())


def test_cancel_moves_pending_kbs_at_once_and_lets_in_flight_installs_finish(
    lab: tuple[SqliteStore, FleetSimulator],
) -> None:
    store, fleet = lab
    run_id, lease = started(store, fleet)
    items = [i for i in store.run_items(run_id) if i.state is KbState.PENDING]
    assert len({i.instance_id for i in items}) >= 2
    busy = items[0]
    store.transition_item(run_id, busy.instance_id, busy.kb, KbState.IN_PROGRESS)  # an install in flight
    assert store.cancel_run(run_id, "cancelled by the operator") is RunStatus.CANCELLING
    states = {(i.instance_id, i.kb): i.state for i in store.run_items(run_id)}
    assert states[(busy.instance_id, busy.kb)] is KbState.IN_PROGRESS
    assert all(states[(i.instance_id, i.kb)] is KbState.CANCELLED for i in items[1:])
    idle = next(i.instance_id for i in items if i.instance_id != busy.instance_id)
    assert instance_status(store, idle)["kbs"][-1]["state"] == "Cancelled"
    servers = {s.instance_id: s.status for s in store.run_servers(run_id)}
    assert servers[idle] == "Cancelled" and servers[busy.instance_id] != "Cancelled"  # still held
    # The run's driver finishes the install in flight, then the run is Cancelled.
    with lease:
        assert Engine(store, fleet).execute(run_id, options(), lease) is RunStatus.CANCELLED
    finished = {(i.instance_id, i.kb): i.state for i in store.run_items(run_id)}
    assert finished[(busy.instance_id, busy.kb)] is KbState.SUCCESS
    assert fleet.install_counts == {(busy.instance_id, busy.kb): 1}


class CancelDuringInstall:
    """The simulator, with an operator running ``cancel`` while the first install is on its way."""

    def __init__(self, fleet: FleetSimulator, store: SqliteStore, run_id: str) -> None:
        self.fleet = fleet
        self.store = store
        self.run_id = run_id
        self.sent = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.fleet, name)

    def send_install(self, instance_id: str, kb: str, token: str | None = None) -> str:
        self.sent += 1
        if self.sent == 1:
            self.store.cancel_run(self.run_id, "cancelled by the operator")
        return self.fleet.send_install(instance_id, kb, token)


def test_a_cancel_racing_the_engine_cancels_what_had_not_started_and_fails_nothing(
    lab: tuple[SqliteStore, FleetSimulator],
) -> None:
    store, fleet = lab
    discover_instances(fleet, store)
    ladder = load_ladders(store, ["Windows Server 2022"])["Windows Server 2022"]
    server = min(fleet.servers, key=lambda s: parse_build(s.build))
    newer = [u for u in ladder.lcus if parse_build(u.fixed_build) > parse_build(server.build)][:3]
    assert len(newer) == 3
    owner = new_owner_id()
    run = new_run("patch", {}, owner=owner)
    items = [
        RunItem(run.run_id, server.instance_id, f"KB{u.kb}", n, KbState.PENDING, u.subtype, u.fixed_build, "No")
        for n, u in enumerate(newer)
    ]
    store.create_run(run, [RunServer(run.run_id, server.instance_id, server.name, server.product, server.build)], items)
    other = SqliteStore(store.path)  # the operator's own connection, as another process has
    racing = CancelDuringInstall(fleet, other, run.run_id)
    with RunLease(store, run.run_id, owner) as lease:
        status = Engine(store, racing).execute(run.run_id, options(concurrency=1), lease)  # type: ignore[arg-type]
    other.close()
    assert status is RunStatus.CANCELLED and racing.sent == 1
    assert [i.state for i in store.run_items(run.run_id)] == [KbState.SUCCESS, KbState.CANCELLED, KbState.CANCELLED]
    [held] = store.run_servers(run.run_id)
    assert held.status == "Cancelled" and sum(fleet.install_counts.values()) == 1
