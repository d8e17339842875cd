"""``patch --snapshot``, ``run show`` with rollback hints, ``snapshots list`` and ``snapshots prune`` on the
CLI's test environment (six simulated servers, seed 11, one offline, 50,000 simulated seconds per second)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from .conftest import configured_simulator, run_cli


def patched_with_snapshots(capsys: pytest.CaptureFixture[str]) -> tuple[str, dict[str, dict[str, object]]]:
    """A ``patch --all --snapshot`` run: its id and each server's snapshot as ``run show --format json`` has it."""
    code, _, err = run_cli(capsys, "patch", "--all", "--snapshot")
    assert code == 1, err  # the offline server cannot be patched: the run is Failed, the others Done
    run_id = re.search(r"Run (\S+)", err)
    assert run_id is not None
    code, out, _ = run_cli(capsys, "run", "show", run_id.group(1), "--format", "json")
    assert code == 0
    view = json.loads(out)
    assert view["options"]["snapshot"] is True
    return run_id.group(1), {server["instance_id"]: server for server in view["servers"]}


def test_patch_with_snapshot_records_each_servers_snapshots_and_run_show_says_how_to_roll_back(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id, servers = patched_with_snapshots(capsys)
    snapshotted = {i: s["snapshot"] for i, s in servers.items() if s["snapshot"]}
    assert snapshotted
    for instance_id, snapshot in snapshotted.items():
        assert snapshot["phase"] == "started"  # type: ignore[index]
        assert servers[instance_id]["status"] == "Done"
    offline = [i for i, s in servers.items() if s["status"] == "Skipped"]
    assert offline and all(servers[i]["snapshot"] is None for i in offline)  # never scanned: nothing to snapshot

    code, out, _ = run_cli(capsys, "run", "show", run_id)
    assert code == 0
    text = " ".join(out.split())
    instance_id, snapshot = next(iter(snapshotted.items()))
    root = next(v for v in snapshot["volumes"] if v["root"])  # type: ignore[index]
    assert root["snapshot_id"] in text
    assert (
        f"to roll back the root volume {root['volume_id']}: aws ec2 create-replace-root-volume-task "
        f"--instance-id {instance_id} --snapshot-id {root['snapshot_id']}"
    ) in text

    code, out, _ = run_cli(capsys, "snapshots", "list", "--format", "json")
    assert code == 0
    listed = json.loads(out)["items"]
    recorded = {i for s in snapshotted.values() for i in s["snapshot_ids"]}  # type: ignore[attr-defined]
    assert {row["snapshot_id"] for row in listed} == recorded
    assert {row["run_id"] for row in listed} == {run_id}


def test_prune_deletes_only_autopatch_snapshots_older_than_the_retention(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id, servers = patched_with_snapshots(capsys)
    with configured_simulator() as fleet:  # an operator's own snapshot: no AutoPatch tag
        mine = fleet.create_snapshots(next(iter(servers)), {"Team": "db"})
    time.sleep(0.2)  # 10,000 simulated seconds: the run's snapshots are now older than an hour

    code, out, _ = run_cli(capsys, "snapshots", "prune", "--older-than", "2w", "--format", "json")
    assert code == 0 and json.loads(out)["deleted"] == []  # far younger than two weeks
    code, out, _ = run_cli(capsys, "snapshots", "prune", "--older-than", "1h", "--dry-run", "--format", "json")
    would = json.loads(out)
    assert code == 0 and would["dry_run"] and would["deleted"]
    code, out, _ = run_cli(capsys, "snapshots", "prune", "--older-than", "1h", "--format", "json")
    pruned = json.loads(out)
    ids = [row["snapshot_id"] for row in pruned["deleted"]]
    assert code == 0 and ids == [row["snapshot_id"] for row in would["deleted"]] and pruned["errors"] == []
    assert {row["run_id"] for row in pruned["deleted"]} == {run_id}

    with configured_simulator() as fleet:
        left = fleet.list_snapshots({}).snapshots
    assert [s.snapshot_id for s in left] == [s.snapshot_id for s in mine]  # the operator's stay
    code, out, _ = run_cli(capsys, "run", "show", run_id)
    assert "nothing left to roll back to" in out and "create-replace-root-volume-task" not in out
    code, out, _ = run_cli(capsys, "audit", "--format", "json")
    entries = [e for e in json.loads(out) if e["action"] == "snapshots.prune"]  # newest first; dry runs change nothing
    assert [e["target"] for e in entries] == ["older than 1h", "older than 2w"]
    assert entries[0]["actor"].startswith("cli") and entries[0]["result"] == "ok"
    assert entries[0]["detail"].startswith(f"{len(ids)} deleted: {ids[0]}")


@pytest.mark.parametrize("retention", ["30", "10m", "0h", "30 days", "99999w"])
def test_prune_refuses_a_retention_it_cannot_read_and_deletes_nothing(
    env: Path, capsys: pytest.CaptureFixture[str], retention: str
) -> None:
    code, out, err = run_cli(capsys, "snapshots", "prune", "--older-than", retention)
    assert code == 2 and out == ""
    assert "older_than" in err and "e.g. 30d or 12h" in err
