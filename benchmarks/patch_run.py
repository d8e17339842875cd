"""Benchmark: the patch engine on the simulator.

(a) 1,000 servers x 5 KBs with zero install, reboot and scan time: the engine's own cost per KB
    step (wall time minus the time spent inside the fleet adapter) and the store's writes/s.
(b) 200 servers x 4 KBs with fixed simulated durations at concurrency 50: the measured makespan
    against the theoretical minimum ceil(servers / concurrency) x KBs x (install + reboot +
    verification scan), measured in the same run, at two simulated-time scales.

Plans are built directly (the next N cumulative updates above each server's build), so the
figures are the engine's, not the planner's.

    .venv/bin/python benchmarks/patch_run.py
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _catalog import full_catalog
from autopatch.domain.patching import KbState, RebootPolicy, RunStatus
from autopatch.domain.polling import PollPolicy
from autopatch.domain.runs import RunItem, RunRecord, RunServer
from autopatch.engine.options import RunOptions
from autopatch.engine.planning import RunPlan, new_run_id, store_plan
from autopatch.engine.runner import Engine
from autopatch.fleet.simulator import FleetSimulator, SimulatorConfig
from autopatch.fleet.simulator_model import load_ladders
from autopatch.scanning import discover_instances, scan_instances
from autopatch.store.sqlite import SqliteStore


class TimedFleet:
    """Wraps an adapter and adds up the wall time spent inside it."""

    def __init__(self, fleet: FleetSimulator) -> None:
        self.fleet = fleet
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.fleet, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        return timed


def make_plan(store: SqliteStore, fleet: FleetSimulator, kbs_per_server: int, servers: int) -> RunPlan:
    # Scanned once, as a plan is: the engine then knows each server's boot time before its reboots.
    scan_instances(fleet, store, discover_instances(fleet, store), sleep=lambda _: None)
    ladders = load_ladders(store, fleet.config.products)
    run = RunRecord(new_run_id("patch"), "patch", RunStatus.PENDING, datetime.now(UTC).isoformat(), {})
    plan = RunPlan(run)
    for server in fleet.servers:
        ladder = ladders.get(server.product)
        if ladder is None or not server.online:
            continue
        newer = [
            u
            for u in ladder.lcus
            if tuple(map(int, u.fixed_build.split("."))) > tuple(map(int, server.build.split(".")))
        ]
        if len(newer) < kbs_per_server:
            continue
        plan.servers.append(RunServer(run.run_id, server.instance_id, server.name, server.product, server.build))
        for position, update in enumerate(newer[:kbs_per_server]):
            plan.items.append(
                RunItem(
                    run.run_id,
                    server.instance_id,
                    f"KB{update.kb}",
                    position,
                    KbState.PENDING,
                    update.subtype,
                    update.fixed_build,
                    update.restart_required,
                )
            )
        if len(plan.servers) == servers:
            break
    store_plan(store, plan)
    return plan


def count_writes(store: SqliteStore) -> Callable[[], int]:
    original = store._transaction
    counter = [0]

    def counted() -> Any:
        counter[0] += 1
        return original()

    store._transaction = counted  # type: ignore[method-assign]
    return lambda: counter[0]


def fresh_store(scratch: Path, name: str, catalog: Path) -> SqliteStore:
    shutil.copyfile(catalog, scratch / name)  # the catalog store was closed: no WAL left behind
    return SqliteStore(scratch / name)


def overhead(scratch: Path, catalog: Path) -> None:
    store = fresh_store(scratch, "a.db", catalog)
    config = SimulatorConfig(
        servers=1600,
        seed=5,
        offline_fraction=0.0,
        failure_rate=0.0,
        install_seconds_mean=0.0,
        install_seconds_jitter=0.0,
        reboot_seconds=0.0,
        shutdown_seconds=0.0,
        heartbeat_lag_seconds=0.0,
        scan_seconds=0.0,
        time_scale=1.0,
    )
    fleet = FleetSimulator(store, config)
    plan = make_plan(store, fleet, kbs_per_server=5, servers=1000)
    steps = sum(1 for item in plan.items if item.state is KbState.PENDING)
    writes = count_writes(store)
    timed = TimedFleet(fleet)
    for concurrency in (1,):
        options = RunOptions(concurrency=concurrency, reboot=RebootPolicy.NEVER, poll=PollPolicy(0.0, 1.0, 0.0, 60.0))
        started = time.perf_counter()
        status = Engine(store, timed).execute(plan.run.run_id, options)  # type: ignore[arg-type]
        seconds = time.perf_counter() - started
    assert status is RunStatus.SUCCEEDED, status
    engine = seconds - timed.seconds
    print(f"(a) {len(plan.servers):,} servers x 5 KBs = {steps:,} KB steps, zero install time, concurrency 1")
    print(f"    wall {seconds:.2f} s; inside the simulator {timed.seconds:.2f} s; engine {engine:.2f} s")
    print(
        f"    engine overhead per KB step {1000 * engine / steps:.3f} ms (goal < 2 ms); "
        f"wall per KB step {1000 * seconds / steps:.3f} ms"
    )
    print(f"    store: {writes():,} write transactions, {writes() / seconds:,.0f} writes/s")
    fleet.close()
    store.close()


def makespan(scratch: Path, catalog: Path, scale: float) -> None:
    store = fresh_store(scratch, f"b-{scale:.0f}.db", catalog)
    install, reboot, scan = 600.0, 120.0, 30.0
    config = SimulatorConfig(
        servers=400,
        seed=9,
        offline_fraction=0.0,
        failure_rate=0.0,
        install_seconds_mean=install,
        install_seconds_jitter=0.0,
        reboot_seconds=reboot,
        shutdown_seconds=0.0,  # the minimum below counts install + reboot + scan only
        heartbeat_lag_seconds=0.0,
        scan_seconds=scan,
        time_scale=scale,
        products=["Windows Server 2022"],
        core_fraction=0.0,
    )
    fleet = FleetSimulator(store, config)
    plan = make_plan(store, fleet, kbs_per_server=4, servers=200)
    servers, concurrency, kbs = len(plan.servers), 50, 4
    reboots = sum(1 for i in plan.items if i.restart_required in ("Yes", "Maybe"))
    step = (install + reboot + scan) / scale  # every KB here needs a reboot and a verification scan
    minimum = math.ceil(servers / concurrency) * kbs * step
    options = RunOptions(
        concurrency=concurrency,
        reboot=RebootPolicy.IF_REQUIRED,
        poll=PollPolicy(first_delay=0.002, factor=1.2, max_delay=0.01, timeout=60.0),
    )
    started = time.perf_counter()
    status = Engine(store, fleet).execute(plan.run.run_id, options)
    seconds = time.perf_counter() - started
    assert status is RunStatus.SUCCEEDED, status
    print(
        f"(b) {servers} servers x {kbs} KBs, concurrency {concurrency}, "
        f"install {install:.0f} s + reboot {reboot:.0f} s + scan {scan:.0f} s simulated at {scale:.0f}x "
        f"({reboots} reboots)"
    )
    print(
        f"    theoretical minimum {minimum:.2f} s; measured makespan {seconds:.2f} s; "
        f"{100 * (seconds / minimum - 1):+.1f}% over the minimum (goal within 2%)"
    )
    fleet.close()
    store.close()


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="autopatch-patch-bench-"))
    catalog_path = Path(tempfile.gettempdir()) / "autopatch-bench" / "catalog.db"
    catalog_path.parent.mkdir(exist_ok=True)
    full_catalog(catalog_path).close()
    overhead(scratch, catalog_path)
    # The engine's cost per step is absolute (a few ms), so the ratio depends on how fast simulated
    # time runs: two scales, a 0.5 s and a 1 s install, to show it.
    for scale in (1200.0, 600.0):
        makespan(scratch, catalog_path, scale)


if __name__ == "__main__":
    main()
