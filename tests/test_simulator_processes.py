"""The simulator shared by several processes: one fleet, one install count, one command-id sequence.

The guarantee "a KB is never installed twice" is checked by counting installs in the simulator,
while a `patch` and a `resume` may drive the same state file at the same moment. These tests run
real processes (spawned, so nothing is inherited but the arguments) against one state file.
"""

from __future__ import annotations

import multiprocessing
import queue
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest

from autopatch.domain.fleet import CommandStatus
from autopatch.errors import StoreError
from autopatch.fleet import simulator_state
from autopatch.fleet.simulator import FleetSimulator, ManualClock, SimulatorConfig
from autopatch.store.sqlite import SqliteStore

NEWEST_WS2022_LCU = "KB5070884"  # 10.0.20348.4297
KBS = (NEWEST_WS2022_LCU, "KB5034770")
SMALL_FLEET = SimulatorConfig(
    servers=5,
    seed=3,
    offline_fraction=0.0,
    failure_rate=0.0,
    time_scale=100_000.0,
    products=["Windows Server 2022"],
    core_fraction=0.0,
)
SPAWN = multiprocessing.get_context("spawn")


def _report(results: Queue[tuple[str, Any]], work: Callable[[], Any], start: Barrier | None = None) -> None:
    """Run one process's work and send back its result, or the traceback that stopped it."""
    try:
        results.put(("ok", work()))
    except BaseException:
        if start is not None:
            start.abort()  # the others fail fast instead of waiting at the barrier for this one
        results.put(("error", traceback.format_exc()))


def _send_installs(
    catalog_db: str, state: str, instance_ids: list[str], rounds: int, start: Barrier, results: Queue[tuple[str, Any]]
) -> None:
    def work() -> list[str]:
        catalog = SqliteStore(catalog_db)
        with FleetSimulator(catalog, state_path=state) as fleet:
            start.wait(timeout=60)
            command_ids = []
            for _ in range(rounds):
                for instance_id in instance_ids:
                    for kb in KBS:
                        command_ids.append(fleet.send_install(instance_id, kb))
                        fleet.get_command(instance_id, command_ids[-1])  # polls interleave with the others' sends
        catalog.close()
        return command_ids

    _report(results, work, start)


def _open_fresh(catalog_db: str, states: list[str], start: Barrier, results: Queue[tuple[str, Any]]) -> None:
    def work() -> list[list[str]]:
        catalog = SqliteStore(catalog_db)
        fleets = []
        for state in states:  # one race per file: a single race can happen to come out right
            start.wait(timeout=60)
            with FleetSimulator(catalog, SMALL_FLEET, state_path=state) as fleet:
                fleets.append([server.instance_id for server in fleet.servers])
        catalog.close()
        return fleets

    _report(results, work, start)


def _send_one_install(
    catalog_db: str, state: str, instance_id: str, token: str, results: Queue[tuple[str, Any]]
) -> None:
    def work() -> str:
        catalog = SqliteStore(catalog_db)
        with FleetSimulator(catalog, state_path=state) as fleet:
            command_id = fleet.send_install(instance_id, NEWEST_WS2022_LCU, token)
        catalog.close()
        return command_id

    _report(results, work)


def run_processes(target: Callable[..., None], argument_lists: list[tuple[Any, ...]]) -> list[Any]:
    """Start one spawned process per argument list; return their results in the same order."""
    results: list[Queue[tuple[str, Any]]] = [SPAWN.Queue() for _ in argument_lists]
    processes = [
        SPAWN.Process(target=target, args=(*arguments, channel))
        for arguments, channel in zip(argument_lists, results, strict=True)
    ]
    for process in processes:
        process.start()
    try:
        # Read before join (a full pipe blocks a child's exit), and notice a child that died before
        # it could report (an import error) instead of waiting out the timeout.
        outcomes = [_result_of(process, channel) for process, channel in zip(processes, results, strict=True)]
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    errors = [detail for status, detail in outcomes if status != "ok"]
    assert not errors, "\n".join(errors)
    return [detail for _, detail in outcomes]


