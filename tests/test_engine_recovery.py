"""Crashes and store trouble in the middle of a run: nothing is lost, counted twice or marked Failed wrongly."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

import autopatch.store.sqlite as sqlite_module
from autopatch.domain.patching import KbState, RunStatus
from autopatch.engine.planning import plan_run, store_plan
from autopatch.engine.runner import Engine
from autopatch.errors import ExecutionError, StoreError
from autopatch.fleet.simulator import FleetSimulator
from autopatch.scanning import discover_instances
from autopatch.store.sqlite import SqliteStore

from .test_engine import options


class Crash(BaseException):
    """The orchestrator dies here (kill -9): no handler of ours runs."""


class CrashingFleet:
    """The simulator, with the orchestrator dying around its reboot call."""

    def __init__(self, fleet: FleetSimulator, before: bool) -> None:
        self.fleet = fleet
        self.before = before
        self.reboots = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fleet, name)

    def reboot(self, instance_id: str) -> None:
        if not self.before:
            self.fleet.reboot(instance_id)
            self.reboots += 1
        raise Crash


def one_server_run(store: SqliteStore, fleet: FleetSimulator) -> tuple[str, str, str]:
    targets = discover_instances(fleet, store)
    plan = plan_run(store, fleet, targets)
    target = next(s.instance_id for s in plan.servers if len(plan.pending(s.instance_id)) == 1)
    plan.items = [i for i in plan.items if i.instance_id == target]
    plan.servers = [s for s in plan.servers if s.instance_id == target]
    store_plan(store, plan)
    return plan.run.run_id, target, plan.pending(target)[0].kb


@pytest.mark.parametrize("before", [True, False], ids=["killed-before-the-reboot", "killed-after-the-reboot"])
def test_a_kill_around_the_reboot_call_reboots_exactly_once_on_resume(
    lab: tuple[SqliteStore, FleetSimulator], before: bool
) -> None:
    store, fleet = lab
    run_id, target, kb = one_server_run(store, fleet)
    crashing = CrashingFleet(fleet, before)
    with pytest.raises(Crash):
        Engine(store, crashing).execute(run_id, options())  # type: ignore[arg-type]
    [attempt] = store.attempts(run_id, target, kb)
    assert attempt.phase == "reboot-pending"
    server = fleet.server(target)
    if before:  # the kill left it unrebooted
        assert server.pending_reboot and server.rebooting_until is None
    else:  # restarting, or (time runs fast here) restarted already
        assert server.rebooting_until is not None or not server.pending_reboot
    assert Engine(store, fleet).execute(run_id, options()) is RunStatus.SUCCEEDED
    assert not fleet.server(target).pending_reboot
    [server] = store.run_servers(run_id)
    assert server.reboots == 1
    assert fleet.install_counts == {(target, kb): 1}
    assert {i.kb: i.state for i in store.run_items(run_id)}[kb] is KbState.SUCCESS


class FailingStore:
    """The real store, failing the write that records an install's result (a full disk, a lost mount)."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def update_attempt(self, *args: Any, **fields: Any) -> None:
        if fields.get("phase") == "done":
            raise StoreError("database write failed: disk I/O error")
        self.store.update_attempt(*args, **fields)


def test_a_store_failure_after_an_install_never_marks_the_kb_failed(lab: tuple[SqliteStore, FleetSimulator]) -> None:
    store, fleet = lab
    run_id, target, kb = one_server_run(store, fleet)
    with pytest.raises(ExecutionError, match="left unfinished"):
        Engine(FailingStore(store), fleet).execute(run_id, options())  # type: ignore[arg-type]
    assert {i.kb: i.state for i in store.run_items(run_id)}[kb] is KbState.IN_PROGRESS
    assert store.get_run(run_id).status is RunStatus.RUNNING
    assert store.get_run(run_id).owner is None  # released: resume may take it at once
    assert Engine(store, fleet).execute(run_id, options()) is RunStatus.SUCCEEDED
    assert {i.kb: i.state for i in store.run_items(run_id)}[kb] is KbState.SUCCESS
    assert fleet.install_counts == {(target, kb): 1}


def test_a_write_waits_for_another_process_holding_the_database(
    lab: tuple[SqliteStore, FleetSimulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, fleet = lab
    run_id, target, kb = one_server_run(store, fleet)
    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT_SECONDS", 0.1)  # SQLite's own wait gives up quickly
    waiting = SqliteStore(store.path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "db.execute('BEGIN IMMEDIATE')\nprint('locked', flush=True)\ntime.sleep(1.5)\ndb.execute('COMMIT')",
            store.path,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        waiting.transition_item(run_id, target, kb, KbState.IN_PROGRESS, "waited for the lock")
    finally:
        holder.wait()
        waiting.close()
    assert {i.kb: i.state for i in store.run_items(run_id)}[kb] is KbState.IN_PROGRESS
