"""The store ports' contract (``store/base.py``): what every adapter must do, written once.

``StoreContract`` holds the tests; ``tests/test_store_contract.py`` runs them against each
adapter through its ``store`` fixture (a fresh, empty store per test). Nothing here knows which
adapter it talks to: only the ports' methods and the domain types are used, and errors are the
``autopatch.errors`` an adapter must translate its own into.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from functools import cache

import pytest

from autopatch.catalog.ingest import import_paths
from autopatch.domain.access import AuditEntry, Principal, Role
from autopatch.domain.catalog import (
    AffectedProduct,
    CatalogDocument,
    DocumentInfo,
    ImportCounts,
    KbFix,
    Product,
    ProductSummary,
    Vulnerability,
    kb_article_url,
)
from autopatch.domain.fleet import Instance, OfferedUpdate, ScanReport
from autopatch.domain.patching import KbState, RunStatus
from autopatch.domain.runs import RunItem, RunRecord, RunServer
from autopatch.errors import ConflictError, NotFoundError, StateError
from autopatch.store.base import CatalogStore, Store
from autopatch.store.sqlite import SqliteStore

from .conftest import xml_path

WEB = "i-0aaaaaaaaaaaaaaa1"
DB = "i-0bbbbbbbbbbbbbbb2"
UNKNOWN = "i-0fffffffffffffff9"
DISCOVERED = datetime(2024, 2, 14, 8, 0, tzinfo=UTC)
LEASE = 1_000.0  # lease times are epoch seconds the caller chooses: no clock in the contract


def instance(instance_id: str, name: str, online: bool = True, **tags: str) -> Instance:
    return Instance(instance_id, name, "Microsoft Windows Server 2022 Datacenter", "10.0.20348", online, tags=tags)


def scan(instance_id: str, build: str, hours: int) -> ScanReport:
    return ScanReport(
        instance_id=instance_id,
        os_caption="Microsoft Windows Server 2022 Datacenter",
        build=build,
        installation_type="Server",
        installed_kbs=frozenset({"KB5034129"}),
        offered=(OfferedUpdate("KB5034770", "2024-02 Cumulative Update"),),
        pending_reboot=False,
        scanned_at=DISCOVERED + timedelta(hours=hours),
        boot_time=DISCOVERED,
    )


def run_record(run_id: str, created_at: str = "2024-02-14T09:00:00+00:00", owner: str | None = None) -> RunRecord:
    return RunRecord(run_id, "patch", RunStatus.PENDING, created_at, {"severity": "Critical"}, owner=owner)


def create(store: Store, run_id: str, *kbs: str, created_at: str = "2024-02-14T09:00:00+00:00") -> RunRecord:
    """A run on WEB and DB with the given Pending KBs on each (KB5034770 when none are named)."""
    run = run_record(run_id, created_at)
    servers = [
        RunServer(run_id, WEB, "web-1", "Windows Server 2022", "10.0.20348.2227"),
        RunServer(run_id, DB, "db-1", None, None),
    ]
    items = [
        RunItem(run_id, server.instance_id, kb, position, KbState.PENDING, "Security Update", None, "Yes")
        for server in servers
        for position, kb in enumerate(kbs or ("KB5034770",))
    ]
    store.create_run(run, servers, items)
    return run


# --- small catalog documents, built by hand as the parsers build them ---------------------------

WS2022 = Product("11923", "Windows Server 2022", "Windows")
WS2022_CORE = Product("11924", "Windows Server 2022 (Server Core installation)", "Windows")
WS2019 = Product("11571", "Windows Server 2019", "Windows")
SHA_A, SHA_B = "a" * 64, "b" * 64


def catalog_link(kb: int) -> str:
    return f"https://catalog.update.microsoft.com/v7/site/Search.aspx?q=KB{kb}"


def fix(cve: str, product: Product, kb: int, build: str | None, supersedes: tuple[int, ...] = ()) -> KbFix:
    return KbFix(
        cve, product.product_id, kb, "Security Update", build, supersedes, "Yes", kb_article_url(kb), catalog_link(kb)
    )


def vulnerability(cve: str, title: str, day: int) -> Vulnerability:
    return Vulnerability(cve, title, ("CWE-122",), False, day == 9, date(2024, 1, day))


def january(revision: str = "1") -> CatalogDocument:
    """Two CVEs on three products: one cumulative update per release, each superseding December's."""
    info = DocumentInfo(
        "2024-Jan", "January 2024 Security Updates", revision, date(2024, 1, 9), date(2024, 1, 9), "cvrf-xml"
    )
    return CatalogDocument(
        info,
        [WS2022, WS2022_CORE, WS2019],
        [
            vulnerability("CVE-2024-20674", "Windows Kerberos Security Feature Bypass Vulnerability", 9),
            vulnerability("CVE-2024-20698", "Windows Kernel Elevation of Privilege Vulnerability", 10),
        ],
        [
            AffectedProduct(
                "CVE-2024-20674", WS2022.product_id, "Critical", "Security Feature Bypass", 9.0, 7.8, "CVSS:3.1/AV:A"
            ),
            AffectedProduct(
                "CVE-2024-20674", WS2022_CORE.product_id, "Critical", "Security Feature Bypass", 9.0, 7.8, None
            ),
            AffectedProduct("CVE-2024-20698", WS2022.product_id, "Important", "Elevation of Privilege", 7.8, 6.8, None),
            AffectedProduct(
                "CVE-2024-20698", WS2019.product_id, "Important", "Elevation of Privilege", 7.8, None, None
            ),
        ],
        [
            fix("CVE-2024-20674", WS2022, 5034129, "10.0.20348.2227", (5033118,)),
            fix("CVE-2024-20674", WS2022_CORE, 5034129, "10.0.20348.2227", (5033118,)),
            fix("CVE-2024-20698", WS2022, 5034129, "10.0.20348.2227", (5033118,)),
            fix("CVE-2024-20698", WS2019, 5034127, "10.0.17763.5329", (5033371,))._replace(download_url=None),
        ],
    )


