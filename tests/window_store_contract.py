"""The ``WindowStore`` port's contract, mixed into ``StoreContract``'s run against every adapter.

``other_handle`` is a second handle on the same storage (another process's view of it): what one
scheduler claims through one handle, another scheduler must see claimed through its own.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from threading import Barrier

import pytest

from autopatch.domain.patching import RunStatus
from autopatch.domain.windows import MaintenanceWindow, build_window
from autopatch.errors import ConflictError, NotFoundError
from autopatch.store.base import Store

from .store_contract import DB, LEASE, WEB, create, run_record

SATURDAY = "2024-06-01T00:00:00+00:00"  # 02:00 in Berlin


def berlin(name: str = "saturday", **changes: str) -> MaintenanceWindow:
    values = {
        "name": name,
        "cron": "0 2 * * SAT",
        "duration": "4h",
        "cutoff": "1h",
        "group": "PatchGroup=web",
        "timezone": "Europe/Berlin",
        "baseline": "security-only",
    }
    return build_window(**(values | changes))


class WindowStoreContract:
    """Windows and their occurrences; the reopening of a paused run."""

    def test_a_window_is_created_found_listed_replaced_and_deleted(self, store: Store) -> None:
        created = store.create_window(berlin())
        assert created.created_at and created.created_at == created.updated_at
        assert store.get_window("saturday") == created
        store.create_window(berlin("monday", cron="30 1 * * MON", baseline=""))
        assert [w.name for w in store.list_windows()] == ["monday", "saturday"]
        monday = store.get_window("monday")
        assert monday is not None and monday.baseline is None
        changed = store.replace_window(berlin(duration="2h", cutoff="30m"))
        again = store.get_window("saturday")
        assert (
            again is not None
            and again == changed
            and again.duration.total_seconds() == 7200
            and again.cutoff.total_seconds() == 1800
        )
        assert again.created_at == created.created_at and again.updated_at >= created.updated_at
        assert store.delete_window("saturday") is True
        assert store.get_window("saturday") is None and store.delete_window("saturday") is False
        assert [w.name for w in store.list_windows()] == ["monday"]

    def test_a_window_name_is_unique_and_only_a_known_window_is_replaced(self, store: Store) -> None:
        store.create_window(berlin())
        with pytest.raises(ConflictError, match="saturday"):
            store.create_window(berlin(cron="0 3 * * SUN"))
        kept = store.get_window("saturday")
        assert kept is not None and kept.cron == "0 2 * * SAT"
        with pytest.raises(NotFoundError, match="sunday"):
            store.replace_window(berlin("sunday"))
        assert store.get_window("sunday") is None

    def test_an_occurrence_is_claimed_once_across_two_store_handles(self, store: Store, other_handle: Store) -> None:
        store.create_window(berlin())
        barrier = Barrier(2)

        def claim(handle: Store, owner: str) -> bool:
            barrier.wait()
            return handle.claim_occurrence("saturday", SATURDAY, owner, SATURDAY)

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(claim, [store, other_handle], ["host:1:a", "host:2:b"]))
        assert sorted(results) == [False, True]
        [record] = other_handle.window_occurrences("saturday")
        assert record.claimed_by == ("host:1:a" if results[0] else "host:2:b") and record.run_id is None
        assert not store.claim_occurrence("saturday", SATURDAY, "host:3:c", SATURDAY)

    def test_a_claim_that_started_nothing_is_taken_over_only_from_its_recorded_owner(
        self, store: Store, other_handle: Store
    ) -> None:
        assert store.claim_occurrence("saturday", SATURDAY, "host:1:a", SATURDAY)
        assert not other_handle.claim_occurrence("saturday", SATURDAY, "host:2:b", SATURDAY, stale_owner="host:9:z")
        assert other_handle.claim_occurrence("saturday", SATURDAY, "host:2:b", SATURDAY, stale_owner="host:1:a")
        assert store.window_occurrences("saturday")[0].claimed_by == "host:2:b"
        store.record_occurrence("saturday", SATURDAY, "p-20240601-000000-aaaaaa")
        # Once a run is recorded, the claim is final, whoever is found dead.
        assert not store.claim_occurrence("saturday", SATURDAY, "host:3:c", SATURDAY, stale_owner="host:2:b")
        assert store.window_occurrences("saturday")[0].run_id == "p-20240601-000000-aaaaaa"

    def test_occurrences_keep_their_run_or_why_none_newest_first(self, store: Store) -> None:
        store.create_window(berlin())
        later = "2024-06-08T00:00:00+00:00"
        store.claim_occurrence("saturday", SATURDAY, "host:1:a", SATURDAY)
        store.claim_occurrence("saturday", later, "host:1:a", later)
        store.record_occurrence("saturday", SATURDAY, "p-20240601-000000-aaaaaa")
        store.record_occurrence("saturday", later, None, "no server has tag PatchGroup=web")
        newest, oldest = store.window_occurrences("saturday")
        assert (newest.starts_at, newest.run_id, newest.note) == (later, None, "no server has tag PatchGroup=web")
        assert (oldest.starts_at, oldest.run_id, oldest.note) == (SATURDAY, "p-20240601-000000-aaaaaa", "")
        assert [r.starts_at for r in store.window_occurrences("saturday", limit=1)] == [later]
        store.delete_window("saturday")
        assert store.window_occurrences("saturday") == []

    def test_a_paused_run_is_unfinished_holds_its_servers_and_is_reopened_once(
        self, store: Store, other_handle: Store
    ) -> None:
        create(store, "p-1")
        store.set_run_status("p-1", RunStatus.RUNNING)
        assert not store.reopen_paused_run("p-1", {"window": "saturday"})  # Running, not Paused
        store.set_run_status("p-1", RunStatus.PAUSED, "Paused: window closed")
        paused = store.get_run("p-1")
        assert (paused.status, paused.reason, paused.finished_at) == (RunStatus.PAUSED, "Paused: window closed", None)
        assert [run.run_id for run in store.unfinished_runs()] == ["p-1"]
        assert store.run_holding(WEB) == "p-1" and store.run_holding(DB) == "p-1"
        with pytest.raises(ConflictError, match="p-1"):
            create(store, "p-2")
        assert store.claim_run("p-1", "host:1:a", LEASE + 30, now_epoch=LEASE)  # a paused run is claimed to reopen it
        options = {"severity": "Critical", "window": "saturday", "window_cutoff": "2024-06-08T02:00:00+00:00"}
        barrier = Barrier(2)

        def reopen(handle: Store) -> bool:
            barrier.wait()
            return handle.reopen_paused_run("p-1", options)

        with ThreadPoolExecutor(2) as pool:
            assert sorted(pool.map(reopen, [store, other_handle])) == [False, True]
        reopened = other_handle.get_run("p-1")
        assert (reopened.status, reopened.reason, reopened.options) == (RunStatus.RUNNING, "", options)

    def test_a_cancelled_paused_run_is_not_reopened(self, store: Store) -> None:
        store.create_run(replace(run_record("p-1"), status=RunStatus.PENDING), [], [])
        store.set_run_status("p-1", RunStatus.PAUSED, "Paused: window closed")
        assert store.cancel_run("p-1", "cancelled by the operator") is RunStatus.CANCELLED
        assert not store.reopen_paused_run("p-1", {"window": "saturday"})
        assert store.get_run("p-1").status is RunStatus.CANCELLED and store.unfinished_runs() == []
