"""The maintained fleet summary: after scans, discoveries and imports it equals a full assessment, and it got there
by assessing only what moved."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import autopatch.cve_deadlines
from autopatch.assessment import fleet_exposure, load_product_catalog
from autopatch.catalog.queries import resolve_products
from autopatch.domain.catalog import (
    AffectedProduct,
    CatalogDocument,
    DocumentInfo,
    KbFix,
    Product,
    Vulnerability,
    kb_article_url,
)
from autopatch.domain.fleet import Instance
from autopatch.domain.kev import KevCatalog, KevEntry
from autopatch.exposure_cache import FleetExposureCache, FleetSummary
from autopatch.fleet.simulator import FleetSimulator, SimulatorConfig
from autopatch.scanning import discover_instances, scan_instances
from autopatch.store.sqlite import SqliteStore
from autopatch.summary_maintenance import stale_products

WS2019 = "Windows Server 2019"
WS2022 = "Windows Server 2022"


@pytest.fixture
def fleet_store(catalog_db: Path, tmp_path: Path) -> Iterator[SqliteStore]:
    """A copy of the session catalog with 30 scanned simulated servers of two products (two offline)."""
    shutil.copyfile(catalog_db, tmp_path / "fleet.db")
    store = SqliteStore(tmp_path / "fleet.db")
    catalog = SqliteStore(catalog_db)
    config = SimulatorConfig(
        servers=30, seed=5, offline_fraction=0.07, time_scale=1e9, products=[WS2019, WS2022], core_fraction=0.0
    )
    fleet = FleetSimulator(catalog, config, state_path=tmp_path / "fleet.simulator.db")
    scan_instances(fleet, store, discover_instances(fleet, store), sleep=lambda _: None)
    yield store
    fleet.close()
    catalog.close()
    store.close()


def full(store: SqliteStore) -> FleetSummary:
    """What a cache that never saw the fleet before answers: the whole fleet assessed now."""
    return FleetExposureCache().get(store)


def assert_same(kept: FleetSummary, fresh: FleetSummary) -> None:
    assert kept.rows == fresh.rows
    assert kept.totals == fresh.totals


def by_id(summary: FleetSummary) -> dict[str, dict[str, Any]]:
    return {str(row["instance_id"]): row for row in summary.rows}


def assessed(summary: FleetSummary, product: str) -> list[dict[str, Any]]:
    return [row for row in summary.rows if row["status"] == "assessed" and row["product"] == product]


def rescan_at_level_of(store: SqliteStore, server: str, like: str, hours: int = 1) -> None:
    """Store a newer scan of ``server`` showing the patch level of server ``like``."""
    template = store.latest_scans([like])[like]
    store.save_scans([replace(template, instance_id=server, scanned_at=datetime.now(UTC) + timedelta(hours=hours))])


def test_scans_update_the_kept_summary_to_what_a_full_assessment_gives(fleet_store: SqliteStore) -> None:
    cache = FleetExposureCache()
    before = cache.get(fleet_store)
    servers = assessed(before, WS2022)
    most, least = max(servers, key=lambda r: r["open_total"]), min(servers, key=lambda r: r["open_total"])
    scans = fleet_store.latest_scans([str(most["instance_id"]), str(least["instance_id"])])
    later = datetime.now(UTC) + timedelta(hours=1)
    fleet_store.save_scans(
        [
            replace(
                scans[str(least["instance_id"])], instance_id=str(most["instance_id"]), scanned_at=later
            ),  # patched
            replace(scans[str(most["instance_id"])], instance_id=str(least["instance_id"]), scanned_at=later),  # undone
        ]
    )

    after = cache.get(fleet_store)
    assert_same(after, full(fleet_store))
    assert by_id(after)[str(most["instance_id"])]["open_total"] == least["open_total"]
    assert after.totals["open_total"] == before.totals["open_total"]  # the two swapped levels
    untouched = [row for row in before.rows if row["instance_id"] not in {most["instance_id"], least["instance_id"]}]
    assert all(by_id(after)[str(row["instance_id"])] is row for row in untouched)  # not assessed again


def test_a_scan_of_an_unscanned_server_and_a_new_day_both_end_as_a_full_assessment(
    fleet_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = FleetExposureCache()
    offline = next(row for row in cache.get(fleet_store).rows if row["status"] != "assessed")
    donor = assessed(cache.get(fleet_store), WS2019)[0]
    rescan_at_level_of(fleet_store, str(offline["instance_id"]), str(donor["instance_id"]))
    assert_same(cache.get(fleet_store), full(fleet_store))

    monkeypatch.setattr(autopatch.cve_deadlines, "today", lambda: date(2031, 1, 1))  # everything is overdue
    later = cache.get(fleet_store)
    assert_same(later, full(fleet_store))
    assert later.totals["overdue_total"] == later.totals["open_total"] > 0


def test_discovered_and_renamed_servers_take_their_place_in_the_order(fleet_store: SqliteStore) -> None:
    cache = FleetExposureCache()
    before = cache.get(fleet_store)
    first = fleet_store.get_instance(str(before.rows[0]["instance_id"]))
    assert first is not None
    newcomer = Instance("i-0123456789abcdef0", "aaa-new-server", first.platform_name, first.platform_version, True)
    fleet_store.save_instances([replace(first, name="zzz-renamed"), newcomer], datetime.now(UTC))

    after = cache.get(fleet_store)
    assert_same(after, full(fleet_store))
    assert after.rows[0]["name"] == "aaa-new-server" and after.rows[0]["status"] == "not scanned"
    assert after.rows[-1]["name"] == "zzz-renamed"
    assert after.totals["servers"] == before.totals["servers"] + 1


def _document(store: SqliteStore, product: str, kb: int, supersedes: tuple[int, ...] = ()) -> CatalogDocument:
    """A one-CVE document on one product: a new Critical CVE, fixed by ``kb`` (a Windows Update KB)."""
    [listed] = [p for p in resolve_products(store, product) if p.name == product]
    cve = "CVE-2031-0001"
    info = DocumentInfo("2031-Jan", "January 2031 Security Updates", "1", date(2031, 1, 14), date(2031, 1, 14), "test")
    return CatalogDocument(
        info,
        [Product(listed.product_id, listed.name, listed.family)],
        [Vulnerability(cve, "Windows Test Remote Code Execution Vulnerability", (), False, False, date(2031, 1, 14))],
        [AffectedProduct(cve, listed.product_id, "Critical", "Remote Code Execution", 9.8, None, None)],
        [KbFix(cve, listed.product_id, kb, "Security Update", None, supersedes, "Yes", kb_article_url(kb), None)],
    )


def test_an_import_reassesses_only_the_servers_of_the_product_it_names(fleet_store: SqliteStore) -> None:
    cache = FleetExposureCache()
    before = cache.get(fleet_store)
    fleet_store.replace_document(_document(fleet_store, WS2019, 9990001), "a" * 64)

    after = cache.get(fleet_store)
    assert_same(after, full(fleet_store))
    was = by_id(before)
    for row in assessed(after, WS2019):
        assert row["open_critical"] == was[str(row["instance_id"])]["open_critical"] + 1  # the new CVE is open
    assert all(row is was[str(row["instance_id"])] for row in assessed(after, WS2022))  # not assessed again


def test_a_kb_in_another_products_chain_makes_that_product_stale(fleet_store: SqliteStore) -> None:
    """A document about Windows Server 2019 naming a KB that supersedes a 2022 update moves 2022's chain too."""
    cache = FleetExposureCache()
    cache.get(fleet_store)
    catalogs = {product: load_product_catalog(fleet_store, product) for product in (WS2019, WS2022)}
    newest_2022 = max(catalogs[WS2022].kbs, key=lambda kb: (catalogs[WS2022].kbs[kb].month, kb))
    fleet_store.replace_document(_document(fleet_store, WS2019, 9990002, supersedes=(newest_2022,)), "b" * 64)
    changes = fleet_store.catalog_changes(fleet_store.catalog_revision() - 1)
    assert changes is not None
    assert stale_products(catalogs, changes) == {WS2019, WS2022}
    assert_same(cache.get(fleet_store), full(fleet_store))


