"""Deadlines and KEV on real data at fixed as-of dates: ``assess``, ``exposure`` and ``catalog cves``.

The catalog is the session's real MSRC months (2024-Jan, -Feb and -Mar among them) and the KEV
catalog is CISA's real snapshot of 2025-08-25; every date below is what those files say.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from autopatch.assessment import assess_facts, fleet_exposure
from autopatch.catalog.kev import import_kev_file
from autopatch.exposure_cache import FleetExposureCache
from autopatch.fleet.simulator import FleetSimulator
from autopatch.scanning import discover_instances, scan_instances
from autopatch.sla_policy import set_sla_policy
from autopatch.store.sqlite import SqliteStore

from .conftest import run_cli
from .kev_store_contract import KEV_FILE

WS2022 = "Windows Server 2022"
JANUARY_2024_BUILD = "10.0.20348.2227"  # KB5034129: every February 2024 CVE is open on it
SHORTCUT = "CVE-2024-21412"  # Important, released 2024-02-13 (30 days: 2024-03-14); KEV 2024-02-13, due 2024-03-05
KERNEL = "CVE-2024-21338"  # Important, released 2024-02-13; added to KEV on 2024-03-04, due 2024-03-25
SMARTSCREEN = "CVE-2024-21351"  # Moderate (90 days: 2024-05-13); KEV 2024-02-13, due 2024-03-05


@pytest.fixture
def store(catalog_db: Path, tmp_path: Path) -> Iterator[SqliteStore]:
    """A copy of the session catalog with CISA's KEV catalog imported."""
    shutil.copyfile(catalog_db, tmp_path / "kev.db")
    opened = SqliteStore(tmp_path / "kev.db")
    import_kev_file(opened, KEV_FILE)
    yield opened
    opened.close()


def cves_on(store: SqliteStore, as_of: date | None, build: str = JANUARY_2024_BUILD) -> dict[str, dict[str, Any]]:
    result = assess_facts(store, WS2022, build, as_of=as_of)
    return {cve["cve"]: cve for cve in result["cves"]}


def test_a_february_cve_is_overdue_by_its_kev_due_date_before_its_severity_deadline(store: SqliteStore) -> None:
    on_due_day = cves_on(store, date(2024, 3, 5))[SHORTCUT]
    assert on_due_day | {"kev": True, "exploited": True, "due": "2024-03-05", "overdue": False} == on_due_day
    day_after = cves_on(store, date(2024, 3, 6))[SHORTCUT]
    assert day_after["status"] == "open" and day_after["overdue"] is True
    # Without KEV the Important severity deadline would be 30 days from 2024-02-13: 2024-03-14.
    other = cves_on(store, date(2024, 3, 6))
    plain_important = [
        cve
        for cve in other.values()
        if cve["month"] == "2024-02" and cve["severity"] == "Important" and not cve["kev"] and cve["status"] == "open"
    ]
    assert plain_important and {cve["due"] for cve in plain_important} == {"2024-03-14"}
    assert not any(cve["overdue"] for cve in plain_important)
    # A Moderate CVE has 90 days, but CISA's date is sooner.
    assert other[SMARTSCREEN] | {"severity": "Moderate", "due": "2024-03-05", "overdue": True} == other[SMARTSCREEN]


def test_a_kev_entry_added_later_is_not_yet_kev(store: SqliteStore) -> None:
    before = cves_on(store, date(2024, 3, 3))[KERNEL]
    assert before["kev"] is False and before["exploited"] is True and before["due"] == "2024-03-14"
    listed = cves_on(store, date(2024, 3, 4))[KERNEL]
    assert listed["kev"] is True and listed["due"] == "2024-03-14"  # CISA's 2024-03-25 is later: severity wins


def test_next_months_cves_do_not_exist_yet(store: SqliteStore) -> None:
    today = {cve["month"] for cve in cves_on(store, None).values()}
    assert "2024-03" in today
    february_20 = cves_on(store, date(2024, 2, 20))
    assert {cve["month"] for cve in february_20.values()} >= {"2024-02"}
    assert not any(cve["month"] >= "2024-03" for cve in february_20.values())
    february_12 = cves_on(store, date(2024, 2, 12))  # the day before February's Patch Tuesday
    assert SHORTCUT not in february_12 and not any(cve["month"] >= "2024-02" for cve in february_12.values())


def test_the_assess_summary_counts_open_overdue_cves_per_severity(store: SqliteStore) -> None:
    result = assess_facts(store, WS2022, JANUARY_2024_BUILD, as_of=date(2024, 3, 6))
    overdue = [cve for cve in result["cves"] if cve["overdue"]]
    assert {cve["status"] for cve in overdue} == {"open"}
    summary = result["summary"]
    for severity in ("Critical", "Important", "Moderate", "Low"):
        assert summary[f"overdue_{severity.lower()}"] == sum(1 for cve in overdue if cve["severity"] == severity)
    assert summary["overdue_critical"] >= 2  # February's Critical CVEs: 15 days, due 2024-02-28
    assert summary["overdue_total"] == len(overdue) and summary["overdue_important"] >= 1
    exploited = {cve["cve"] for cve in result["cves"] if cve["status"] == "open" and (cve["kev"] or cve["exploited"])}
    assert summary["open_exploited"] == len(exploited) and {SHORTCUT, KERNEL, SMARTSCREEN} <= exploited


