"""The kept fleet summary: reused while nothing changed, recomputed after a scan or an import, never stale."""

from __future__ import annotations

from autopatch.assessment import fleet_totals
from autopatch.catalog.ingest import import_paths
from autopatch.exposure_cache import FleetExposureCache
from autopatch.fleet.simulator import FleetSimulator
from autopatch.scanning import discover_instances, scan_instances
from autopatch.store.sqlite import SqliteStore

from .conftest import xml_path


def test_the_summary_is_kept_until_the_fleet_moves(lab: tuple[SqliteStore, FleetSimulator]) -> None:
    store, fleet = lab
    cache = FleetExposureCache()
    instances = discover_instances(fleet, store)
    unscanned = cache.get(store)
    assert unscanned.totals["servers"] == 10 and unscanned.totals["servers_assessed"] == 0
    assert cache.get(store) is unscanned  # nothing changed: the same answer, not a recomputed one

    scan_instances(fleet, store, instances[:3], sleep=lambda _: None)
    assert cache.cached(store) is None  # the scans moved the fleet revision
    scanned = cache.get(store)
    assert scanned.totals["servers_assessed"] == 3 and scanned.totals["open_total"] > 0
    assert scanned.totals == fleet_totals(scanned.rows)

    critical = cache.get(store, {"Critical"})
    assert critical.totals["open_critical"] == scanned.totals["open_critical"]
    assert critical.totals["open_total"] < scanned.totals["open_total"]
    assert cache.get(store) is scanned  # each severity filter is kept beside the others


def test_a_rescan_reuses_the_assessment_of_an_unchanged_patch_level(lab: tuple[SqliteStore, FleetSimulator]) -> None:
    store, fleet = lab
    cache = FleetExposureCache()
    instances = discover_instances(fleet, store)
    scan_instances(fleet, store, instances, sleep=lambda _: None)
    before = {row["instance_id"]: row for row in cache.get(store).rows}
    scan_instances(fleet, store, instances[:1], sleep=lambda _: None)  # same facts, a newer scan
    after = {row["instance_id"]: row for row in cache.get(store).rows}
    assert after.keys() == before.keys()
    for instance_id, row in after.items():
        assert row["closing_kbs"] is before[instance_id]["closing_kbs"]  # the summary object itself was reused
        if instance_id != instances[0].instance_id:
            assert row["scanned_at"] == before[instance_id]["scanned_at"]


def test_an_import_makes_the_kept_summary_stale(empty_store: SqliteStore) -> None:
    cache = FleetExposureCache()
    kept = cache.get(empty_store)
    assert cache.cached(empty_store) is kept
    import_paths(empty_store, [xml_path("2024-Jan")])
    assert cache.cached(empty_store) is None