def test_a_kev_import_logs_no_products_and_the_whole_fleet_is_assessed_again(fleet_store: SqliteStore) -> None:
    cache = FleetExposureCache()
    before = cache.get(fleet_store)
    open_cves = [
        cve
        for row in assessed(before, WS2022)[:1]
        for cve in (d["cve"] for d in full_detail(fleet_store, str(row["instance_id"])) if d["status"] == "open")
    ]
    entry = KevEntry(open_cves[0], date(2020, 1, 1), date(2020, 2, 1), "Microsoft", "Windows")
    fleet_store.replace_kev_catalog(KevCatalog("2031.01.01", "2031-01-01T00:00:00.000Z", (entry,)), "test", "now")

    after = cache.get(fleet_store)
    assert_same(after, full(fleet_store))
    assert after.totals["open_exploited"] > before.totals["open_exploited"]


def full_detail(store: SqliteStore, instance_id: str) -> list[dict[str, Any]]:
    [row] = fleet_exposure(store, [instance_id], with_cves=True)
    return list(row["cves"])


def test_each_severity_filter_is_kept_and_brought_up_to_date_on_its_own(fleet_store: SqliteStore) -> None:
    cache = FleetExposureCache()
    critical = cache.get(fleet_store, {"Critical"})
    servers = assessed(critical, WS2019)
    rescan_at_level_of(fleet_store, str(servers[0]["instance_id"]), str(servers[-1]["instance_id"]))
    cache.get(fleet_store)  # the unfiltered summary, first computed now
    fleet_store.replace_document(_document(fleet_store, WS2019, 9990003), "c" * 64)

    assert_same(cache.get(fleet_store, {"Critical"}), FleetExposureCache().get(fleet_store, {"Critical"}))
    assert_same(cache.get(fleet_store), full(fleet_store))


def test_an_import_about_a_product_the_fleet_does_not_run_reassesses_nothing(fleet_store: SqliteStore) -> None:
    cache = FleetExposureCache()
    before = cache.get(fleet_store)
    fleet_store.replace_document(_document(fleet_store, "Windows Server 2016", 9990004), "d" * 64)

    after = cache.get(fleet_store)
    assert after is not before  # brought to the new revision
    assert all(new is old for new, old in zip(after.rows, before.rows, strict=True))
    assert_same(after, full(fleet_store))
