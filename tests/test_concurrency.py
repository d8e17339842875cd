"""Two ``autopatch patch`` and a ``resume`` started together on the same servers: each KB installed at most once.

The count comes from the simulator, whose state file all three processes share, so an install sent by
any of them is counted whoever sent it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

from autopatch.catalog.ingest import import_paths
from autopatch.fleet.simulator import FleetSimulator
from autopatch.store.sqlite import SqliteStore

from .conftest import xml_path


def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "autopatch.cli.app", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_patch_commands_and_a_resume_install_every_kb_at_most_once(tmp_path: Path) -> None:
    db = tmp_path / "autopatch.db"
    store = SqliteStore(db)
    import_paths(store, [xml_path(month) for month in ("2024-Nov", "2025-Jan", "2025-Sep", "2025-Oct")], workers=1)
    store.close()
    env = {
        **os.environ,
        "AUTOPATCH_DB": str(db),
        "AUTOPATCH_FLEET": "simulator",
        "AUTOPATCH_SIMULATOR_SERVERS": "12",
        "AUTOPATCH_SIMULATOR_SEED": "4",
        "AUTOPATCH_SIMULATOR_TIME_SCALE": "600",  # a 600 s install takes a real second: the runs overlap
        "AUTOPATCH_NOTIFY": "",
    }
    processes = [start(env, "patch", "--all", "--concurrency", "4")]
    time.sleep(0.3)
    processes.append(start(env, "patch", "--all", "--concurrency", "4"))
    time.sleep(0.3)
    processes.append(start(env, "resume"))
    results = [(process.wait(timeout=180), process.stderr.read() if process.stderr else "") for process in processes]
    # One patch drives the run (0, or 1 for the offline servers); the other is refused naming it (2),
    # unless it came after the first had finished; the resume finds nothing to take over.
    assert all(code in (0, 1, 2) for code, _ in results), results
    assert all("is held by run" in err for code, err in results if code == 2), results

    store = SqliteStore(db)
    runs = sorted(store.list_runs(), key=lambda run: run.created_at)
    assert runs and all(run.status.is_terminal for run in runs) and store.unfinished_runs() == []
    for earlier, later in pairwise(runs):  # runs on the same servers never overlap
        assert earlier.finished_at is not None and later.created_at >= earlier.finished_at
    catalog = SqliteStore(db)
    fleet = FleetSimulator(catalog, state_path=db.with_suffix(".simulator.db"))
    counts = fleet.install_counts
    fleet.close()
    catalog.close()
    assert counts and max(counts.values()) == 1, counts
    sent = [(a.instance_id, a.kb) for run in runs for a in store.attempts(run.run_id) if a.command_id]
    assert sorted(counts) == sorted(sent)
    store.close()
