"""Snapshots before patching, on the simulator: taken once per server before its first KB, waited for
until started, recorded with their ids; a failing snapshot skips its server, the others patch."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from autopatch.domain.patching import KbState, RunStatus
from autopatch.domain.polling import PollPolicy
from autopatch.domain.snapshots import TAG_RUN, TAG_TOKEN, SnapshotPhase, SnapshotState, snapshot_tags
from autopatch.engine.options import RunOptions
from autopatch.engine.planning import RunPlan, plan_run, store_plan
from autopatch.engine.report import build_summary, run_view
from autopatch.engine.runner import Engine
from autopatch.engine.snapshots import advance_snapshot
from autopatch.errors import DeliveryUncertainError, NotFoundError, TransientError
from autopatch.fleet.simulator import FleetSimulator, ManualClock, SimulatorConfig
from autopatch.scanning import discover_instances
from autopatch.store.base import now
from autopatch.store.sqlite import SqliteStore

FAST = PollPolicy(first_delay=0.001, factor=1.5, max_delay=0.01, timeout=5.0)


def options(**overrides: object) -> RunOptions:
    values: dict[str, object] = {
        "concurrency": 3,
        "poll": FAST,
        "reboot_timeout": 2.0,
        "install_timeout": 2.0,
        "snapshot": True,
    }
    values.update(overrides)
    return RunOptions(**values)  # type: ignore[arg-type]


def planned(store: SqliteStore, fleet: Any) -> RunPlan:
    targets = discover_instances(fleet, store)
    plan = plan_run(store, fleet, targets, options={"snapshot": True})
    store_plan(store, plan)
    return plan


def with_work(plan: RunPlan) -> list[str]:
    return [s.instance_id for s in plan.servers if plan.pending(s.instance_id)]


def reopened(fleet: FleetSimulator, tmp_path: Path, catalog_db: Path, **changes: Any) -> FleetSimulator:
    """The lab's fleet reopened with other snapshot settings (timings and faults may change, not the shape)."""
    config = fleet.config.model_copy(update=changes)
    fleet.close()
    return FleetSimulator(SqliteStore(catalog_db), config, state_path=tmp_path / "fleet.db")


class Throttled:
    """The simulator, but CreateSnapshots is throttled ``times`` times first (nothing created then)."""

    def __init__(self, fleet: FleetSimulator, times: int) -> None:
        self.fleet = fleet
        self.left = times
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fleet, name)

    def create_snapshots(self, instance_id: str, tags: dict[str, str]) -> Any:
        self.calls += 1
        if self.left > 0:
            self.left -= 1
            raise TransientError("RequestLimitExceeded: slow down")
        return self.fleet.create_snapshots(instance_id, tags)


class LostAnswer:
    """CreateSnapshots goes through, but its answer is lost on the way back (a read timeout)."""

    def __init__(self, fleet: FleetSimulator) -> None:
        self.fleet = fleet

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fleet, name)

    def create_snapshots(self, instance_id: str, tags: dict[str, str]) -> Any:
        self.fleet.create_snapshots(instance_id, tags)
        raise DeliveryUncertainError("no answer after the request left: look them up")


def test_each_server_with_work_is_snapshotted_once_before_its_first_kb(
    lab: tuple[SqliteStore, FleetSimulator],
) -> None:
    store, fleet = lab
    plan = planned(store, fleet)
    targets = with_work(plan)
    assert targets
    events: list[tuple[str, str, str]] = []

    def on_event(instance_id: str, kb: str, state: str, detail: str) -> None:
        events.append((instance_id, kb, state))

    engine = Engine(store, fleet, on_event=on_event)
    assert engine.execute(plan.run.run_id, options()) is RunStatus.SUCCEEDED

    assert fleet.snapshot_requests == dict.fromkeys(sorted(targets), 1)
    records = {record.instance_id: record for record in store.run_snapshots(plan.run.run_id)}
    assert sorted(records) == sorted(targets)
    ours = fleet.list_snapshots({TAG_RUN: plan.run.run_id}).snapshots
    assert {s.snapshot_id for s in ours} == {i for r in records.values() for i in r.snapshot_ids}
    for instance_id, record in records.items():
        assert record.phase is SnapshotPhase.STARTED and record.started_at is not None
        assert any(volume.root for volume in record.volumes)
        # The snapshot started before the first install was sent to that server.
        server_events = [state for target, _, state in events if target == instance_id]
        assert server_events.index("snapshot") < server_events.index("sending")
        # Stamped to the millisecond: the first send may share the snapshot's millisecond, never precede it.
        assert record.started_at <= min(a.sent_at or "~" for a in store.attempts(plan.run.run_id, instance_id))
    view = run_view(store, plan.run.run_id)
    shown = {server["instance_id"]: server["snapshot"] for server in view["servers"]}
    first = shown[targets[0]]
    assert first["phase"] == "started" and first["snapshot_ids"] == records[targets[0]].snapshot_ids
    assert any(
        f"create-replace-root-volume-task --instance-id {targets[0]} --snapshot-id" in hint
        for hint in first["rollback"]
    )
    assert all(shown[s.instance_id] is None for s in plan.servers if s.instance_id not in targets)


