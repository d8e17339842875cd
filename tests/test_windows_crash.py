"""A paused window run survives ``kill -9`` of the scheduler; the next window, or the next scheduler, finishes it.

The run is paused in-process (its window's clock moved past the cutoff while its first KB
installs); then real ``autopatch scheduler`` processes take over on the real clock, the window
redefined to be closed, then open, as a test cannot wait for next Saturday.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from autopatch.domain.patching import KbState, RunStatus
from autopatch.domain.windows import build_window
from autopatch.engine.scheduler import schedule_pass
from autopatch.fleet.simulator import FleetSimulator
from autopatch.store.sqlite import SqliteStore

from .conftest import configured_simulator
from .test_windows_scheduler import DriveNow, WindowClock

GROUP = "Environment=prod"  # two online servers of the CLI's simulated fleet with a KB to install each
SATURDAY = datetime(2024, 6, 1, 0, 0, tzinfo=UTC)


def scheduler(*arguments: str, scale: str = "2000") -> subprocess.Popen[bytes]:
    environment = os.environ | {"AUTOPATCH_SIMULATOR_TIME_SCALE": scale}
    return subprocess.Popen(
        [sys.executable, "-m", "autopatch.cli.app", "scheduler", *arguments],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def pause_a_window_run(db: Path) -> tuple[str, list[tuple[str, str]]]:
    """A run of window "prod" paused after its first KB; its id and the KBs left Pending."""
    store = SqliteStore(db)
    try:
        store.create_window(build_window("prod", "0 2 * * SAT", "4h", GROUP, "1h", "Europe/Berlin"))
        clock = WindowClock(SATURDAY + timedelta(minutes=1))

        def close_at_first_start(instance_id: str, kb: str, state: str, detail: str) -> None:
            if state == "InProgress":
                clock.now = SATURDAY + timedelta(hours=3, minutes=1)  # past the cutoff

        with configured_simulator() as fleet:
            [started] = schedule_pass(store, fleet, clock(), DriveNow(store, fleet, clock, close_at_first_start))
        assert started.action == "started" and started.run_id is not None
        run = store.get_run(started.run_id)
        assert (run.status, run.reason, run.owner) == (RunStatus.PAUSED, "Paused: window closed", None)
        left = [(i.instance_id, i.kb) for i in store.run_items(run.run_id) if i.state is KbState.PENDING]
        assert left and any(i.state is KbState.SUCCESS for i in store.run_items(run.run_id))
        return run.run_id, left
    finally:
        store.close()


def redefine(db: Path, cron: str, duration: str) -> None:
    store = SqliteStore(db)
    try:
        store.replace_window(build_window("prod", cron, duration, GROUP))
    finally:
        store.close()


def closed_now() -> str:
    """A daily cron twelve hours away: the window is surely closed for the next minutes."""
    later = datetime.now(UTC) + timedelta(hours=12)
    return f"{later.minute} {later.hour} * * *"


def wait_until(what: str, check: Callable[[], bool], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} did not happen within {seconds} s")


def run_state(db: Path, run_id: str) -> tuple[RunStatus, str | None, dict[tuple[str, str], KbState]]:
    store = SqliteStore(db)
    try:
        run = store.get_run(run_id)
        return run.status, run.owner, {(i.instance_id, i.kb): i.state for i in store.run_items(run_id)}
    finally:
        store.close()


def test_a_paused_run_outlives_a_killed_scheduler_and_is_finished_by_the_next_one_after_another_kill(
    env: Path,
) -> None:
    run_id, left = pause_a_window_run(env)
    before = run_state(env, run_id)

    # A scheduler looks at the closed window, and is killed: the paused run is as it was.
    redefine(env, closed_now(), "1m")
    idle = scheduler("--interval", "0.05")
    assert idle.stderr is not None and b"Scheduler:" in idle.stderr.readline()
    time.sleep(0.3)  # a few passes, each finding nothing due
    idle.send_signal(signal.SIGKILL)
    idle.wait()
    assert run_state(env, run_id) == before

    # The window opens; a scheduler continues the run and is killed while a KB is being installed.
    redefine(env, "* * * * *", "1h")
    busy = scheduler("--interval", "0.05", scale="200")  # a 600 s install takes 3 s here
    wait_until("an install under way", lambda: KbState.IN_PROGRESS in run_state(env, run_id)[2].values())
    busy.send_signal(signal.SIGKILL)
    busy.wait()
    status, owner, states = run_state(env, run_id)
    assert status is RunStatus.RUNNING and owner is not None  # the dead process's lease

    # The next scheduler takes the orphan over at once (its owner is dead) and finishes it.
    last = scheduler("--once", scale="20000")
    out, err = last.communicate(timeout=120)
    assert last.returncode == 0, err.decode()
    assert f"taken over {run_id}".encode() in out
    status, owner, states = run_state(env, run_id)
    assert (status, owner) == (RunStatus.FAILED, None)  # Failed only for the group's offline server
    assert all(states[key] is KbState.SUCCESS for key in left)
    store = SqliteStore(env)
    fleet = FleetSimulator(store, state_path=env.with_suffix(".simulator.db"))
    try:
        assert store.get_run(run_id).reason == "1 server(s) not patched (1 offline)"
        installed = [key for key, state in states.items() if state is KbState.SUCCESS]
        assert all(fleet.install_counts[key] == 1 for key in installed), fleet.install_counts
        assert [run.run_id for run in store.list_runs()] == [run_id]
    finally:
        fleet.close()
        store.close()
