"""The ``BaselineStore`` port's contract, run against every adapter by ``tests/test_store_contract.py``.

Also that a run's Held KBs (a baseline's decision) are stored and read back like any other state, and
that KB release dates (read through the catalog port) come out the same from every adapter.
"""

from __future__ import annotations

from datetime import date

import pytest

from autopatch.assessment import load_product_catalog
from autopatch.catalog.ingest import import_paths
from autopatch.catalog_facts import CatalogFacts
from autopatch.domain.baselines import Baseline, RejectedKb
from autopatch.domain.patching import KbState, RunStatus
from autopatch.domain.runs import RunItem, RunRecord, RunServer
from autopatch.errors import ConflictError, NotFoundError, StateError
from autopatch.store.base import Store

from .conftest import xml_path
from .store_contract import sqlite_reference

PROD = Baseline(
    "prod",
    min_severity="Important",
    classifications=("security", "servicing-stack"),
    approve_after_days=7,
    approved=("KB5034439",),
    rejected=(RejectedKb("KB5034770", "breaks the SQL cluster"),),
    exploited_first=True,
    groups=("Environment=prod", "Patch Group=web"),
    rings="canary=Ring=canary,10%;rest=*",
    snapshot=True,
)


def stored_fields(baseline: Baseline) -> Baseline:
    """The baseline without the times the store stamps."""
    return Baseline(
        **{name: getattr(baseline, name) for name in Baseline.__slots__ if name not in ("created_at", "updated_at")}
    )


class BaselineStoreContract:
    def test_a_baseline_is_stored_whole_and_read_back(self, store: Store) -> None:
        created = store.create_baseline(PROD)
        assert created.created_at and created.created_at == created.updated_at
        assert store.get_baseline("prod") == created
        assert stored_fields(created) == PROD
        assert store.get_baseline("unknown") is None

    def test_names_are_unique_and_listed_in_order(self, store: Store) -> None:
        store.create_baseline(Baseline("zeta"))
        store.create_baseline(PROD)
        with pytest.raises(ConflictError, match="prod"):
            store.create_baseline(Baseline("prod"))
        assert [baseline.name for baseline in store.list_baselines()] == ["prod", "zeta"]
        kept = store.get_baseline("prod")
        assert kept is not None and kept.approve_after_days == 7  # the first one, not overwritten

    def test_replacing_keeps_the_creation_time_and_refuses_an_unknown_name(self, store: Store) -> None:
        created = store.create_baseline(PROD)
        replaced = store.replace_baseline(Baseline("prod", approve_after_days=0, groups=("Environment=test",)))
        assert replaced.created_at == created.created_at and replaced.updated_at >= created.updated_at
        read = store.get_baseline("prod")
        assert read is not None and read.groups == ("Environment=test",) and read.rejected == ()
        with pytest.raises(NotFoundError, match="ghost"):
            store.replace_baseline(Baseline("ghost"))

    def test_deleting_says_whether_there_was_one(self, store: Store) -> None:
        store.create_baseline(PROD)
        assert store.delete_baseline("prod") is True
        assert store.delete_baseline("prod") is False
        assert store.list_baselines() == []

    def test_held_kbs_of_a_run_are_stored_with_their_rule_and_never_move(self, store: Store) -> None:
        run = RunRecord("p-20240215-090000-abcdef", "patch", RunStatus.PENDING, "2024-02-15T09:00:00+00:00", {})
        server = RunServer(run.run_id, "i-0aaaaaaaaaaaaaaa1", "web-1", "Windows Server 2022", "10.0.20348.2159")
        rule = "held: released 2024-02-13, approve-after-days 7 not reached on 2024-02-15"
        items = [
            RunItem(run.run_id, server.instance_id, "KB5034129", 0, KbState.PENDING, "Security Update"),
            RunItem(run.run_id, server.instance_id, "KB5034770", 1, KbState.HELD, "Security Update", reason=rule),
        ]
        store.create_run(run, [server], items)
        held = store.run_item(run.run_id, server.instance_id, "KB5034770")
        assert (held.state, held.reason) == (KbState.HELD, rule)
        with pytest.raises(StateError):
            store.transition_item(run.run_id, server.instance_id, "KB5034770", KbState.IN_PROGRESS)

    def test_release_dates_read_through_the_catalog_port_agree_with_sqlite(self, store: Store) -> None:
        import_paths(store, [xml_path("2023-Oct")], workers=1)
        dated = CatalogFacts(store).releases(load_product_catalog(store, "Windows Server 2019"))
        reference = sqlite_reference("2023-Oct")
        assert dated == CatalogFacts(reference).releases(load_product_catalog(reference, "Windows Server 2019"))
        assert dated[5031361].released == date(2023, 10, 10)  # October's cumulative update
        # November's KB5032196, listed twice by the revised 2023-Oct document, is a later release.
        assert (dated[5032196].released, dated[5032196].estimated) == (date(2023, 11, 14), True)