def february() -> CatalogDocument:
    """The next month: a new CVE on Windows Server 2022 only, fixed by the LCU superseding January's."""
    info = DocumentInfo("2024-Feb", "February 2024 Security Updates", "3", date(2024, 2, 13), None, "cvrf-xml")
    custom = "https://download.example/kb5034770.msu"
    return CatalogDocument(
        info,
        [WS2022],
        [
            Vulnerability(
                "CVE-2024-21338", "Windows Kernel Elevation of Privilege Vulnerability", ("CWE-822",), True, False, None
            )
        ],
        [AffectedProduct("CVE-2024-21338", WS2022.product_id, "Important", "Elevation of Privilege", 7.8, 7.2, None)],
        [fix("CVE-2024-21338", WS2022, 5034770, "10.0.20348.2322", (5034129,))._replace(download_url=custom)],
    )


@cache
def sqlite_reference(month: str) -> SqliteStore:
    """The SQLite adapter's answers for a real month: what every other adapter must agree with."""
    reference = SqliteStore(":memory:")
    import_paths(reference, [xml_path(month)], workers=1)
    return reference


def catalog_answers(store: CatalogStore, kbs: list[int]) -> dict[str, object]:
    """What the catalog queries ask of a store for a few servers' products and KBs, in a comparable order."""
    names = [
        f"Windows Server {year}{core}" for year in (2016, 2019, 2022) for core in ("", " (Server Core installation)")
    ]
    products = [p.product_id for name in names for p in store.products_named(name, "")]
    documents = [replace(d, imported_at="") for d in store.list_documents()]
    return {
        "documents": documents,
        "counts": store.counts(),
        "products": products,
        "summaries": [s for s in store.product_summaries() if s.product_id in products],
        "affected": sorted(store.affected(products), key=lambda r: (r.document_id, r.cve, r.product_id)),
        "month": sorted(store.affected(products, document_ids=["2024-Jan"]), key=lambda r: (r.cve, r.product_id)),
        "fixes": sorted(store.fixes_for_products(products), key=lambda r: (r.fix.cve, r.fix.product_id, r.fix.kb)),
        "kb_fixes": sorted(store.fixes_for_kbs(kbs), key=lambda r: (r.fix.cve, r.fix.product_id, r.fix.kb)),
        "superseded_by": store.superseded_by(kbs),
        "supersedes": store.supersedes(kbs),
    }


