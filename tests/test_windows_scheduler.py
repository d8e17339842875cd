"""Maintenance windows driving runs on the simulator: a window closing mid-run, the next one finishing it.

The window is read against a clock the test moves: it jumps past the cutoff at a chosen moment of
the run (when a given KB starts), so which KBs may start and which must wait is exact, whatever
the machine's speed. The simulated fleet itself runs as in the engine tests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from autopatch.domain.baselines import Baseline
from autopatch.domain.patching import KbState, RunStatus
from autopatch.domain.windows import MaintenanceWindow, build_window
from autopatch.engine.driving import plan_if_unplanned
from autopatch.engine.options import RunOptions
from autopatch.engine.ownership import RunLease
from autopatch.engine.runner import Engine
from autopatch.engine.scheduler import LocalScheduler, ScheduledAction, schedule_pass
from autopatch.fleet.simulator import FleetSimulator
from autopatch.store.base import Store
from autopatch.store.sqlite import SqliteStore

from .test_engine import FAST

SATURDAY = datetime(2024, 6, 1, 0, 0, tzinfo=UTC)  # 02:00 in Berlin (summer time)
ALL_SERVERS = "OS=Windows Server 2022"  # the lab fleet's tag


class WindowClock:
    """The wall clock a window is read against: still, until the test moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def saturday_window(store: Store, **changes: str) -> MaintenanceWindow:
    values = {
        "name": "saturday",
        "cron": "0 2 * * SAT",
        "duration": "4h",
        "cutoff": "1h",
        "group": ALL_SERVERS,
        "timezone": "Europe/Berlin",
        "baseline": "monthly",
    }
    window = build_window(**(values | changes))
    if window.baseline and store.get_baseline(window.baseline) is None:
        store.create_baseline(Baseline(window.baseline))
    return store.create_window(window)


class DriveNow:
    """A launcher that drives each run until it stops, one server at a time, before the pass goes on."""

    def __init__(
        self,
        store: Store,
        fleet: FleetSimulator,
        clock: WindowClock,
        on_event: Callable[[str, str, str, str], None] | None = None,
    ) -> None:
        self.store, self.fleet, self.clock, self.on_event = store, fleet, clock, on_event
        self.statuses: list[RunStatus] = []

    def __call__(self, lease: RunLease, why: str) -> None:
        try:
            plan_if_unplanned(self.store, self.fleet, self.store.get_run(lease.run_id))
            stored = RunOptions.from_dict(self.store.get_run(lease.run_id).options)
            options = replace(stored, concurrency=1, poll=FAST, install_timeout=5.0, reboot_timeout=5.0)
            engine = Engine(self.store, self.fleet, on_event=self.on_event, wall_clock=self.clock)
            self.statuses.append(engine.execute(lease.run_id, options, lease))
        finally:
            lease.release()


def kb_states(store: Store, run_id: str) -> dict[tuple[str, str], KbState]:
    return {(item.instance_id, item.kb): item.state for item in store.run_items(run_id)}