def test_a_new_sla_policy_moves_every_deadline(store: SqliteStore) -> None:
    set_sla_policy(store, {"important": 10})
    cves = cves_on(store, date(2024, 2, 24))
    plain = next(c for c in cves.values() if c["month"] == "2024-02" and c["severity"] == "Important" and not c["kev"])
    assert plain["due"] == "2024-02-23" and plain["overdue"] is True
    assert cves[SHORTCUT]["due"] == "2024-02-23"  # now sooner than CISA's 2024-03-05


@pytest.fixture
def scanned_lab(lab: tuple[SqliteStore, FleetSimulator]) -> tuple[SqliteStore, FleetSimulator]:
    store, fleet = lab
    import_kev_file(store, KEV_FILE)
    scan_instances(fleet, store, discover_instances(fleet, store))
    return store, fleet


def test_fleet_overdue_and_exploited_counts_agree_with_the_per_cve_rows(
    scanned_lab: tuple[SqliteStore, FleetSimulator],
) -> None:
    store, _ = scanned_lab
    for as_of in (date(2024, 3, 6), None):
        counted = {row["instance_id"]: row for row in fleet_exposure(store, as_of=as_of)}
        detailed = fleet_exposure(store, with_cves=True, as_of=as_of)
        assert any(row["overdue_total"] for row in counted.values())
        for row in detailed:
            open_rows = [cve for cve in row["cves"] if cve["status"] == "open"]
            summary = counted[row["instance_id"]]
            assert summary["overdue_total"] == sum(1 for cve in open_rows if cve["overdue"])
            assert summary["overdue_important"] == sum(
                1 for cve in open_rows if cve["overdue"] and cve["severity"] == "Important"
            )
            assert summary["open_exploited"] == sum(1 for cve in open_rows if cve["kev"] or cve["exploited"])
            assert summary["open_total"] == len(open_rows)


def test_the_fleet_summary_counts_overdue_per_severity_and_follows_a_new_policy(
    scanned_lab: tuple[SqliteStore, FleetSimulator],
) -> None:
    store, _ = scanned_lab
    cache = FleetExposureCache()
    summary = cache.get(store)
    totals = summary.totals
    assert totals["overdue_total"] == sum(row["overdue_total"] or 0 for row in summary.rows)
    assert totals["overdue_critical"] + totals["overdue_important"] <= totals["overdue_total"]
    assert cache.cached(store) is summary
    set_sla_policy(store, {"critical": 3650, "important": 3650, "moderate": 3650, "low": 3650})
    assert cache.cached(store) is None  # the policy is part of what a kept summary holds for
    relaxed = cache.get(store).totals
    kev_only = sum(row["overdue_total"] or 0 for row in fleet_exposure(store))
    assert relaxed["overdue_total"] == kev_only < totals["overdue_total"]


def test_the_cli_shows_deadlines_and_refuses_a_bad_as_of(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "kev", "import", str(KEV_FILE), "--format", "json")
    assert code == 0 and json.loads(out)["added"] == 1404, err
    args = ("assess", "--product", WS2022, "--build", JANUARY_2024_BUILD, "--as-of", "2024-03-06")
    code, out, _ = run_cli(capsys, *args, "--format", "json")
    shortcut = next(cve for cve in json.loads(out)["cves"] if cve["cve"] == SHORTCUT)
    assert code == 0 and shortcut["overdue"] is True and shortcut["due"] == "2024-03-05"
    code, out, _ = run_cli(capsys, *args, "--format", "csv")
    header, *rows = out.splitlines()
    assert {"kev", "exploited", "due", "overdue"} <= set(header.split(","))
    assert any(SHORTCUT in row and "2024-03-05" in row for row in rows)
    code, out, _ = run_cli(capsys, *args)
    assert code == 0 and "overdue" in out and "KEV" in out
    code, _, err = run_cli(capsys, "assess", "--product", WS2022, "--build", JANUARY_2024_BUILD, "--as-of", "6/3/2024")
    assert code == 2 and "as_of" in err and "YYYY-MM-DD" in err
    code, _, err = run_cli(capsys, "exposure", "--as-of", "2024-02-30")
    assert code == 2 and "as_of" in err


def test_catalog_cves_carry_deadlines_and_leave_out_cves_not_yet_published(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_cli(capsys, "kev", "import", str(KEV_FILE))
    code, out, _ = run_cli(
        capsys, "catalog", "cves", "--product", WS2022, "--cve", SHORTCUT, "--as-of", "2024-03-06", "--format", "json"
    )
    [row] = json.loads(out)
    assert code == 0 and row | {"kev": True, "exploited": True, "due": "2024-03-05", "overdue": True} == row
    code, out, _ = run_cli(capsys, "catalog", "cves", "--product", WS2022, "--cve", SHORTCUT, "--as-of", "2024-02-01")
    assert code == 0 and SHORTCUT not in out
