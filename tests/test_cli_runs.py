"""The patch-run commands end to end through the CLI entry point, on the simulator."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from autopatch.access import authenticate
from autopatch.domain.access import Role
from autopatch.store.sqlite import SqliteStore

from .conftest import run_cli as run
from .conftest import xml_path
from .kev_store_contract import KEV_FILE


def test_dry_run_plans_without_installing_and_a_real_run_is_recorded(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "patch", "--all", "--dry-run", "--format", "json")
    plan = json.loads(out)
    assert code == 0 and len(plan) == 6
    to_install = {row["instance_id"]: row["kbs_in_order"] for row in plan if row["kbs_in_order"]}
    assert to_install and SqliteStore(env).list_runs() == []
    code, _, _ = run(capsys, "patch", "--all", "--concurrency", "3")
    assert code in (0, 1)
    code, out, _ = run(capsys, "runs", "--format", "json")
    [listed] = json.loads(out)
    code, out, _ = run(capsys, "run", "show", listed["run_id"], "--format", "json")
    view = json.loads(out)
    kbs = {(s["instance_id"], k["kb"]): k for s in view["servers"] for k in s["kbs"]}
    for instance_id, planned in to_install.items():
        for kb in planned:
            item = kbs[(instance_id, kb)]
            assert item["state"] in ("Success", "Failed")
            assert item["attempts"] and item["attempts"][0]["command_id"]
            assert [t["to"] for t in item["transitions"]][:2] == ["Pending", "InProgress"]
    instance_id = next(iter(to_install))
    code, out, _ = run(capsys, "status", instance_id, "--format", "json")
    status = json.loads(out)
    assert status["completed"] == status["total"] and status["percentage"] == 100.0
    code, _, err = run(capsys, "cancel", listed["run_id"])
    assert code == 2 and "only unfinished runs can be cancelled" in err


def test_a_minimum_severity_narrows_the_plan(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "patch", "--all", "--dry-run", "--format", "json")
    everything = sum(len(row["kbs_in_order"]) for row in json.loads(out))
    code, out, _ = run(capsys, "patch", "--all", "--dry-run", "--severity", "Critical,Important", "--format", "json")
    assert code == 0 and sum(len(row["kbs_in_order"]) for row in json.loads(out)) <= everything
    code, _, err = run(capsys, "patch", "--all", "--dry-run", "--severity", "Urgent")
    assert code == 2 and "severity: 'Urgent'" in err


def test_retry_installs_one_kb_as_a_run_of_its_own(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "patch", "--all", "--dry-run", "--format", "json")
    row = next(row for row in json.loads(out) if row["kbs_in_order"])
    code, _, _ = run(capsys, "retry", row["instance_id"], row["kbs_in_order"][0])
    assert code == 0
    [retry] = SqliteStore(env).list_runs()
    assert retry.kind == "retry" and retry.status == "Succeeded"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("patch", "--all", "--instance", "i-12345678"), "exactly one of --all"),
        (("patch", "--instance", "i-xyz"), "instance: 'i-xyz' is invalid"),
        (("patch", "--all", "--kb", "KB12x"), "kb: 'KB12x' is invalid"),
        (("patch", "--tag", "novalue"), "a tag filter is KEY=VALUE"),
        (("retry", "i-12345678", "KB5034129"), "not a known instance"),
        (("run", "show", "p-nope"), "a run id looks like"),
        (("run", "show", "p-20240109-081500-1a2b3c"), "not a known run"),
        (("reboot", "i-0000000000000000z"), "instance_id: 'i-0000000000000000z' is invalid"),
    ],
)
def test_bad_run_input_exits_2_with_one_line(
    env: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    code, _, err = run(capsys, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_the_demo_runs_offline_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "msrc"
    folder.mkdir()
    for month in ("2025-Sep", "2025-Oct"):
        (folder / f"{month}.xml.gz").write_bytes(xml_path(month).read_bytes())
    with socket.socket() as closed:  # a port nobody listens on: "no route to Microsoft"
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("AUTOPATCH_DB", str(tmp_path / "demo.db"))
    monkeypatch.setenv("AUTOPATCH_MSRC_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AUTOPATCH_CATALOG_DIR", str(folder))
    monkeypatch.setenv("AUTOPATCH_KEV_FILE", str(KEV_FILE))  # as ``make demo`` sets it when the file is there
    monkeypatch.setenv("AUTOPATCH_SIMULATOR_SERVERS", "8")
    monkeypatch.setenv("AUTOPATCH_SIMULATOR_TIME_SCALE", "50000")
    monkeypatch.setenv("AUTOPATCH_NOTIFY", "")
    code, out, _ = run(capsys, "demo")
    assert code == 0
    unwrapped = "".join(out.split())  # rich wraps long lines at the terminal width
    assert "Offline" in out and "".join(f"Importing the monthly documents in {folder}".split()) in unwrapped
    assert "Exposure before patching" in out and "Exposure after patching" in out
    store = SqliteStore(tmp_path / "demo.db")
    [patch_run] = store.list_runs()
    assert store.counts()["documents"] == 2 and patch_run.status.is_terminal
    kev = store.kev_catalog_info()
    assert kev is not None and kev.count == 1404 and "KEV catalog 2025.08.25" in out
    # It ends with the way into the dashboard: an admin token that works, shown once.
    match = re.search(r"\(shown once\):\s*(ap_[A-Za-z0-9_-]+)", out)
    assert match is not None and "makeserve" in unwrapped and "http://127.0.0.1:8080/" in unwrapped
    principal = authenticate(store, match.group(1))
    assert principal is not None and principal.role is Role.ADMIN