def test_a_failing_snapshot_skips_its_server_with_the_reason_while_the_others_patch(
    lab: tuple[SqliteStore, FleetSimulator], tmp_path: Path, catalog_db: Path
) -> None:
    store, fleet = lab
    plan = planned(store, fleet)
    broken, *others = with_work(plan)
    fleet = reopened(fleet, tmp_path, catalog_db, snapshot_failing_servers=[broken])
    try:
        assert Engine(store, fleet).execute(plan.run.run_id, options()) is RunStatus.FAILED
        server = store.run_server(plan.run.run_id, broken)
        assert server.status == "Skipped"
        assert server.reason.startswith("snapshot failed: snapshot snap-") and "is in state error" in server.reason
        left = {item.state for item in store.run_items(plan.run.run_id, broken)}
        assert KbState.PENDING in left and not left & {KbState.IN_PROGRESS, KbState.SUCCESS, KbState.FAILED}
        assert not [key for key in fleet.install_counts if key[0] == broken]
        for instance_id in others:
            assert store.run_server(plan.run.run_id, instance_id).status == "Done"
        run = store.get_run(plan.run.run_id)
        assert "1 server(s) not patched (1 snapshot failed: snapshot snap-" in run.reason
        summary = {s.instance_id: s for s in build_summary(store, plan.run.run_id).servers}
        assert summary[broken].status == "Skipped" and summary[broken].reason == server.reason
        view = {s["instance_id"]: s["snapshot"] for s in run_view(store, plan.run.run_id)["servers"]}
        assert view[broken]["phase"] == "failed" and view[broken]["rollback"] == []
    finally:
        fleet.close()


def test_a_snapshot_that_never_starts_skips_its_server_after_the_timeout(
    lab: tuple[SqliteStore, FleetSimulator], tmp_path: Path, catalog_db: Path
) -> None:
    store, fleet = lab
    plan = planned(store, fleet)
    fleet = reopened(fleet, tmp_path, catalog_db, snapshot_start_seconds=1e12)
    try:
        status = Engine(store, fleet).execute(plan.run.run_id, options(snapshot_timeout=0.05))
        assert status is RunStatus.FAILED
        for instance_id in with_work(plan):
            server = store.run_server(plan.run.run_id, instance_id)
            assert server.status == "Skipped"
            assert "did not start within 0 s" in server.reason
        assert fleet.install_counts == {}
    finally:
        fleet.close()


def test_a_throttled_ask_is_retried_until_it_goes_through(
    lab: tuple[SqliteStore, FleetSimulator],
) -> None:
    store, fleet = lab
    plan = planned(store, fleet)
    throttled = Throttled(fleet, times=2)
    engine = Engine(store, throttled)  # type: ignore[arg-type]
    assert engine.execute(plan.run.run_id, options(concurrency=1, transient_retries=3)) is RunStatus.SUCCEEDED
    assert throttled.calls == len(with_work(plan)) + 2
    assert set(fleet.snapshot_requests.values()) == {1}


def test_an_ask_throttled_more_often_than_the_transient_retries_skips_the_server(
    lab: tuple[SqliteStore, FleetSimulator],
) -> None:
    store, fleet = lab
    plan = planned(store, fleet)
    never = Throttled(fleet, times=1000)
    status = Engine(store, never).execute(plan.run.run_id, options(transient_retries=2))  # type: ignore[arg-type]
    assert status is RunStatus.FAILED
    for instance_id in with_work(plan):
        reason = store.run_server(plan.run.run_id, instance_id).reason
        assert reason.startswith("snapshot failed: gave up after 3 tries: RequestLimitExceeded")
    assert never.calls == 3 * len(with_work(plan)) and fleet.snapshot_requests == {}


def test_an_ask_whose_answer_was_lost_is_found_by_its_token_not_asked_again(
    lab: tuple[SqliteStore, FleetSimulator],
) -> None:
    store, fleet = lab
    plan = planned(store, fleet)
    target = with_work(plan)[0]
    run_id = plan.run.run_id
    store.update_server(run_id, target, status="Running", started_at=now())
    progress = advance_snapshot(store, LostAnswer(fleet), run_id, target, options())  # type: ignore[arg-type]
    assert progress.record.phase is SnapshotPhase.ASKING and progress.retry_after
    progress = advance_snapshot(store, fleet, run_id, target, options())
    assert progress.record.phase is SnapshotPhase.REQUESTED and progress.record.volumes
    assert fleet.snapshot_requests == {target: 1}


