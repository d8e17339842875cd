"""Fleet exposure end to end on the simulator: discover, scan, assess from the stored scans."""

from __future__ import annotations

import json

import pytest

from autopatch.assessment import fleet_exposure
from autopatch.fleet.simulator import FleetSimulator
from autopatch.scanning import discover_instances, scan_instances
from autopatch.store.sqlite import SqliteStore


def test_each_scanned_server_gets_its_open_cves_and_closing_kbs(lab: tuple[SqliteStore, FleetSimulator]) -> None:
    store, fleet = lab
    instances = discover_instances(fleet, store)
    offline = instances[0].instance_id
    fleet.set_online(offline, False)
    outcome = scan_instances(fleet, store, discover_instances(fleet, store))
    assert outcome.failures == {offline: "offline"}
    rows = {row["instance_id"]: row for row in fleet_exposure(store)}
    # Offline: its exposure is unknown (None), never zeros that read as "nothing open".
    assert rows[offline]["status"].startswith("offline since 20")
    assert rows[offline]["open_total"] is None and rows[offline]["closing_kbs"] is None
    newest = max(fleet.server(i).build for i in outcome.reports)
    for instance_id, report in outcome.reports.items():
        row = rows[instance_id]
        assert row["status"] == "assessed" and row["product"] == "Windows Server 2022"
        if report.build == newest:
            assert row["open_total"] == 0 and row["closing_kbs"] == []
        else:
            assert row["open_critical"] + row["open_important"] > 0
            closing = {kb["kb"]: kb for kb in row["closing_kbs"]}
            assert closing and set(row["offered_kbs"]) <= set(closing)
            assert all(closing[kb]["delivery"] == "windows-update" for kb in row["offered_kbs"])
            assert row["open_fix_offered"] + row["open_fix_not_offered"] + row["open_no_fix"] == row["open_total"]
    detail = fleet_exposure(store, [next(iter(outcome.reports))], with_cves=True)[0]
    assert {cve["status"] for cve in detail["cves"]} <= {"open", "fixed"}
    assert detail["fixed_total"] == sum(1 for cve in detail["cves"] if cve["status"] == "fixed")


def test_the_exposure_command_prints_json_per_server(
    lab: tuple[SqliteStore, FleetSimulator], capsys: pytest.CaptureFixture[str]
) -> None:
    from autopatch.cli.app import main

    store, fleet = lab
    scan_instances(fleet, store, discover_instances(fleet, store))
    code = main(["--db", store.path, "exposure", "--severity", "Critical", "--format", "json"])
    rows = json.loads(capsys.readouterr().out)
    assert code == 0 and len(rows) == 10
    assert all(row["open_important"] == 0 for row in rows if row["status"] == "assessed")
    code = main(["--db", store.path, "exposure", "--instance", "i-12345678"])
    assert code == 2 and "not a known instance" in capsys.readouterr().err