def _result_of(process: BaseProcess, results: Queue[tuple[str, Any]]) -> tuple[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            return results.get(timeout=0.1)
        except queue.Empty:
            if process.exitcode is not None and results.empty():
                return ("error", f"process {process.pid} exited with {process.exitcode} before reporting")
    return ("error", f"process {process.pid} did not report within 60 s")


def test_installs_from_three_processes_are_all_counted_and_get_distinct_command_ids(
    catalog_db: Path, catalog: SqliteStore, tmp_path: Path
) -> None:
    state = tmp_path / "fleet.db"
    with FleetSimulator(catalog, SMALL_FLEET, state_path=state) as fleet:
        instance_ids = [server.instance_id for server in fleet.servers][:4]
    start = SPAWN.Barrier(3)
    rounds = 5
    sent = run_processes(_send_installs, [(str(catalog_db), str(state), instance_ids, rounds, start)] * 3)

    command_ids = [command_id for process_ids in sent for command_id in process_ids]
    assert len(command_ids) == 3 * rounds * len(instance_ids) * len(KBS)
    assert len(set(command_ids)) == len(command_ids), "two processes issued the same command id"
    with FleetSimulator(catalog, state_path=state) as fleet:
        expected = {(instance_id, kb): 3 * rounds for instance_id in instance_ids for kb in KBS}
        assert fleet.install_counts == expected
        # Every command is in the shared file, whichever process sent it.
        for process_ids in sent:
            for index, command_id in enumerate(process_ids[: len(instance_ids) * len(KBS)]):
                instance_id = instance_ids[index // len(KBS)]
                assert fleet.get_command(instance_id, command_id).status.is_terminal


def test_processes_opening_a_fresh_state_file_at_once_build_one_fleet(
    catalog_db: Path, catalog: SqliteStore, tmp_path: Path
) -> None:
    states = [str(tmp_path / f"fresh-{index}.db") for index in range(5)]
    start = SPAWN.Barrier(4)
    seen = run_processes(_open_fresh, [(str(catalog_db), states, start)] * 4)

    for index, state in enumerate(states):
        fleets = [process_fleets[index] for process_fleets in seen]
        assert len(fleets[0]) == SMALL_FLEET.servers
        assert all(instance_ids == fleets[0] for instance_ids in fleets)
        with FleetSimulator(catalog, state_path=state) as fleet:
            assert [server.instance_id for server in fleet.servers] == fleets[0]
            assert fleet.config == SMALL_FLEET and fleet.install_counts == {}


def test_a_command_sent_by_one_process_is_found_polled_and_completed_by_another(
    catalog_db: Path, catalog: SqliteStore, tmp_path: Path
) -> None:
    state = tmp_path / "fleet.db"
    config = SMALL_FLEET.model_copy(update={"time_scale": 1000.0})
    with FleetSimulator(catalog, config, state_path=state) as watcher:
        server = next(s for s in watcher.servers if s.build != "10.0.20348.4297")
        watcher.set_install_seconds(server.instance_id, 2000.0)  # 2 real seconds: time for the spawn to report
        token = f"run-1/{server.instance_id}/{NEWEST_WS2022_LCU}/1"
        assert watcher.find_command(server.instance_id, token) is None
        # The watcher is open before the other process sends: it must read the file, not a snapshot.
        [command_id] = run_processes(_send_one_install, [(str(catalog_db), str(state), server.instance_id, token)])

        assert watcher.find_command(server.instance_id, token) == command_id
        assert watcher.get_command(server.instance_id, command_id).status is CommandStatus.IN_PROGRESS
        left = watcher.expected_completion(server.instance_id, command_id)
        assert left is not None and 0 < left <= 2.01
        time.sleep(left)
        invocation = watcher.get_command(server.instance_id, command_id)
        assert invocation.status is CommandStatus.SUCCESS and invocation.exit_code == 0
        assert watcher.server(server.instance_id).build == "10.0.20348.4297"
        assert watcher.install_counts == {(server.instance_id, NEWEST_WS2022_LCU): 1}


def test_threads_on_two_simulators_of_one_file_count_every_install(catalog: SqliteStore, tmp_path: Path) -> None:
    state = tmp_path / "fleet.db"
    first = FleetSimulator(catalog, SMALL_FLEET, state_path=state)
    second = FleetSimulator(catalog, state_path=state)
    instance_ids = [server.instance_id for server in first.servers]
    command_ids: list[str] = []
    lock = threading.Lock()

    def send(fleet: FleetSimulator) -> None:
        for instance_id in instance_ids:
            for kb in KBS:
                command_id = fleet.send_install(instance_id, kb)
                with lock:
                    command_ids.append(command_id)

    threads = [threading.Thread(target=send, args=(fleet,)) for fleet in (first, second) * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(command_ids)) == len(command_ids) == 6 * len(instance_ids) * len(KBS)
    assert first.install_counts == second.install_counts
    assert first.install_counts == {(instance_id, kb): 6 for instance_id in instance_ids for kb in KBS}
    first.close()
    second.close()


def test_an_operation_waits_out_a_lock_another_connection_holds(
    catalog: SqliteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(simulator_state, "_BUSY_TIMEOUT_MS", 0)  # every wait goes through the retry loop
    state = tmp_path / "fleet.db"
    with FleetSimulator(catalog, SMALL_FLEET, state_path=state) as fleet:
        instance_id = fleet.servers[0].instance_id
        holder = sqlite3.connect(state, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        release = threading.Timer(0.2, holder.execute, ("COMMIT",))
        release.start()
        started = time.monotonic()
        command_id = fleet.send_scan(instance_id)
        assert time.monotonic() - started >= 0.2
        time.sleep(0.01)  # 30 simulated seconds at 100,000x
        assert fleet.get_command(instance_id, command_id).status is CommandStatus.SUCCESS
        release.join()
        holder.close()


def test_a_lock_held_past_every_retry_is_a_store_error_and_changes_nothing(
    catalog: SqliteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(simulator_state, "_BUSY_TIMEOUT_MS", 0)
    monkeypatch.setattr(simulator_state, "_BUSY_ATTEMPTS", 3)
    state = tmp_path / "fleet.db"
    with FleetSimulator(catalog, SMALL_FLEET, state_path=state) as fleet:
        instance_id = fleet.servers[0].instance_id
        holder = sqlite3.connect(state, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match="locked"):
            fleet.send_install(instance_id, NEWEST_WS2022_LCU)
        holder.execute("COMMIT")
        holder.close()
        assert fleet.install_counts == {}
        fleet.send_install(instance_id, NEWEST_WS2022_LCU)
        assert fleet.install_counts == {(instance_id, NEWEST_WS2022_LCU): 1}


def test_faults_reboots_and_time_set_through_one_simulator_hold_in_another(
    catalog: SqliteStore, tmp_path: Path
) -> None:
    state = tmp_path / "fleet.db"
    clock = ManualClock(1000.0)  # one clock for both, as every process reads the same wall clock
    config = SMALL_FLEET.model_copy(update={"time_scale": 1.0, "reboot_seconds": 120.0})
    with (
        FleetSimulator(catalog, config, state_path=state, clock=clock) as first,
        FleetSimulator(catalog, state_path=state, clock=clock) as second,
    ):
        server = next(s for s in first.servers if s.build != "10.0.20348.4297")
        first.inject_failure(server.instance_id, NEWEST_WS2022_LCU, 0x800F0922, times=2)
        outcomes = []
        for fleet in (second, first, second):  # the fault's remaining count is shared, not per simulator
            command_id = fleet.send_install(server.instance_id, NEWEST_WS2022_LCU)
            clock.advance(3600)
            outcomes.append(fleet.get_command(server.instance_id, command_id).status)
        assert outcomes == [CommandStatus.FAILED, CommandStatus.FAILED, CommandStatus.SUCCESS]
        assert first.simulated_time == second.simulated_time
        first.reboot(server.instance_id)
        clock.advance(30 + 60)  # the shutdown, and the heartbeat's lag behind it
        assert not second.is_online(server.instance_id)
        assert second.expected_online(server.instance_id) == pytest.approx(60.001)
        clock.advance(60)
        assert second.is_online(server.instance_id) and not first.server(server.instance_id).pending_reboot
