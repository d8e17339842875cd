"""Kill -9 a ``patch --snapshot`` at random moments, then ``resume``: every server is snapshotted exactly once."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from autopatch.catalog.ingest import import_paths
from autopatch.domain.snapshots import TAG_RUN, SnapshotPhase
from autopatch.fleet.simulator import FleetSimulator
from autopatch.store.sqlite import SqliteStore

from .conftest import xml_path
from .test_crash_resume import start, wait_for_run


@pytest.mark.parametrize("seed", [4])
def test_a_killed_snapshot_run_resumes_without_snapshotting_a_server_twice(tmp_path: Path, seed: int) -> None:
    db = tmp_path / "autopatch.db"
    store = SqliteStore(db)
    import_paths(store, [xml_path(month) for month in ("2024-Nov", "2025-Jan", "2025-Sep", "2025-Oct")], workers=1)
    store.close()
    env = {
        **os.environ,
        "AUTOPATCH_DB": str(db),
        "AUTOPATCH_FLEET": "simulator",
        "AUTOPATCH_SIMULATOR_SERVERS": "12",
        "AUTOPATCH_SIMULATOR_SEED": str(seed),
        "AUTOPATCH_SIMULATOR_TIME_SCALE": "2000",
        "AUTOPATCH_NOTIFY": "",
    }
    chance = random.Random(seed)
    process = start(env, "patch", "--all", "--snapshot", "--concurrency", "3")
    wait_for_run(db, time.monotonic() + 60)
    kills = 0
    for _ in range(3):  # the run, then two resumes, each killed at a random moment
        time.sleep(chance.uniform(0.05, 0.6))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
        process = start(env, "resume")
    assert process.wait(timeout=120) in (0, 1), process.stderr.read().decode() if process.stderr else ""
    assert kills >= 1

    store = SqliteStore(db)
    assert store.unfinished_runs() == []
    [run] = store.list_runs()
    records = store.run_snapshots(run.run_id)
    fleet = FleetSimulator(store, state_path=db.with_suffix(".simulator.db"))
    requests = fleet.snapshot_requests
    tagged = fleet.list_snapshots({TAG_RUN: run.run_id}).snapshots
    fleet.close()
    assert records and all(record.phase is SnapshotPhase.STARTED for record in records)
    assert requests == {record.instance_id: 1 for record in records}  # one CreateSnapshots per server, ever
    assert sorted(s.snapshot_id for s in tagged) == sorted(i for record in records for i in record.snapshot_ids)
    installed = {attempt.instance_id for attempt in store.attempts(run.run_id) if attempt.command_id}
    assert installed <= {record.instance_id for record in records}  # nothing installed without a snapshot
    store.close()
