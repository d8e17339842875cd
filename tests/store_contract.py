"""The store ports' contract (``store/base.py``): what every adapter must do, written once.

``StoreContract`` holds the tests; ``tests/test_store_contract.py`` runs them against each
adapter through its ``store`` fixture (a fresh, empty store per test). Nothing here knows which
adapter it talks to: only the ports' methods and the domain types are used, and errors are the
``autopatch.errors`` an adapter must translate its own into.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from autopatch.domain.access import AuditEntry, Principal, Role
from autopatch.domain.fleet import Instance, OfferedUpdate, ScanReport
from autopatch.domain.patching import KbState, RunStatus
from autopatch.domain.runs import RunItem, RunRecord, RunServer
from autopatch.errors import ConflictError, NotFoundError, StateError
from autopatch.store.base import Store

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