def test_a_driver_killed_between_asking_and_recording_is_resumed_without_a_second_snapshot(
    lab: tuple[SqliteStore, FleetSimulator],
) -> None:
    store, fleet = lab
    plan = planned(store, fleet)
    targets = with_work(plan)
    run_id = plan.run.run_id
    # What a driver killed right after CreateSnapshots left: the intent stored, the snapshots taken.
    store.update_server(run_id, targets[0], status="Running", started_at=now())
    record = store.begin_snapshot(run_id, targets[0], "f" * 32, now())
    fleet.create_snapshots(targets[0], snapshot_tags(run_id, targets[0], record.token))
    assert Engine(store, fleet).execute(run_id, options()) is RunStatus.SUCCEEDED
    assert fleet.snapshot_requests == dict.fromkeys(sorted(targets), 1)
    resumed = store.run_snapshot(run_id, targets[0])
    assert resumed is not None and resumed.phase is SnapshotPhase.STARTED
    assert resumed.snapshot_ids == [s.snapshot_id for s in fleet.list_snapshots({TAG_TOKEN: "f" * 32}).snapshots]


def test_an_unanswered_ask_with_no_snapshot_is_asked_again_once_the_lookup_window_passed(
    lab: tuple[SqliteStore, FleetSimulator],
) -> None:
    store, fleet = lab
    plan = planned(store, fleet)
    target = with_work(plan)[0]
    run_id = plan.run.run_id
    store.update_server(run_id, target, status="Running", started_at=now())
    store.begin_snapshot(run_id, target, "a" * 32, now())  # killed before the call went out
    early = advance_snapshot(store, fleet, run_id, target, options())
    assert early.record.phase is SnapshotPhase.ASKING and early.retry_after  # EC2 may not list it yet
    assert fleet.snapshot_requests == {}
    long_ago = (datetime.now(UTC) - timedelta(seconds=60)).isoformat()
    store.update_snapshot(run_id, target, asked_at=long_ago)
    late = advance_snapshot(store, fleet, run_id, target, options())
    assert late.record.phase is SnapshotPhase.RETRY and late.record.tries == 1
    asked = advance_snapshot(store, fleet, run_id, target, options())
    assert asked.record.phase is SnapshotPhase.REQUESTED
    assert fleet.snapshot_requests == {target: 1}


def test_snapshots_are_not_taken_without_the_option_nor_for_servers_with_nothing_to_install(
    lab: tuple[SqliteStore, FleetSimulator],
) -> None:
    store, fleet = lab
    plan = planned(store, fleet)
    assert Engine(store, fleet).execute(plan.run.run_id, options(snapshot=False)) is RunStatus.SUCCEEDED
    assert fleet.snapshot_requests == {} and store.run_snapshots(plan.run.run_id) == []


def test_the_simulated_snapshot_goes_requested_pending_completed_on_its_clock(catalog_db: Path, tmp_path: Path) -> None:
    clock = ManualClock()
    config = SimulatorConfig(
        servers=2, seed=3, offline_fraction=0.0, products=["Windows Server 2022"], core_fraction=0.0
    )
    catalog = SqliteStore(catalog_db)
    with FleetSimulator(catalog, config, state_path=tmp_path / "f.db", clock=clock) as fleet:
        instance_id = fleet.list_instances()[0].instance_id
        taken = fleet.create_snapshots(instance_id, {"Team": "db"})
        ids = [s.snapshot_id for s in taken]
        assert {s.state for s in taken} == {SnapshotState.REQUESTED}
        assert sum(s.root for s in taken) == 1
        clock.advance(config.snapshot_start_seconds)
        assert set(fleet.snapshot_states(ids).values()) == {SnapshotState.PENDING}
        clock.advance(config.snapshot_seconds)
        assert set(fleet.snapshot_states(ids).values()) == {SnapshotState.COMPLETED}
        listed = fleet.list_snapshots({"Team": None})
        assert listed.age(listed.snapshots[0]) == timedelta(
            seconds=config.snapshot_start_seconds + config.snapshot_seconds
        )
        fleet.delete_snapshot(ids[0])
        assert ids[0] not in fleet.snapshot_states(ids)
        with pytest.raises(NotFoundError):
            fleet.delete_snapshot(ids[0])
    catalog.close()


def test_a_version_2_state_file_gains_the_snapshots_table(catalog_db: Path, tmp_path: Path) -> None:
    state = tmp_path / "fleet.db"
    config = SimulatorConfig(servers=1, seed=3, offline_fraction=0.0, products=["Windows Server 2022"])
    catalog = SqliteStore(catalog_db)
    with FleetSimulator(catalog, config, state_path=state) as first:
        instance_id = first.list_instances()[0].instance_id
    with sqlite3.connect(state) as db:  # what the simulator wrote before snapshots existed
        db.execute("DROP TABLE snapshots")
        db.execute("PRAGMA user_version = 2")
    db.close()
    with FleetSimulator(catalog, state_path=state) as second:
        taken = second.create_snapshots(instance_id, {"Team": "db"})
        assert second.snapshot_requests == {instance_id: 1} and taken
    catalog.close()
