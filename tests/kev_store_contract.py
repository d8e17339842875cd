"""The ``KevStore`` port's contract, run against every adapter by ``tests/test_store_contract.py``."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

from autopatch.domain.catalog import ImportCounts
from autopatch.domain.kev import KevCatalog, KevEntry, parse_kev_bytes
from autopatch.domain.patching import RunStatus
from autopatch.domain.runs import RunRecord, RunServer
from autopatch.kev_lookup import kev_entries
from autopatch.store.base import Store

KEV_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "kev" / "known_exploited_vulnerabilities.json.gz"

SHORTCUT = KevEntry(
    "CVE-2024-21412",
    date(2024, 2, 13),
    date(2024, 3, 5),
    "Microsoft",
    "Windows",
    "Microsoft Windows Internet Shortcut Files Security Feature Bypass Vulnerability",
    "Internet Shortcut Files … bypass …",
    "Known",
)
KERNEL = KevEntry("CVE-2024-21338", date(2024, 3, 4), date(2024, 3, 25), "Microsoft", "Windows")


def catalog(*entries: KevEntry, version: str = "2024.03.04") -> KevCatalog:
    return KevCatalog(version, f"{version.replace('.', '-')}T12:00:00.000Z", entries)


class KevStoreContract:
    def test_an_empty_store_knows_no_kev_catalog(self, store: Store) -> None:
        assert store.kev_catalog_info() is None
        assert store.list_kev_entries() == []

    def test_a_kev_catalog_is_stored_whole_and_read_back_by_cve(self, store: Store) -> None:
        revision = store.catalog_revision()
        counts = store.replace_kev_catalog(catalog(SHORTCUT, KERNEL), "cisa.json", "2024-03-04T13:00:00+00:00")
        assert counts == ImportCounts(added=2)
        assert store.list_kev_entries() == [KERNEL, SHORTCUT]
        info = store.kev_catalog_info()
        assert info is not None
        assert (info.catalog_version, info.source, info.imported_at, info.count) == (
            "2024.03.04",
            "cisa.json",
            "2024-03-04T13:00:00+00:00",
            2,
        )
        # Exposure kept by the API carries KEV flags: the catalog counter must move with an import.
        assert store.catalog_revision() > revision

    def test_an_import_replaces_every_entry_and_counts_what_changed(self, store: Store) -> None:
        store.replace_kev_catalog(catalog(SHORTCUT, KERNEL), "first", "2024-03-04T13:00:00+00:00")
        later = replace(KERNEL, due_date=date(2024, 3, 26))
        extra = KevEntry("CVE-2024-26169", date(2024, 6, 13), date(2024, 7, 4))
        counts = store.replace_kev_catalog(catalog(later, extra, version="2024.06.13"), "second", "2024-06-13T13:00:00")
        assert counts == ImportCounts(added=1, updated=1, removed=1)
        assert store.list_kev_entries() == [later, extra]
        again = store.replace_kev_catalog(catalog(later, extra, version="2024.06.13"), "third", "2024-06-14T13:00:00")
        assert again == ImportCounts(unchanged=2)
        info = store.kev_catalog_info()
        assert info is not None and (info.source, info.count) == ("third", 2)

    def test_entries_count_from_the_day_cisa_added_them(self, store: Store) -> None:
        store.replace_kev_catalog(catalog(SHORTCUT, KERNEL), "cisa.json", "2024-03-04T13:00:00+00:00")
        assert set(kev_entries(store, date(2024, 3, 3))) == {"CVE-2024-21412"}
        assert set(kev_entries(store, date(2024, 3, 4))) == {"CVE-2024-21412", "CVE-2024-21338"}
        assert set(kev_entries(store, None)) == {"CVE-2024-21412", "CVE-2024-21338"}

    def test_the_real_catalog_reads_back_entry_for_entry(self, store: Store) -> None:
        real = parse_kev_bytes(KEV_FILE.read_bytes(), KEV_FILE.name)
        counts = store.replace_kev_catalog(real, KEV_FILE.name, "2025-08-25T18:00:00+00:00")
        assert counts.added == len(real.entries) == 1404
        assert store.list_kev_entries() == sorted(real.entries, key=lambda entry: entry.cve)

    def test_a_runs_servers_are_listed_exploited_first_then_by_name(self, store: Store) -> None:
        # Both drivers start servers in this order: the store is where exploited-first is kept.
        run = RunRecord("p-20240306-090000-abcdef", "patch", RunStatus.PENDING, "2024-03-06T09:00:00+00:00", {})
        servers = [
            RunServer(run.run_id, "i-0aaaaaaaaaaaaaaa1", "alpha", "Windows Server 2022", None),
            RunServer(run.run_id, "i-0bbbbbbbbbbbbbbb2", "bravo", "Windows Server 2022", None, open_exploited=2),
            RunServer(run.run_id, "i-0ccccccccccccccc3", "charlie", "Windows Server 2022", None, open_exploited=5),
        ]
        store.create_run(run, servers, [])
        listed = store.run_servers(run.run_id)
        assert [(s.name, s.open_exploited) for s in listed] == [("charlie", 5), ("bravo", 2), ("alpha", 0)]
        assert store.run_server(run.run_id, "i-0bbbbbbbbbbbbbbb2").open_exploited == 2

    def test_a_plan_saved_later_keeps_each_servers_exploited_count(self, store: Store) -> None:
        run = replace(
            RunRecord("p-20240306-090000-fedcba", "patch", RunStatus.PENDING, "2024-03-06T09:00:00+00:00", {}),
            planned=False,
        )
        claimed = [
            RunServer(run.run_id, f"i-0{c * 16}{n}", name, None, None)
            for c, n, name in (("a", 1, "alpha"), ("b", 2, "bravo"))
        ]
        store.create_run(run, claimed, [])
        store.save_plan(
            run.run_id, [replace(claimed[0], product="Windows Server 2022", open_exploited=3), claimed[1]], []
        )
        assert [(s.name, s.open_exploited) for s in store.run_servers(run.run_id)] == [("alpha", 3), ("bravo", 0)]
