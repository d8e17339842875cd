"""The ``FleetViewStore`` port's contract, run against every adapter by ``tests/test_store_contract.py``."""

from __future__ import annotations

from dataclasses import replace

from autopatch.domain.catalog import CatalogDocument
from autopatch.domain.fleet import OfferedUpdate
from autopatch.domain.kev import KevCatalog
from autopatch.store.base import Store

from .kev_store_contract import SHORTCUT
from .store_contract import DB, DISCOVERED, SHA_A, SHA_B, UNKNOWN, WEB, WS2019, WS2022, WS2022_CORE, instance
from .store_contract import january as january_document
from .store_contract import scan as scan_of

CORE = "i-0ccccccccccccccc3"


def _discover(store: Store) -> None:
    store.save_instances(
        [
            instance(WEB, "web-1", OS="Windows Server 2022"),
            instance(DB, "db-1"),
            instance(CORE, "core-1", online=False),
        ],
        DISCOVERED,
    )


def _january_without_windows_server_2019() -> CatalogDocument:
    """January's document revised: Windows Server 2019 (and its KB) no longer listed."""
    document = january_document("2")
    return replace(
        document,
        products=[WS2022, WS2022_CORE],
        affected=[row for row in document.affected if row.product_id != WS2019.product_id],
        fixes=[row for row in document.fixes if row.product_id != WS2019.product_id],
    )


class FleetViewStoreContract:
    def test_scanned_servers_name_every_instance_with_its_newest_scan_by_name(self, store: Store) -> None:
        _discover(store)
        store.save_scans([scan_of(WEB, "10.0.20348.2227", hours=1), scan_of(WEB, "10.0.20348.2322", hours=2)])
        store.save_scans([scan_of(WEB, "10.0.20348.2159", hours=-1)])  # an older scan stored later
        servers = store.scanned_servers()
        assert [server.name for server in servers] == ["core-1", "db-1", "web-1"]
        core, db, web = servers
        assert (web.instance_id, web.build, web.scanned_at) == (WEB, "10.0.20348.2322", scan_of(WEB, "", 2).scanned_at)
        assert web.installed_kbs == frozenset({"KB5034129"}) and web.offered_kbs == frozenset({"KB5034770"})
        assert web.os_tag == "Windows Server 2022" and db.os_tag is None
        assert (web.platform_name, web.platform_version) == ("Microsoft Windows Server 2022 Datacenter", "10.0.20348")
        assert web.installation_type == "Server" and web.online and web.offline_since is None
        assert not db.scanned and db.build is None and db.offered_kbs is None and db.installed_kbs == frozenset()
        assert not core.online and core.offline_since is not None

    def test_a_scan_stored_again_at_the_same_time_replaces_the_newest(self, store: Store) -> None:
        _discover(store)
        store.save_scans([scan_of(WEB, "10.0.20348.2227", hours=1)])
        store.save_scans([scan_of(WEB, "10.0.20348.2322", hours=1)])
        [web] = store.scanned_servers([WEB])
        assert web.build == store.latest_scans([WEB])[WEB].build == "10.0.20348.2322"

    def test_servers_listing_the_same_kbs_share_one_set(self, store: Store) -> None:
        _discover(store)
        store.save_scans([scan_of(WEB, "10.0.20348.2227", 1), scan_of(DB, "10.0.20348.2113", 1)])
        by_id = {server.instance_id: server for server in store.scanned_servers()}
        assert by_id[WEB].installed_kbs is by_id[DB].installed_kbs
        assert by_id[WEB].offered_kbs is by_id[DB].offered_kbs

    def test_scanned_servers_of_given_ids_leave_unknown_ones_out(self, store: Store) -> None:
        _discover(store)
        store.save_scans([scan_of(DB, "10.0.20348.2113", 1)])
        servers = store.scanned_servers([WEB, UNKNOWN, DB, DB])
        assert [(s.instance_id, s.build) for s in servers] == [(DB, "10.0.20348.2113"), (WEB, None)]
        assert store.scanned_servers([]) == []

    def test_the_fleet_log_names_the_instances_each_write_touched(self, store: Store) -> None:
        start = store.fleet_revision()
        _discover(store)
        discovered = store.fleet_revision()
        rescan = replace(scan_of(WEB, "10.0.20348.2227", 1), offered=(OfferedUpdate("KB5035845", "March"),))
        store.save_scans([rescan])
        scanned = store.fleet_revision()

        since_start = store.fleet_changes(start)
        assert since_start is not None and since_start.revision == scanned
        assert since_start.instance_ids == {WEB, DB, CORE}
        assert store.fleet_changes(discovered) == type(since_start)(scanned, frozenset({WEB}))
        nothing = store.fleet_changes(scanned)
        assert nothing is not None and nothing.instance_ids == frozenset() and nothing.revision == scanned
        assert store.fleet_changes(scanned + 5) is None  # a revision this store never had

    def test_the_catalog_log_names_products_and_kbs_of_both_versions_of_a_document(self, store: Store) -> None:
        start = store.catalog_revision()
        store.replace_document(january_document(), SHA_A)
        first = store.catalog_changes(start)
        assert first is not None and first.revision == store.catalog_revision()
        assert first.products == {WS2022.name, WS2022_CORE.name, WS2019.name}
        assert first.kbs == {5034129, 5033118, 5034127, 5033371}  # fixes and what they supersede

        imported = store.catalog_revision()
        store.replace_document(_january_without_windows_server_2019(), SHA_B)
        revised = store.catalog_changes(imported)
        assert revised is not None
        assert WS2019.name in revised.products  # it lost its CVE: its servers must be assessed again
        assert {5034127, 5033371} <= revised.kbs

    def test_a_catalog_write_that_logs_nothing_makes_the_log_say_it_cannot_tell(self, store: Store) -> None:
        store.replace_document(january_document(), SHA_A)
        before = store.catalog_revision()
        store.replace_kev_catalog(KevCatalog("2024.03.04", "2024-03-04T12:00:00.000Z", (SHORTCUT,)), "test", "now")
        assert store.catalog_revision() > before
        assert store.catalog_changes(before) is None