def test_a_window_closing_mid_run_pauses_it_and_the_next_window_finishes_it_installing_each_kb_once(
    lab: tuple[SqliteStore, FleetSimulator],
) -> None:
    store, fleet = lab
    window = saturday_window(store)
    clock = WindowClock(SATURDAY + timedelta(minutes=1))
    cutoff = SATURDAY + timedelta(hours=3)
    started: dict[tuple[str, str], datetime] = {}

    def on_event(instance_id: str, kb: str, state: str, detail: str) -> None:
        if state == "InProgress":
            started[(instance_id, kb)] = clock()
            if len(started) == 2:  # the cutoff passes while this second KB is being installed
                clock.now = cutoff + timedelta(minutes=1)

    launch = DriveNow(store, fleet, clock, on_event)
    [action] = schedule_pass(store, fleet, clock(), launch)
    assert (action.window, action.action, action.starts_at) == ("saturday", "started", SATURDAY.isoformat())
    run_id = action.run_id
    assert run_id is not None and launch.statuses == [RunStatus.PAUSED]

    run = store.get_run(run_id)
    assert (run.status, run.reason, run.owner, run.finished_at) == (
        RunStatus.PAUSED,
        "Paused: window closed",
        None,
        None,
    )
    assert run.options["window"] == "saturday" and run.options["baseline"] == "monthly"
    assert run.options["window_cutoff"] == cutoff.isoformat()
    first = kb_states(store, run_id)
    pending_before = [key for key, state in first.items() if state is KbState.PENDING]
    # The two KBs started before the cutoff finished (the second one although the cutoff passed
    # during its install: never cut half-way); no other KB started after it.
    assert sorted(key for key, state in first.items() if state is KbState.SUCCESS) == sorted(started)
    assert all(at < cutoff for at in started.values())
    assert KbState.IN_PROGRESS not in first.values() and len(pending_before) >= 2
    waiting = {instance_id for instance_id, _ in pending_before}
    assert all(s.status in ("Pending", "Running") for s in store.run_servers(run_id) if s.instance_id in waiting)
    assert store.run_holding(next(iter(waiting))) == run_id  # the paused run keeps its servers

    # Later that night, and on Sunday: the window accepts no new KB, nothing happens.
    for later in (cutoff + timedelta(minutes=30), SATURDAY + timedelta(days=1)):
        clock.now = later
        assert schedule_pass(store, fleet, later, launch) == []
    assert store.get_run(run_id).status is RunStatus.PAUSED and launch.statuses == [RunStatus.PAUSED]

    # The next Saturday at 02:00: the same run continues and finishes.
    clock.now = SATURDAY + timedelta(days=7, minutes=2)
    [resumed] = schedule_pass(store, fleet, clock(), launch)
    assert (resumed.action, resumed.run_id) == ("resumed", run_id)
    assert launch.statuses == [RunStatus.PAUSED, RunStatus.SUCCEEDED]
    final = store.get_run(run_id)
    assert (final.status, final.reason) == (RunStatus.SUCCEEDED, "")
    assert final.options["window_cutoff"] == (cutoff + timedelta(days=7)).isoformat()
    states = kb_states(store, run_id)
    assert all(states[key] is KbState.SUCCESS for key in pending_before)
    installed = [key for key, state in states.items() if state is KbState.SUCCESS]
    assert installed and all(fleet.install_counts[key] == 1 for key in installed)
    assert [run.run_id for run in store.list_runs()] == [run_id]
    assert [(r.starts_at, r.run_id) for r in store.window_occurrences(window.name)] == [
        ((SATURDAY + timedelta(days=7)).isoformat(), run_id),
        (SATURDAY.isoformat(), run_id),
    ]


def test_two_schedulers_on_one_store_start_an_occurrence_once(
    lab: tuple[SqliteStore, FleetSimulator], tmp_path: Path
) -> None:
    store, fleet = lab
    saturday_window(store)
    at = SATURDAY + timedelta(minutes=5)
    barrier = threading.Barrier(2)
    actions: list[ScheduledAction] = []
    launched: list[str] = []

    def scheduler() -> None:
        handle = SqliteStore(tmp_path / "runs.db")  # another process's connection
        try:

            def launch(lease: RunLease, why: str) -> None:
                launched.append(lease.run_id)  # driven elsewhere; this test only counts

            barrier.wait()
            actions.extend(schedule_pass(handle, fleet, at, launch))
        finally:
            handle.close()

    threads = [threading.Thread(target=scheduler) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    [started] = [a for a in actions if a.action == "started"]
    assert launched == [started.run_id] and [r.run_id for r in store.list_runs()] == [started.run_id]
    [record] = store.window_occurrences("saturday")
    assert record.run_id == started.run_id


def test_a_group_with_no_server_skips_the_occurrence_and_says_why(lab: tuple[SqliteStore, FleetSimulator]) -> None:
    store, fleet = lab
    saturday_window(store, group="PatchGroup=nobody")
    [skipped] = schedule_pass(store, fleet, SATURDAY, lambda lease, why: None)
    assert skipped.action == "skipped" and skipped.run_id is None and "PatchGroup" in skipped.detail
    [record] = store.window_occurrences("saturday")
    assert record.run_id is None and "PatchGroup" in record.note
    assert store.list_runs() == []
    assert schedule_pass(store, fleet, SATURDAY + timedelta(minutes=1), lambda lease, why: None) == []


def test_the_local_scheduler_drives_a_due_window_on_its_threads_to_the_end(
    lab: tuple[SqliteStore, FleetSimulator], tmp_path: Path
) -> None:
    store, fleet = lab
    saturday_window(store)
    scheduler = LocalScheduler(
        lambda: SqliteStore(tmp_path / "runs.db"),
        lambda _: fleet,
        lambda _: [],
        clock=WindowClock(SATURDAY + timedelta(minutes=1)),
        poll=FAST,
    )
    try:
        [action] = scheduler.run_pass()
        scheduler.wait()
    finally:
        scheduler.shutdown()
    assert action.action == "started" and action.run_id is not None
    run = store.get_run(action.run_id)
    assert run.status is RunStatus.SUCCEEDED and run.owner is None
    assert KbState.PENDING not in kb_states(store, action.run_id).values()
