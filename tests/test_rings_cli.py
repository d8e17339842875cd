"""Rings, health gates and percentages through the CLI: refused input, a halted run, a kill -9 during a gate."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autopatch.domain.patching import KbState
from autopatch.domain.ring_gates import GateStatus
from autopatch.fleet.simulator import FleetSimulator
from autopatch.store.sqlite import SqliteStore

from .conftest import configured_simulator, run_cli

INSTALL_FAILURE = -2147023293  # 0x80070643


def tables(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as connection:
        names = [name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {name: connection.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in names}


def dry_run(capsys: pytest.CaptureFixture[str], *extra: str) -> list[dict[str, object]]:
    code, out, err = run_cli(capsys, "patch", "--all", "--dry-run", "--format", "json", *extra)
    assert code == 0, err
    rows: list[dict[str, object]] = json.loads(out)
    return rows


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--rings", "canary"), "--rings: 'canary' is invalid: a ring is NAME=SELECTOR"),
        (("--rings", "rest=*;canary=10%"), "only the last ring may use it"),
        (("--rings", "canary=Environment=nowhere;rest=*"), "ring canary selects none of the run's 6 server(s)"),
        (("--rings", "canary=50%"), "3 server(s) of the run are in no ring"),
        (("--concurrency", "0%"), "--concurrency: '0%' is invalid"),
        (("--concurrency", "ten"), "a count from 1 to 1000, or a percentage"),
        (("--max-errors", "150%"), "--max-errors: '150%' is invalid"),
        (("--rings", "all=*", "--soak", "2w"), "--soak: '2w' is invalid"),
        (("--soak", "30m"), "a soak follows a ring's gate: give --rings"),
        (
            ("--rings", "all=*", "--health-script", "/nonexistent/health.ps1"),
            "--health-script: '/nonexistent/health.ps1'",
        ),
    ],
)
def test_bad_rings_and_rates_exit_2_naming_the_option_and_write_nothing(
    env: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    dry_run(capsys)  # the database exists
    before = tables(env)
    code, _, err = run_cli(capsys, "patch", "--all", *args)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1
    assert tables(env) == before


def test_a_health_script_that_is_not_text_is_refused(
    env: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    binary = tmp_path / "health.ps1"
    binary.write_bytes(b"\xff\xfe\x00\x00exit 0")
    code, _, err = run_cli(capsys, "patch", "--all", "--rings", "all=*", "--health-script", str(binary))
    assert code == 2 and "--health-script" in err and "UTF-8" in err


def test_a_dry_run_shows_each_servers_ring_and_percentages_resolve_against_the_targets(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = dry_run(capsys, "--rings", "canary=34%;rest=*", "--concurrency", "50%")
    rings = {str(row["instance_id"]): row["ring"] for row in rows}
    ordered = sorted(rings)
    assert [rings[i] for i in ordered] == ["canary"] * 3 + ["rest"] * 3  # 34% of 6 → 2.04 → 3, lowest ids first
    assert "ring" not in dry_run(capsys)[0]  # without rings, the plan keeps its shape


def canary_with_work(capsys: pytest.CaptureFixture[str]) -> tuple[str, str, str]:
    """The first server with work: (instance id, Name tag, its first KB)."""
    row = next(row for row in dry_run(capsys) if row["kbs_in_order"])
    kbs = row["kbs_in_order"]
    assert isinstance(kbs, list)
    return str(row["instance_id"]), str(row["name"]), str(kbs[0])


def test_a_canary_failure_halts_the_run_and_run_show_and_status_say_so(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    canary, name, kb = canary_with_work(capsys)
    with configured_simulator() as fleet:
        fleet.inject_failure(canary, kb, INSTALL_FAILURE, times=1)
    code, out, _ = run_cli(
        capsys, "patch", "--all", "--rings", f"canary=Name={name};rest=*", "--concurrency", "50%", "--max-errors", "1"
    )
    assert code == 1
    assert "Halted: ring canary failed its health gate" in out  # the summary the console notifier prints
    code, out, _ = run_cli(capsys, "runs", "--format", "json")
    [listed] = json.loads(out)
    assert listed["status"] == "Halted" and listed["reason"].startswith("ring canary failed its health gate:")
    code, out, _ = run_cli(capsys, "run", "show", listed["run_id"], "--format", "json")
    view = json.loads(out)
    assert view["options"]["concurrency"] == 3 and view["options"]["concurrency_text"] == "50%"
    assert [(r["name"], r["status"]) for r in view["rings"]] == [("canary", "Failed"), ("rest", "Not Started")]
    [failed] = [s for s in view["rings"][0]["servers"] if s["check"] == "Failed"]
    assert failed["instance_id"] == canary and kb in failed["detail"]
    later = view["rings"][1]["servers"][0]["instance_id"]
    kbs = {k["state"] for s in view["servers"] if s["instance_id"] == later for k in s["kbs"]}
    assert KbState.SUCCESS not in kbs
    code, out, _ = run_cli(capsys, "run", "show", listed["run_id"])
    assert code == 0 and "Rings, in order" in out and "halted the run" in out and "Servers that failed a gate" in out
    code, out, _ = run_cli(capsys, "status", canary)
    assert f"Ring canary of run {listed['run_id']}: gate Failed; this server: Failed" in out


def start(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "autopatch.cli.app", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def gate_status(db: Path) -> str | None:
    """The first ring's gate as another process stored it (None before the rings exist)."""
    try:
        with sqlite3.connect(db, timeout=5) as connection:
            row = connection.execute("SELECT status FROM ring_gates WHERE position = 0").fetchone()
    except sqlite3.OperationalError:  # the table does not exist yet
        return None
    return None if row is None else str(row[0])


