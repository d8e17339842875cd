"""The ``SnapshotStore`` port's contract (``store/base.py``), run against every store adapter by
``tests/test_store_contract.py``: one record per run server, its intent written once."""

from __future__ import annotations

import pytest

from autopatch.domain.snapshots import SnapshotPhase, SnapshotVolume
from autopatch.errors import NotFoundError, ValidationError
from autopatch.store.base import Store

from .store_contract import DB, UNKNOWN, WEB, create

ROOT = SnapshotVolume("snap-0123456789abcdef0", "vol-0123456789abcdef0", "/dev/sda1", root=True)
DATA = SnapshotVolume("snap-0fedcba9876543210", "vol-0fedcba9876543210", "xvdf")
AT = "2024-02-14T09:00:00.000+00:00"


class SnapshotStoreContract:
    def test_the_snapshot_intent_is_stored_once_per_run_server(self, store: Store) -> None:
        create(store, "p-1")
        first = store.begin_snapshot("p-1", WEB, "token-1", AT)
        assert (first.phase, first.token, first.requested_at, first.asked_at) == (
            SnapshotPhase.ASKING,
            "token-1",
            AT,
            AT,
        )
        assert first.volumes == () and first.tries == 0 and first.started_at is None and first.pruned_at is None
        again = store.begin_snapshot("p-1", WEB, "token-2", "2024-02-14T10:00:00.000+00:00")
        assert again == first  # a second driver gets the first ask back, never a new one
        assert store.run_snapshot("p-1", DB) is None
        with pytest.raises(NotFoundError):
            store.begin_snapshot("p-1", UNKNOWN, "token-3", AT)
        with pytest.raises(NotFoundError):
            store.begin_snapshot("p-unknown", WEB, "token-3", AT)

    def test_a_snapshot_record_keeps_what_was_updated(self, store: Store) -> None:
        create(store, "p-1")
        store.begin_snapshot("p-1", WEB, "token-1", AT)
        store.update_snapshot("p-1", WEB, phase=SnapshotPhase.RETRY, tries=1, reason="RequestLimitExceeded")
        store.update_snapshot(
            "p-1", WEB, phase=SnapshotPhase.REQUESTED, volumes=[ROOT, DATA], asked_at="2024-02-14T09:01"
        )
        store.update_snapshot("p-1", WEB, phase=SnapshotPhase.STARTED, started_at="2024-02-14T09:02")
        record = store.run_snapshot("p-1", WEB)
        assert record is not None
        assert record.phase is SnapshotPhase.STARTED and record.volumes == (ROOT, DATA)
        assert record.snapshot_ids == [ROOT.snapshot_id, DATA.snapshot_id]
        assert (record.tries, record.reason, record.asked_at, record.started_at) == (
            1,
            "RequestLimitExceeded",
            "2024-02-14T09:01",
            "2024-02-14T09:02",
        )
        store.update_snapshot("p-1", WEB, pruned_at="2024-03-20T00:00")
        pruned = store.run_snapshot("p-1", WEB)
        assert pruned is not None and pruned.pruned_at == "2024-03-20T00:00" and pruned.volumes == (ROOT, DATA)

    def test_snapshot_updates_name_only_known_fields_of_existing_records(self, store: Store) -> None:
        create(store, "p-1")
        with pytest.raises(NotFoundError):
            store.update_snapshot("p-1", WEB, phase=SnapshotPhase.FAILED)
        store.begin_snapshot("p-1", WEB, "token-1", AT)
        with pytest.raises(ValidationError):
            store.update_snapshot("p-1", WEB, token="another")
        record = store.run_snapshot("p-1", WEB)
        assert record is not None and record.token == "token-1"

    def test_a_runs_snapshots_are_listed_by_instance_and_only_its_own(self, store: Store) -> None:
        create(store, "p-1")
        store.begin_snapshot("p-1", WEB, "token-web", AT)
        store.begin_snapshot("p-1", DB, "token-db", AT)
        assert [r.instance_id for r in store.run_snapshots("p-1")] == sorted([WEB, DB])
        assert store.run_snapshots("p-2") == []