class StoreContract:
    """Every adapter of the store ports passes these; a subclass only supplies the ``store`` fixture."""

    # --- fleet -----------------------------------------------------------------------------------

    def test_saved_instances_are_listed_by_name_and_found_by_id_with_their_tags(self, store: Store) -> None:
        web, db = instance(WEB, "web-1", Role="web", Env="prod"), instance(DB, "db-1", online=False)
        store.save_instances([web, db], DISCOVERED)
        assert [i.instance_id for i in store.list_instances()] == [DB, WEB]
        assert store.get_instance(WEB) == web
        found = store.get_instance(DB)
        assert found is not None and found.online is False and found.tags == {}
        assert store.get_instance(UNKNOWN) is None

    def test_an_instance_keeps_when_it_first_went_offline_until_it_is_back(self, store: Store) -> None:
        store.save_instances([instance(WEB, "web-1", online=False)], DISCOVERED)
        first = store.get_instance(WEB)
        assert first is not None and first.offline_since is not None
        store.save_instances([instance(WEB, "web-1", online=False)], DISCOVERED + timedelta(hours=1))
        assert store.get_instance(WEB) == first
        store.save_instances([instance(WEB, "web-renamed", Role="web")], DISCOVERED + timedelta(hours=2))
        back = store.get_instance(WEB)
        assert back == instance(WEB, "web-renamed", Role="web")

    def test_instances_no_longer_discovered_are_kept(self, store: Store) -> None:
        store.save_instances([instance(WEB, "web-1"), instance(DB, "db-1")], DISCOVERED)
        store.save_instances([instance(WEB, "web-1")], DISCOVERED + timedelta(hours=1))
        assert {i.instance_id for i in store.list_instances()} == {WEB, DB}

    def test_latest_scans_returns_the_newest_scan_of_each_instance(self, store: Store) -> None:
        store.save_instances([instance(WEB, "web-1"), instance(DB, "db-1")], DISCOVERED)
        newest = scan(WEB, "10.0.20348.2322", hours=2)
        store.save_scans([scan(WEB, "10.0.20348.2227", hours=1), newest, scan(DB, "10.0.20348.2113", hours=0)])
        store.save_scans([scan(WEB, "10.0.20348.2159", hours=-1)])  # an older scan stored later
        latest = store.latest_scans()
        assert latest[WEB] == newest
        assert latest[DB].build == "10.0.20348.2113"
        assert set(store.latest_scans([DB])) == {DB}
        assert store.latest_scans([UNKNOWN]) == {}

    # --- runs: creation and reads ----------------------------------------------------------------

    def test_a_created_run_reads_back_with_its_servers_and_items(self, store: Store) -> None:
        run = create(store, "p-1", "KB5034439", "KB5034770")
        assert store.get_run("p-1") == run
        assert [s.name for s in store.run_servers("p-1")] == ["db-1", "web-1"]
        server = store.run_server("p-1", WEB)
        assert server == RunServer("p-1", WEB, "web-1", "Windows Server 2022", "10.0.20348.2227")
        items = store.run_items("p-1", WEB)
        assert [(i.kb, i.position, i.state) for i in items] == [
            ("KB5034439", 0, KbState.PENDING),
            ("KB5034770", 1, KbState.PENDING),
        ]
        assert all(i.updated_at for i in items)  # the store stamps every item
        assert replace(store.run_item("p-1", WEB, "KB5034770"), updated_at="") == RunItem(
            "p-1", WEB, "KB5034770", 1, KbState.PENDING, "Security Update", None, "Yes"
        )
        assert [(i.instance_id, i.kb) for i in store.run_items("p-1")] == [
            (WEB, "KB5034439"),
            (WEB, "KB5034770"),
            (DB, "KB5034439"),
            (DB, "KB5034770"),
        ]

    def test_unknown_runs_servers_and_items_are_not_found(self, store: Store) -> None:
        create(store, "p-1")
        with pytest.raises(NotFoundError):
            store.get_run("p-missing")
        with pytest.raises(NotFoundError):
            store.run_server("p-1", UNKNOWN)
        with pytest.raises(NotFoundError):
            store.run_item("p-1", WEB, "KB5000001")
        with pytest.raises(NotFoundError):
            store.transition_item("p-1", WEB, "KB5000001", KbState.IN_PROGRESS)

    def test_runs_are_listed_newest_first_and_unfinished_ones_oldest_first(self, store: Store) -> None:
        for number, hour in ((1, 9), (2, 11), (3, 10)):
            store.create_run(run_record(f"p-{number}", f"2024-02-14T{hour:02}:00:00+00:00"), [], [])
        assert [r.run_id for r in store.list_runs()] == ["p-2", "p-3", "p-1"]
        assert [r.run_id for r in store.list_runs(limit=2)] == ["p-2", "p-3"]
        store.set_run_status("p-3", RunStatus.SUCCEEDED)
        assert [r.run_id for r in store.unfinished_runs()] == ["p-1", "p-2"]

    def test_runs_are_paged_with_an_offset_and_counted(self, store: Store) -> None:
        assert store.count_runs() == 0 and store.list_runs(limit=10, offset=0) == []
        for number, hour in ((1, 9), (2, 11), (3, 10), (4, 10)):  # p-3 and p-4 share a time: the id decides
            store.create_run(run_record(f"p-{number}", f"2024-02-14T{hour:02}:00:00+00:00"), [], [])
        assert store.count_runs() == 4
        pages = [[r.run_id for r in store.list_runs(limit=2, offset=offset)] for offset in (0, 2, 4)]
        assert pages == [["p-2", "p-4"], ["p-3", "p-1"], []]
        assert [r.run_id for r in store.list_runs(limit=10, offset=3)] == ["p-1"]

    def test_a_server_held_by_an_unfinished_run_cannot_join_another(self, store: Store) -> None:
        create(store, "p-1")
        other = run_record("p-2")
        with pytest.raises(ConflictError, match="p-1"):
            store.create_run(other, [RunServer("p-2", DB, "db-1", None, None)], [])
        with pytest.raises(NotFoundError):
            store.get_run("p-2")  # nothing of the refused run was stored
        assert store.run_holding(DB) == "p-1"
        assert store.run_holding(UNKNOWN) is None

    def test_a_server_is_free_once_its_run_ends_or_its_work_is_done(self, store: Store) -> None:
        create(store, "p-1")
        store.update_server("p-1", WEB, status="Done")
        assert store.run_holding(WEB) is None and store.run_holding(DB) == "p-1"
        store.set_run_status("p-1", RunStatus.FAILED, "max errors")
        assert store.run_holding(DB) is None
        create(store, "p-2", created_at="2024-02-14T10:00:00+00:00")  # both servers may now join a new run
        assert store.run_holding(DB) == "p-2"

    def test_an_unplanned_run_gets_its_plan_once(self, store: Store) -> None:
        run = replace(run_record("p-1"), planned=False)
        store.create_run(run, [RunServer("p-1", WEB, "web-1", None, None)], [])
        assert store.get_run("p-1").planned is False and store.run_items("p-1") == []
        server = RunServer("p-1", WEB, "web-1", "Windows Server 2022", "10.0.20348.2227")
        store.save_plan("p-1", [server], [RunItem("p-1", WEB, "KB5034770", 0, KbState.PENDING)])
        assert store.get_run("p-1").planned is True
        assert store.run_server("p-1", WEB).build_before == "10.0.20348.2227"
        assert [i.kb for i in store.run_items("p-1")] == ["KB5034770"]
        with pytest.raises(StateError):
            store.save_plan("p-1", [server], [])

    # --- runs: state changes ---------------------------------------------------------------------

    def test_items_move_only_along_the_state_machine_and_every_move_is_recorded(self, store: Store) -> None:
        create(store, "p-1")
        store.transition_item("p-1", WEB, "KB5034770", KbState.IN_PROGRESS, "sent")
        with pytest.raises(StateError):
            store.transition_item("p-1", WEB, "KB5034770", KbState.PENDING)
        assert store.run_item("p-1", WEB, "KB5034770").state is KbState.IN_PROGRESS
        store.transition_item("p-1", WEB, "KB5034770", KbState.SUCCESS, "verified", reboot_required=True)
        item = store.run_item("p-1", WEB, "KB5034770")
        assert (item.state, item.reason, item.reboot_required) == (KbState.SUCCESS, "verified", True)
        moves = [t for t in store.transitions("p-1") if t.instance_id == WEB]
        assert [(t.from_state, t.to_state, t.note) for t in moves] == [
            (None, KbState.PENDING, ""),
            (KbState.PENDING, KbState.IN_PROGRESS, "sent"),
            (KbState.IN_PROGRESS, KbState.SUCCESS, "verified"),
        ]
        stamps = [t.at for t in moves]
        assert all(stamps) and stamps == sorted(stamps)
        assert [t.to_state for t in store.transitions("p-1") if t.instance_id == DB] == [KbState.PENDING]

    def test_attempts_are_numbered_per_kb_and_keep_what_was_recorded(self, store: Store) -> None:
        create(store, "p-1", "KB5034439", "KB5034770")
        assert store.start_attempt("p-1", WEB, "KB5034770", "token-1") == 1
        assert store.start_attempt("p-1", WEB, "KB5034770", "token-2") == 2
        assert store.start_attempt("p-1", WEB, "KB5034439", "token-3") == 1
        first = store.attempts("p-1", WEB, "KB5034770")[0]
        assert (first.attempt, first.token, first.phase, first.command_id) == (1, "token-1", "sending", None)
        assert first.sent_at  # the intent is stamped before anything is sent
        store.update_attempt("p-1", WEB, "KB5034770", 2, phase="done", command_id="c-2", exit_code=0, hresult=-1)
        second = store.attempts("p-1", WEB, "KB5034770")[1]
        assert (second.phase, second.command_id, second.exit_code, second.hresult) == ("done", "c-2", 0, -1)
        assert [(a.kb, a.attempt) for a in store.attempts("p-1")] == [
            ("KB5034439", 1),
            ("KB5034770", 1),
            ("KB5034770", 2),
        ]
        assert store.attempts("p-1", DB) == []
        with pytest.raises(ValueError, match="unknown attempt fields"):
            store.update_attempt("p-1", WEB, "KB5034770", 1, colour="red")

    def test_server_updates_and_reboots_are_kept(self, store: Store) -> None:
        create(store, "p-1")
        store.update_server("p-1", WEB, status="Running", started_at="2024-02-14T09:01:00+00:00")
        number = store.start_attempt("p-1", WEB, "KB5034770", "token-1")
        store.record_reboot("p-1", WEB, [("KB5034770", number)], "2024-02-14T09:30:00+00:00", "2024-02-14T08:00:00")
        store.record_reboot("p-1", WEB, [])
        store.update_server("p-1", WEB, status="Done", build_after="10.0.20348.2322")
        server = store.run_server("p-1", WEB)
        assert (server.status, server.started_at, server.build_after, server.reboots) == (
            "Done",
            "2024-02-14T09:01:00+00:00",
            "10.0.20348.2322",
            2,
        )
        assert (server.reboot_requested_at, server.boot_before) == ("2024-02-14T09:30:00+00:00", "2024-02-14T08:00:00")
        assert store.attempts("p-1", WEB)[0].phase == "rebooting"
        assert store.run_server("p-1", DB).reboots == 0
        with pytest.raises(ValueError, match="unknown server fields"):
            store.update_server("p-1", WEB, colour="red")

    def test_run_status_stamps_its_start_and_its_end(self, store: Store) -> None:
        create(store, "p-1")
        store.set_run_status("p-1", RunStatus.RUNNING)
        running = store.get_run("p-1")
        assert running.status is RunStatus.RUNNING and running.started_at and running.finished_at is None
        store.set_run_status("p-1", RunStatus.FAILED, "max errors reached")
        failed = store.get_run("p-1")
        assert (failed.status, failed.reason, failed.started_at) == (
            RunStatus.FAILED,
            "max errors reached",
            running.started_at,
        )
        assert failed.finished_at is not None and failed.finished_at >= running.started_at

    def test_cancel_cancels_pending_kbs_and_idle_servers_at_once(self, store: Store) -> None:
        create(store, "p-1")
        assert store.cancel_run("p-1", "operator") is RunStatus.CANCELLED
        assert {i.state for i in store.run_items("p-1")} == {KbState.CANCELLED}
        assert {s.status for s in store.run_servers("p-1")} == {"Cancelled"}
        run = store.get_run("p-1")
        assert (run.status, run.reason) == (RunStatus.CANCELLED, "operator") and run.finished_at
        assert store.run_holding(WEB) is None
        with pytest.raises(StateError):
            store.cancel_run("p-1", "again")
        with pytest.raises(NotFoundError):
            store.cancel_run("p-missing", "operator")

    def test_cancel_lets_an_install_in_flight_finish(self, store: Store) -> None:
        create(store, "p-1", "KB5034439", "KB5034770")
        store.update_server("p-1", WEB, status="Running")
        store.transition_item("p-1", WEB, "KB5034439", KbState.IN_PROGRESS)
        assert store.cancel_run("p-1", "operator") is RunStatus.CANCELLING
        states = {(i.instance_id, i.kb): i.state for i in store.run_items("p-1")}
        assert states[(WEB, "KB5034439")] is KbState.IN_PROGRESS
        assert states[(WEB, "KB5034770")] is states[(DB, "KB5034770")] is KbState.CANCELLED
        assert store.run_server("p-1", WEB).status == "Running" and store.run_server("p-1", DB).status == "Cancelled"
        assert store.get_run("p-1").finished_at is None
        assert store.run_holding(WEB) == "p-1" and store.run_holding(DB) is None

    def test_the_status_view_shows_the_latest_item_of_each_kb_across_runs(self, store: Store) -> None:
        create(store, "p-1", "KB5034439", "KB5034770")
        store.transition_item("p-1", WEB, "KB5034770", KbState.IN_PROGRESS)
        store.transition_item("p-1", WEB, "KB5034770", KbState.FAILED, "0x80070643")
        store.set_run_status("p-1", RunStatus.FAILED)
        create(store, "r-2", "KB5034770", created_at="2024-02-14T10:00:00+00:00")
        latest = {item.kb: item.run_id for item in store.items_of_instance(WEB)}
        assert latest == {"KB5034439": "p-1", "KB5034770": "r-2"}
        assert store.items_of_instance(UNKNOWN) == []

    def test_notifications_are_recorded_in_order(self, store: Store) -> None:
        create(store, "p-1")
        store.record_notification("p-1", "sns", True, None)
        store.record_notification("p-1", "webhook", False, "HTTP 500")
        assert store.notifications("p-1") == [("sns", True, None), ("webhook", False, "HTTP 500")]

    # --- runs: ownership -------------------------------------------------------------------------

    def test_the_first_claim_wins_and_others_wait_for_the_lease_to_run_out(self, store: Store) -> None:
        create(store, "p-1")
        assert store.claim_run("p-1", "host:1:a", LEASE + 30, now_epoch=LEASE)
        assert not store.claim_run("p-1", "host:2:b", LEASE + 60, now_epoch=LEASE + 10)
        assert store.get_run("p-1").owner == "host:1:a"
        assert store.claim_run("p-1", "host:1:a", LEASE + 40, now_epoch=LEASE + 10)  # its own again
        assert store.claim_run("p-1", "host:2:b", LEASE + 100, now_epoch=LEASE + 41)  # lease ran out
        run = store.get_run("p-1")
        assert (run.owner, run.lease_expires) == ("host:2:b", LEASE + 100)

    def test_a_dead_owner_is_taken_over_only_while_it_is_still_the_owner(self, store: Store) -> None:
        create(store, "p-1")
        store.claim_run("p-1", "host:1:a", LEASE + 30, now_epoch=LEASE)
        assert not store.claim_run("p-1", "host:3:c", LEASE + 30, now_epoch=LEASE, dead_owner="host:9:z")
        assert store.claim_run("p-1", "host:3:c", LEASE + 30, now_epoch=LEASE, dead_owner="host:1:a")
        assert store.get_run("p-1").owner == "host:3:c"

    def test_a_finished_run_cannot_be_claimed(self, store: Store) -> None:
        create(store, "p-1")
        store.set_run_status("p-1", RunStatus.SUCCEEDED)
        assert not store.claim_run("p-1", "host:1:a", LEASE + 30, now_epoch=LEASE)
        assert store.get_run("p-1").owner is None

    def test_only_the_owner_renews_or_releases_its_lease(self, store: Store) -> None:
        create(store, "p-1")
        store.claim_run("p-1", "host:1:a", LEASE + 30, now_epoch=LEASE)
        assert not store.renew_lease("p-1", "host:2:b", LEASE + 90)
        assert store.renew_lease("p-1", "host:1:a", LEASE + 60)
        store.release_run("p-1", "host:2:b")  # not its run: nothing changes
        assert (store.get_run("p-1").owner, store.get_run("p-1").lease_expires) == ("host:1:a", LEASE + 60)
        store.release_run("p-1", "host:1:a")
        run = store.get_run("p-1")
        assert (run.owner, run.lease_expires) == (None, None)
        assert not store.renew_lease("p-1", "host:1:a", LEASE + 90)
        assert store.claim_run("p-1", "host:2:b", LEASE + 30, now_epoch=LEASE)  # free at once

    # Access: tokens by digest, and the audit log.

    def test_a_token_acts_as_its_principal_until_it_is_revoked(self, store: Store) -> None:
        created = datetime(2024, 2, 14, 9, 0, tzinfo=UTC)
        record = store.create_token("ops", Role.OPERATOR, "d" * 64, created)
        assert (record.name, record.role, record.revoked_at) == ("ops", Role.OPERATOR, None)
        assert store.principal_for_digest("d" * 64, created) == Principal("ops", Role.OPERATOR)
        assert store.principal_for_digest("e" * 64, created) is None
        revoked = store.revoke_token("ops", created + timedelta(minutes=1))
        assert revoked.revoked_at is not None
        assert store.principal_for_digest("d" * 64, created + timedelta(minutes=2)) is None
        with pytest.raises(NotFoundError):
            store.revoke_token("ops", created + timedelta(minutes=3))

    def test_a_live_token_name_is_unique_and_a_revoked_one_may_be_reused(self, store: Store) -> None:
        at = datetime(2024, 2, 14, 9, 0, tzinfo=UTC)
        store.create_token("ci", Role.VIEWER, "a" * 64, at)
        with pytest.raises(ConflictError, match="ci"):
            store.create_token("ci", Role.ADMIN, "b" * 64, at)
        store.revoke_token("ci", at)
        store.create_token("ci", Role.ADMIN, "c" * 64, at + timedelta(seconds=1))
        assert store.principal_for_digest("c" * 64, at) == Principal("ci", Role.ADMIN)
        assert [(t.name, t.role, t.revoked_at is None) for t in store.list_tokens()] == [
            ("ci", Role.VIEWER, False),
            ("ci", Role.ADMIN, True),
        ]

    def test_the_audit_log_pages_newest_first_with_its_total(self, store: Store) -> None:
        start = datetime(2024, 2, 14, 9, 0, tzinfo=UTC)
        for minute in range(5):
            store.record_audit(AuditEntry(start + timedelta(minutes=minute), "ops", "run.create", f"p-{minute}", "ok"))
        entries, total = store.list_audit(2, 1)
        assert total == 5
        assert [entry.target for entry in entries] == ["p-3", "p-2"]

    # --- change counters, settings, run exposure ------------------------------------------------

    def test_the_fleet_revision_moves_with_every_discovery_and_scan(self, store: Store) -> None:
        first = store.fleet_revision()
        store.save_instances([instance(WEB, "web-1")], DISCOVERED)
        discovered = store.fleet_revision()
        store.save_scans([scan(WEB, "10.0.20348.2227", 1)])
        scanned = store.fleet_revision()
        assert first < discovered < scanned
        store.latest_scans()
        store.list_instances()
        assert store.fleet_revision() == scanned  # reads move nothing

    def test_settings_are_kept_replaced_and_forgotten(self, store: Store) -> None:
        assert store.stored_settings() == {}
        store.put_setting("notify", "console")
        store.put_setting("http_retries", "6")
        store.put_setting("notify", "webhook:https://hooks.example/x")
        assert store.stored_settings() == {"http_retries": "6", "notify": "webhook:https://hooks.example/x"}
        assert store.delete_setting("notify") is True
        assert store.delete_setting("notify") is False
        assert store.stored_settings() == {"http_retries": "6"}

    def test_a_runs_exposure_is_kept_per_phase(self, store: Store) -> None:
        create(store, "r-1")
        assert store.run_exposure("r-1") == {}
        store.save_run_exposure("r-1", "before", {"open_critical": 4, "open_important": 9, "servers_assessed": 2})
        store.save_run_exposure("r-1", "after", {"open_critical": 0, "open_important": 1, "servers_assessed": 2})
        store.save_run_exposure("r-1", "after", {"open_critical": 0, "open_important": 0, "servers_assessed": 2})
        assert store.run_exposure("r-1") == {
            "before": {"open_critical": 4, "open_important": 9, "servers_assessed": 2},
            "after": {"open_critical": 0, "open_important": 0, "servers_assessed": 2},
        }
        with pytest.raises(NotFoundError, match="r-9"):
            store.save_run_exposure("r-9", "before", {})

    # --- catalog ---------------------------------------------------------------------------------

    def test_an_empty_catalog_knows_no_document_product_or_kb(self, store: Store) -> None:
        assert store.get_document("2024-Jan") is None and store.list_documents() == []
        assert store.list_products() == [] and store.product_summaries() == []
        assert store.products_named("Windows Server 2022", WS2022.product_id) == []
        assert store.affected([WS2022.product_id]) == [] and store.fixes_for_products([WS2022.product_id]) == []
        assert store.fixes_for_kbs([5034129]) == []
        assert store.superseded_by([5034129]) == {5034129: set()} and store.supersedes([5034129]) == {5034129: set()}
        assert store.counts() == {"documents": 0, "cves": 0, "products": 0, "kbs": 0, "entries": 0}
        assert store.catalog_revision() == 0

    def test_a_replaced_document_is_stored_with_its_products_and_counted(self, store: Store) -> None:
        assert store.replace_document(january(), SHA_A) == ImportCounts(added=4)
        stored = store.get_document("2024-Jan")
        assert stored is not None
        assert (stored.title, stored.revision, stored.source_sha256, stored.source_format) == (
            "January 2024 Security Updates",
            "1",
            SHA_A,
            "cvrf-xml",
        )
        assert (stored.initial_release_date, stored.current_release_date) == (date(2024, 1, 9), date(2024, 1, 9))
        assert stored.imported_at
        assert store.list_documents() == [stored]
        assert store.list_products() == [WS2019, WS2022, WS2022_CORE]
        assert store.counts() == {"documents": 1, "cves": 2, "products": 3, "kbs": 2, "entries": 4}
        assert store.product_summaries() == [
            ProductSummary(WS2019.product_id, WS2019.name, "Windows", 1, 1),
            ProductSummary(WS2022.product_id, WS2022.name, "Windows", 2, 1),
            ProductSummary(WS2022_CORE.product_id, WS2022_CORE.name, "Windows", 1, 1),
        ]

    def test_products_are_found_by_name_in_any_case_or_by_id(self, store: Store) -> None:
        store.replace_document(january(), SHA_A)
        assert store.products_named("WINDOWS server 2022", "") == [WS2022]
        assert store.products_named("", WS2019.product_id) == [WS2019]
        assert store.products_named("Windows Server 2022", WS2019.product_id) == [WS2019, WS2022]  # by id
        assert store.products_named("Windows Server 2025", "99999") == []

    def test_affected_rows_join_their_product_and_vulnerability(self, store: Store) -> None:
        store.replace_document(january(), SHA_A)
        rows = sorted(store.affected([WS2022.product_id, WS2019.product_id]), key=lambda r: (r.cve, r.product_id))
        assert [(r.cve, r.product, r.severity) for r in rows] == [
            ("CVE-2024-20674", "Windows Server 2022", "Critical"),
            ("CVE-2024-20698", "Windows Server 2019", "Important"),
            ("CVE-2024-20698", "Windows Server 2022", "Important"),
        ]
        first = rows[0]
        assert (first.document_id, first.product_id, first.family, first.title, first.impact) == (
            "2024-Jan",
            WS2022.product_id,
            "Windows",
            "Windows Kerberos Security Feature Bypass Vulnerability",
            "Security Feature Bypass",
        )
        assert (first.cvss_base, first.cvss_temporal, first.cvss_vector, first.cwe) == (
            9.0,
            7.8,
            "CVSS:3.1/AV:A",
            ("CWE-122",),
        )
        assert (first.exploited, first.publicly_disclosed, first.release_date) == (False, True, date(2024, 1, 9))
        assert rows[1].cvss_temporal is None and rows[1].cvss_vector is None
        assert store.affected(["99999"]) == []

    def test_fixes_are_found_by_product_and_by_kb_with_their_links(self, store: Store) -> None:
        store.replace_document(january(), SHA_A)
        by_product = store.fixes_for_products([WS2022.product_id])
        assert sorted((r.document_id, r.fix.cve, r.fix.kb) for r in by_product) == [
            ("2024-Jan", "CVE-2024-20674", 5034129),
            ("2024-Jan", "CVE-2024-20698", 5034129),
        ]
        assert [r.fix.cve for r in store.fixes_for_products([WS2022.product_id], cves=["CVE-2024-20698"])] == [
            "CVE-2024-20698"
        ]
        assert store.fixes_for_products([WS2022.product_id], cves=[]) == []
        by_kb = sorted(store.fixes_for_kbs([5034129]), key=lambda r: (r.fix.cve, r.fix.product_id))
        assert [r.fix for r in by_kb] == sorted(
            [f for f in january().fixes if f.kb == 5034129], key=lambda f: (f.cve, f.product_id)
        )
        (ws2019,) = store.fixes_for_kbs([5034127])
        assert (ws2019.fix.download_url, ws2019.fix.kb_url, ws2019.fix.supersedes) == (
            None,  # Microsoft gave none
            kb_article_url(5034127),
            (5033371,),
        )

    def test_supersedence_is_followed_both_ways_across_documents(self, store: Store) -> None:
        store.replace_document(january(), SHA_A)
        store.replace_document(february(), SHA_B)
        assert store.superseded_by([5033118, 5034129, 5034770]) == {
            5033118: {5034129},
            5034129: {5034770},
            5034770: set(),
        }
        assert store.supersedes([5034770, 5034129, 5034127]) == {
            5034770: {5034129},
            5034129: {5033118},
            5034127: {5033371},
        }
        (feb,) = store.fixes_for_kbs([5034770])
        assert (feb.document_id, feb.fix.download_url) == ("2024-Feb", "https://download.example/kb5034770.msu")
        assert [d.document_id for d in store.list_documents()] == ["2024-Feb", "2024-Jan"]
        assert store.counts() == {"documents": 2, "cves": 3, "products": 3, "kbs": 3, "entries": 5}

    def test_affected_is_narrowed_by_month_and_by_cve(self, store: Store) -> None:
        store.replace_document(january(), SHA_A)
        store.replace_document(february(), SHA_B)
        ws2022 = [WS2022.product_id]
        assert {r.cve for r in store.affected(ws2022)} == {"CVE-2024-20674", "CVE-2024-20698", "CVE-2024-21338"}
        assert [r.cve for r in store.affected(ws2022, document_ids=["2024-Feb"])] == ["CVE-2024-21338"]
        assert [r.cve for r in store.affected(ws2022, cves=["CVE-2024-20698"])] == ["CVE-2024-20698"]
        assert store.affected(ws2022, document_ids=["2024-Feb"], cves=["CVE-2024-20698"]) == []
        assert store.affected(ws2022, document_ids=[]) == [] and store.affected(ws2022, cves=[]) == []

    def test_replacing_a_document_keeps_exactly_its_new_entries(self, store: Store) -> None:
        store.replace_document(january(), SHA_A)
        store.replace_document(february(), SHA_B)
        before = store.catalog_revision()
        newer = january("2")
        newer.affected = [a for a in newer.affected if a.product_id != WS2019.product_id]
        newer.fixes = [
            *(
                f._replace(fixed_build="10.0.20348.2228") if f.product_id == WS2022.product_id else f
                for f in newer.fixes
            ),
            fix("CVE-2024-20700", WS2022, 5034129, "10.0.20348.2228", (5033118,)),
        ]
        newer.fixes = [f for f in newer.fixes if f.kb != 5034127]
        counts = store.replace_document(newer, "c" * 64)
        assert counts == ImportCounts(added=1, updated=2, unchanged=1, removed=1)
        assert store.catalog_revision() > before
        stored = store.get_document("2024-Jan")
        assert stored is not None and (stored.revision, stored.source_sha256) == ("2", "c" * 64)
        assert store.fixes_for_kbs([5034127]) == []  # only the old revision had it
        assert store.supersedes([5034127]) == {5034127: set()} and store.superseded_by([5033371]) == {5033371: set()}
        assert {r.fix.fixed_build for r in store.fixes_for_kbs([5034129]) if r.fix.product_id == WS2022.product_id} == {
            "10.0.20348.2228"
        }
        assert store.affected([WS2019.product_id]) == []
        assert [r.cve for r in store.affected([WS2022.product_id], document_ids=["2024-Feb"])] == ["CVE-2024-21338"]
        assert store.counts() == {"documents": 2, "cves": 3, "products": 3, "kbs": 2, "entries": 5}
        assert [(s.name, s.cve_count, s.kb_count) for s in store.product_summaries()] == [
            ("Windows Server 2019", 0, 0),
            ("Windows Server 2022", 3, 2),
            ("Windows Server 2022 (Server Core installation)", 1, 1),
        ]

    def test_a_product_renamed_later_keeps_its_family_when_the_new_month_omits_it(self, store: Store) -> None:
        store.replace_document(january(), SHA_A)
        renamed = february()
        renamed.products = [Product(WS2022.product_id, "Windows Server 2022 Datacenter", None)]
        store.replace_document(renamed, SHA_B)
        assert store.products_named("windows server 2022 datacenter", "") == [
            Product(WS2022.product_id, "Windows Server 2022 Datacenter", "Windows")
        ]
        assert store.products_named("Windows Server 2022", "") == []
        assert {r.product for r in store.affected([WS2022.product_id])} == {"Windows Server 2022 Datacenter"}
        assert store.counts()["products"] == 3

    def test_a_real_month_reads_as_the_sqlite_reference(self, store: Store) -> None:
        summary = import_paths(store, [xml_path("2024-Jan")], workers=1)
        assert summary.count("imported") == 1 and summary.entries_added > 1000
        kbs = [5034129, 5034127, 5034119, 5033118, 5032198, 5034121]
        answers = catalog_answers(store, kbs)
        assert answers == catalog_answers(sqlite_reference("2024-Jan"), kbs)
        assert len(answers["products"]) == 6 and len(answers["affected"]) > 150 and len(answers["kb_fixes"]) > 400  # type: ignore[arg-type]
        assert answers["superseded_by"] != {kb: set() for kb in kbs}
        again = import_paths(store, [xml_path("2024-Jan")], workers=1)
        assert again.count("unchanged") == 1 and again.totals == summary.totals

    def test_a_waiter_token_is_taken_once(self, store: Store) -> None:
        assert store.take_waiter("command#c-1") is None
        store.put_waiter("command#c-1", "token-1")
        store.put_waiter("command#c-2", "token-2")
        assert store.take_waiter("command#c-1") == "token-1"
        assert store.take_waiter("command#c-1") is None  # a duplicated event completes nothing twice
        assert store.take_waiter("command#c-2") == "token-2"

    def test_one_job_of_a_kind_runs_at_a_time_and_a_silent_one_stops_counting(self, store: Store) -> None:
        from autopatch.domain.jobs import JobRecord

        started = DISCOVERED
        first = JobRecord("j-000000000001", "catalog.update", "running", started, started)
        store.start_job(first, stale_before=started - timedelta(minutes=10))
        second = JobRecord("j-000000000002", "catalog.update", "running", started, started)
        with pytest.raises(ConflictError, match="j-000000000001"):
            store.start_job(second, stale_before=started - timedelta(minutes=10))
        store.update_job("j-000000000001", started + timedelta(minutes=1), done=3, total=126)
        kept = store.get_job("j-000000000001")
        assert kept is not None and (kept.done, kept.total, kept.status) == (3, 126, "running")
        assert kept.updated_at == started + timedelta(minutes=1)
        later = started + timedelta(hours=1)  # the first job has been silent for 59 minutes
        store.start_job(replace(second, started_at=later, updated_at=later), stale_before=later - timedelta(minutes=10))
        summary = {"imported": 2, "months": ["2024-Jan"]}
        store.update_job("j-000000000002", later, status="succeeded", summary=summary)
        done = store.get_job("j-000000000002")
        assert done is not None and done.status == "succeeded" and done.summary == summary
        assert store.get_job("j-0000000000ff") is None
        with pytest.raises(NotFoundError):
            store.update_job("j-0000000000ff", later, status="failed")

    def test_the_runs_revision_moves_with_every_change_of_a_runs_kbs(self, store: Store) -> None:
        first = store.runs_revision()
        create(store, "r-1")
        created = store.runs_revision()
        store.transition_item("r-1", WEB, "KB5034770", KbState.IN_PROGRESS)
        moved = store.runs_revision()
        store.update_server("r-1", WEB, status="Running")  # not a KB: the status view does not change
        store.cancel_run("r-1", "operator")
        cancelled = store.runs_revision()
        assert first < created < moved < cancelled
        store.run_items("r-1")
        assert store.runs_revision() == cancelled

    def test_a_runs_rings_are_created_once_with_their_servers_by_position(self, store: Store) -> None:
        from autopatch.domain.ring_gates import GateStatus, MemberCheck, RingGate, RingMember

        create(store, "r-1")
        assert store.ring_gates("r-1") == [] and store.ring_members("r-1") == []
        gates = [RingGate("r-1", 0, "canary", "Ring=canary,10%"), RingGate("r-1", 1, "rest", "*")]
        members = [RingMember("r-1", 0, WEB), RingMember("r-1", 1, DB)]
        assert store.create_rings(gates, members) == gates
        other = [RingGate("r-1", 0, "all", "*")]  # a second driver assigning again gets the first one's rings
        assert store.create_rings(other, [RingMember("r-1", 0, DB)]) == gates
        assert store.ring_members("r-1") == members
        assert store.ring_members("r-1", 1) == [RingMember("r-1", 1, DB, MemberCheck.UNCHECKED, 0, "", None, None)]
        assert store.ring_gates("r-1")[1].status is GateStatus.WAITING

    def test_a_ring_gate_moves_only_from_the_status_its_caller_read(self, store: Store) -> None:
        from autopatch.domain.ring_gates import GateStatus, MemberCheck, RingGate, RingMember

        create(store, "r-1")
        store.create_rings([RingGate("r-1", 0, "canary", "Ring=canary")], [RingMember("r-1", 0, WEB)])
        store.update_ring_gate("r-1", 0, GateStatus.WAITING, status=GateStatus.PATCHING, started_at="2024-02-14T09:00")
        with pytest.raises(StateError, match="Patching"):  # another driver moved it first
            store.update_ring_gate("r-1", 0, GateStatus.WAITING, status=GateStatus.PATCHING)
        until = "2024-02-14T10:30:00.000+00:00"
        store.update_ring_gate("r-1", 0, GateStatus.PATCHING, status=GateStatus.SOAKING, soak_until=until)
        [gate] = store.ring_gates("r-1")
        assert (gate.status, gate.soak_until, gate.started_at) == (GateStatus.SOAKING, until, "2024-02-14T09:00")
        store.update_ring_member("r-1", 0, WEB, check=MemberCheck.CHECKING, round=1, command_id="c-1", detail="running")
        store.update_ring_member("r-1", 0, WEB, check=MemberCheck.FAILED, detail="exit 1", command_id=None)
        [member] = store.ring_members("r-1", 0)
        assert (member.check, member.round, member.detail, member.command_id) == (MemberCheck.FAILED, 1, "exit 1", None)
        with pytest.raises(NotFoundError):
            store.update_ring_gate("r-1", 5, GateStatus.WAITING, status=GateStatus.PATCHING)
        with pytest.raises(NotFoundError):
            store.update_ring_member("r-1", 0, DB, check=MemberCheck.PASSED)
