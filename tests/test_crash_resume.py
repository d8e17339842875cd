"""Kill -9 the orchestrator at random points; restarting it resumes every run, installing nothing twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest

from autopatch.catalog.ingest import import_paths
from autopatch.domain.patching import KbState
from autopatch.fleet.simulator import FleetSimulator
from autopatch.store.sqlite import SqliteStore

from .conftest import xml_path


def start(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "autopatch.cli.app", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_for_run(db: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if db.exists():
            store = SqliteStore(db)
            try:
                if store.list_runs():
                    return
            finally:
                store.close()
        time.sleep(0.02)
    raise AssertionError("the patch run was never created")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_killed_run_resumes_to_the_end_without_installing_any_kb_twice(tmp_path: Path, seed: int) -> None:
    db = tmp_path / "autopatch.db"
    store = SqliteStore(db)
    import_paths(store, [xml_path(month) for month in ("2024-Nov", "2025-Jan", "2025-Sep", "2025-Oct")], workers=1)
    store.close()
    env = {
        **os.environ,
        "AUTOPATCH_DB": str(db),
        "AUTOPATCH_FLEET": "simulator",
        "AUTOPATCH_SIMULATOR_SERVERS": "16",
        "AUTOPATCH_SIMULATOR_SEED": str(seed),
        "AUTOPATCH_SIMULATOR_TIME_SCALE": "2000",
        "AUTOPATCH_NOTIFY": "",
    }
    chance = random.Random(seed)
    process = start(env, "patch", "--all", "--concurrency", "4")
    wait_for_run(db, time.monotonic() + 60)
    kills = 0
    for _ in range(3):  # kill the patch run, then two resumes, each at a random moment
        time.sleep(chance.uniform(0.05, 0.8))
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
    items = store.run_items(run.run_id)
    assert items and all(item.state.is_terminal for item in items)
    catalog = SqliteStore(db)
    fleet = FleetSimulator(catalog, state_path=db.with_suffix(".simulator.db"))
    counts = fleet.install_counts
    fleet.close()
    for item in items:
        attempts = store.attempts(run.run_id, item.instance_id, item.kb)
        sent = [a for a in attempts if a.command_id]
        # Every install the simulator received is an attempt we recorded, and vice versa.
        assert counts.get((item.instance_id, item.kb), 0) == len(sent)
        if item.state is KbState.SUCCESS:
            assert counts[(item.instance_id, item.kb)] == 1, f"{item.kb} installed twice on {item.instance_id}"
    # The history is complete: each KB's transitions chain from its first state to its final one.
    chains: dict[tuple[str, str], list[tuple[str | None, str]]] = {}
    for transition in store.transitions(run.run_id):
        chains.setdefault((transition.instance_id, transition.kb), []).append(
            (transition.from_state, transition.to_state)
        )
    for item in items:
        chain = chains[(item.instance_id, item.kb)]
        assert chain[0][0] is None and chain[-1][1] == item.state
        assert all(previous[1] == current[0] for previous, current in pairwise(chain))
    assert any(item.state is KbState.SUCCESS for item in items)
    store.close()
    catalog.close()