def test_a_kill_during_the_soak_resumes_at_the_gate_without_reinstalling(
    env: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dry_run(capsys)  # the fleet exists, so the child processes open the same one
    script = tmp_path / "health.ps1"
    script.write_text("$ErrorActionPreference = 'Stop'\nGet-Service W32Time | Out-Null\nexit 0\n", encoding="utf-8")
    child = {**os.environ, "AUTOPATCH_SIMULATOR_TIME_SCALE": "2000"}
    # A soak long enough to be seen between two polls on a loaded machine.
    args = ("patch", "--all", "--rings", "canary=34%;rest=*", "--health-script", str(script), "--soak", "10s")
    process = start(child, *args)
    deadline = time.monotonic() + 90
    while gate_status(env) != GateStatus.SOAKING:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        assert time.monotonic() < deadline, "the canary never reached its soak"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    store = SqliteStore(env)
    [run] = store.list_runs()
    canary = {m.instance_id for m in store.ring_members(run.run_id, 0)}
    attempts_before = {(a.instance_id, a.kb, a.attempt) for a in store.attempts(run.run_id)}
    assert attempts_before and {key[0] for key in attempts_before} <= canary  # only the canary was touched
    store.close()

    resumed = start(child, "resume")
    assert resumed.wait(timeout=120) in (0, 1), resumed.stderr.read().decode() if resumed.stderr else ""
    store = SqliteStore(env)
    assert [g.status for g in store.ring_gates(run.run_id)] == [GateStatus.PASSED, GateStatus.PASSED]
    assert store.get_run(run.run_id).status.is_terminal
    canary_attempts = {(a.instance_id, a.kb, a.attempt) for a in store.attempts(run.run_id) if a.instance_id in canary}
    assert canary_attempts == attempts_before  # no install of the canary was sent again
    assert all(m.round == 2 for m in store.ring_members(run.run_id, 0) if m.check != "Skipped")
    fleet = FleetSimulator(store, state_path=env.with_suffix(".simulator.db"))
    counts = fleet.install_counts
    fleet.close()
    for item in store.run_items(run.run_id):
        if item.state is KbState.SUCCESS:
            assert counts[(item.instance_id, item.kb)] == 1, f"{item.kb} installed twice on {item.instance_id}"
    store.close()
