"""The command line as a new user and a hostile one meet it: exit codes, refused input, nothing written by mistake."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from autopatch.cli.app import main
from autopatch.engine.planning import plan_run, start_run, store_plan
from autopatch.store.sqlite import SqliteStore

from .conftest import configured_simulator as simulator
from .conftest import run_cli as run
from .conftest import xml_path

INSTALL_FAILURE = -2147023293  # 0x80070643


def snapshot(db: Path) -> dict[str, int]:
    """Row counts of every table: "wrote nothing" means this did not change."""
    with sqlite3.connect(db) as connection:
        tables = [name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in tables}


def plan(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    code, out, _ = run(capsys, "patch", "--all", "--dry-run", "--format", "json")
    assert code == 0
    rows: list[dict[str, object]] = json.loads(out)
    return rows


def test_a_run_that_ends_failed_exits_1_from_patch_and_retry(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = next(row for row in plan(capsys) if row["kbs_in_order"])
    instance_id, kb = str(target["instance_id"]), str(target["kbs_in_order"][0])  # type: ignore[index]
    with simulator() as fleet:
        fleet.inject_failure(instance_id, kb, INSTALL_FAILURE, times=2)
    assert run(capsys, "patch", "--instance", instance_id)[0] == 1
    assert run(capsys, "retry", instance_id, kb)[0] == 1
    store = SqliteStore(env)
    assert [r.status for r in store.list_runs()] == ["Failed", "Failed"]
    store.close()


def test_resume_of_a_run_that_fails_exits_1(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = next(row for row in plan(capsys) if row["kbs_in_order"])
    instance_id, kb = str(target["instance_id"]), str(target["kbs_in_order"][0])  # type: ignore[index]
    with simulator() as fleet:
        store = SqliteStore(env)
        [instance] = [i for i in fleet.list_instances() if i.instance_id == instance_id]
        store.save_instances([instance], datetime.now(UTC))
        created, lease = start_run(store, "patch", [instance], {})
        store_plan(store, plan_run(store, fleet, [instance], run=created))
        lease.release()  # its driver is gone
        fleet.inject_failure(instance_id, kb, INSTALL_FAILURE, times=1)
        store.close()
    code, out, _ = run(capsys, "resume")
    assert code == 1 and "0x80070643" in out


def test_offline_targets_fail_the_run_with_a_reason_instead_of_succeeding(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    offline = [row for row in plan(capsys) if "offline" in str(row["note"])]
    assert offline, "the seed-11 fleet has an offline server"
    code, out, _ = run(capsys, "patch", "--instance", str(offline[0]["instance_id"]))
    assert code == 1
    store = SqliteStore(env)
    [patch_run] = store.list_runs()
    assert patch_run.status == "Failed" and "not patched (1 offline)" in patch_run.reason
    assert "Not patched: not scanned: offline" in out and "unknown → unknown" not in out
    store.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("catalog", "cves", "--product", "Windows Server 2022", "--month", ""), "month: ''"),
        (("catalog", "cves", "--product", "Windows Server 2022", "--severity", ""), "severity: ''"),
        (("assess", "--product", "Windows Server 2022", "--build", ""), "build: ''"),
        (("patch", "--all", "--severity", "", "--dry-run"), "severity: ''"),
        (("exposure", "--severity", ""), "severity: ''"),
        (("patch", "--all", "--kb", "KB9999999"), "kb: KB9999999 is not in the catalog"),
        (("retry", "i-0123456789abcdef0", "KB9999999"), "kb: KB9999999 is not in the catalog"),
        (("status", "i-0123456789abcdef0"), "'i-0123456789abcdef0' is not a known instance"),
        (("patch", "--tag", "Environment=nowhere"), "matches no server"),
        (("patch", "--all", "--concurrency", "0"), "--concurrency"),
        (("patch", "--all", "--reboot", "sometimes"), "--reboot"),
        (("catalog", "kb", "KB" + "9" * 5000), "…"),
        (("catalog", "cves", "--product", "W" * 5000), "…"),
        (("run", "show", "x" * 5000), "a run id looks like"),
        (("cancel", "p-20240109-081500-1a2b3c"), "is not a known run"),
    ],
)
def test_bad_or_unknown_input_exits_2_with_one_line_and_writes_nothing(
    env: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    before = snapshot(env)
    code, _, err = run(capsys, *args)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1 and len(err) < 400
    assert snapshot(env) == before


def test_a_dry_run_writes_nothing(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(env)
    assert plan(capsys)
    assert snapshot(env) == before


def test_reboot_of_an_offline_server_is_refused(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    offline = next(row for row in plan(capsys) if "offline" in str(row["note"]))
    code, _, err = run(capsys, "reboot", str(offline["instance_id"]))
    assert code == 2 and "is offline" in err


def test_retry_of_an_installed_kb_says_so_instead_of_installing_again(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = next(row for row in plan(capsys) if row["kbs_in_order"])
    instance_id, kb = str(target["instance_id"]), str(target["kbs_in_order"][0])  # type: ignore[index]
    assert run(capsys, "patch", "--instance", instance_id)[0] == 0
    code, _, err = run(capsys, "retry", instance_id, kb)
    assert code == 2 and f"{kb} is already installed on {instance_id}" in err
    with simulator() as fleet:
        assert fleet.install_counts[(instance_id, kb)] == 1


def test_status_counts_only_kbs_that_needed_work(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = next(row for row in plan(capsys) if row["kbs_in_order"])
    instance_id = str(target["instance_id"])
    assert run(capsys, "patch", "--instance", instance_id)[0] == 0
    code, out, _ = run(capsys, "status", instance_id, "--format", "json")
    status = json.loads(out)
    assert code == 0 and status["total"] == len(target["kbs_in_order"]) == status["completed"]  # type: ignore[arg-type]
    assert status["percentage"] == 100.0 and sum(status["not_counted"].values()) > 0
    code, out, _ = run(capsys, "status", instance_id)
    assert f"{status['completed']}/{status['total']} KBs done" in out and "not counted:" in out


def test_a_bad_notifier_setting_stops_the_command_before_any_work(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOPATCH_NOTIFY", "ftp://x")
    code, _, err = run(capsys, "patch", "--all")
    assert code == 2 and "AUTOPATCH_NOTIFY" in err
    store = SqliteStore(env)
    assert store.list_runs() == []
    store.close()
    monkeypatch.setenv("AUTOPATCH_NOTIFY", "")
    with simulator() as fleet:
        assert fleet.install_counts == {}


def test_a_database_path_that_cannot_be_created_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(["--db", str(blocker / "x.db"), "catalog", "products"])
    err = capsys.readouterr().err
    assert code == 2 and "db:" in err and len(err.strip().splitlines()) == 1


def test_a_read_only_database_answers_reads_and_refuses_writes_in_one_line(
    capsys: pytest.CaptureFixture[str], catalog_db: Path, tmp_path: Path
) -> None:
    db = tmp_path / "frozen.db"
    db.write_bytes(catalog_db.read_bytes())
    SqliteStore(db).close()  # a WAL database, as every AutoPatch database is
    frozen = subprocess.run(["chattr", "+i", str(db)], capture_output=True)
    if frozen.returncode != 0:  # root ignores file modes; only an immutable file is read-only to it
        db.chmod(0o444)
    try:
        code = main(["--db", str(db), "catalog", "kb", "KB5034129", "--format", "json"])
        out, err = capsys.readouterr()
        assert code == 0 and json.loads(out)["kb"] == "KB5034129", err
        code = main(["--db", str(db), "catalog", "import", str(xml_path("2016-Jan"))])
        err = capsys.readouterr().err
        failures = [line for line in err.splitlines() if line.startswith("failed:")]
        assert code == 1 and len(failures) == 1 and "is read-only" in failures[0]
    finally:
        subprocess.run(["chattr", "-i", str(db)], capture_output=True)
        db.chmod(0o644)


def test_csv_is_flat_one_row_per_server_and_cve_and_per_kb_and_product(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "fleet", "scan")[0] == 0
    code, out, _ = run(capsys, "exposure", "--severity", "Critical", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and {"instance_id", "cve", "status", "fix", "fixing_kbs"} <= set(rows[0])
    assert len({row["instance_id"] for row in rows}) == 6 and len(rows) > 6  # a row per (server, CVE)
    assert not any(cell.startswith(("[", "{")) for row in rows for cell in row.values() if cell)
    code, out, _ = run(capsys, "catalog", "kb", "KB5034129", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == len({row["product_id"] for row in rows}) > 1
    assert rows[0]["kb"] == "KB5034129" and "CVE-2024-20674" in rows[0]["cves"].split(";")


KB_TOKEN = re.compile(r"KB[0-9]+")


@pytest.mark.parametrize(
    "args",
    [
        ("fleet", "list"),
        ("exposure",),
        ("patch", "--all", "--dry-run"),
        ("catalog", "cves", "--product", "Windows Server 2022", "--month", "2024-01"),
        ("assess", "--product", "Windows Server 2022", "--build", "10.0.20348.2113", "--month", "2024-01"),
    ],
)
def test_tables_fit_80_columns_without_breaking_words(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert run(capsys, "fleet", "scan")[0] == 0
    code, out, _ = run(capsys, *args)
    assert code == 0 and out.strip()
    assert max(len(line) for line in out.splitlines()) <= 80
    assert all(len(token) in (8, 9) for token in KB_TOKEN.findall(out))  # KB + 6 or 7 digits, never cut
    assert not re.search(r"\bi-[0-9a-f]{1,16}\s*$", out, re.MULTILINE) or "i-" not in out  # ids unbroken


def test_fleet_list_shows_tags_and_when_a_server_went_offline(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "fleet", "list")
    assert code == 0 and "Environment=" in out and "no, since" in out
    code, out, _ = run(capsys, "fleet", "list", "--format", "json")
    rows = json.loads(out)
    assert all("Environment" in row["tags"] for row in rows)
    assert [row["offline_since"] is not None for row in rows] == [not row["online"] for row in rows]


def test_an_empty_database_says_import_first(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = str(tmp_path / "new.db")
    code = main(["--db", db, "catalog", "products"])
    assert code == 0 and "the catalog is empty" in " ".join(capsys.readouterr().err.split())
    for args in (("assess", "--product", "Windows Server 2022", "--build", "10.0.20348.1"), ("fleet", "list")):
        code = main(["--db", db, *args])
        err = capsys.readouterr().err
        assert code == 2 and "the catalog is empty" in err and "autopatch catalog import" in err


def test_resume_plans_a_run_whose_driver_died_before_it_had_scanned(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = next(row for row in plan(capsys) if row["kbs_in_order"])
    with simulator() as fleet:
        store = SqliteStore(env)
        [instance] = [i for i in fleet.list_instances() if i.instance_id == target["instance_id"]]
        store.save_instances([instance], datetime.now(UTC))
        created, lease = start_run(store, "patch", [instance], {"kbs": [], "severity": "Critical"})
        lease.release()  # it died right after claiming the server: no scan, no plan
        assert not store.get_run(created.run_id).planned
        store.close()
    code, _, err = run(capsys, "resume")
    assert code == 0, err
    store = SqliteStore(env)
    resumed = store.get_run(created.run_id)
    assert resumed.planned and resumed.status == "Succeeded"
    installed = [i.kb for i in store.run_items(created.run_id) if i.state == "Success"]
    assert installed == target["kbs_in_order"]
    store.close()
