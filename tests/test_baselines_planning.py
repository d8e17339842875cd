"""Baselines and ``--as-of`` plans on real MSRC data: approve-after-days across Patch Tuesday, rejections,
approvals by name, the KB5034439 advisory, tag-matched baselines, servicing stack first, and a run.

The fleet stood in December 2023 (``aged_fleet.py``): its Windows Server 2022 servers run KB5033118.
January 2024's cumulative update is KB5034129 (released 2024-01-09), February's KB5034770 (2024-02-13),
March's KB5035857 (2024-03-12); April's KB5036909 is listed by the revised 2024-Mar document only.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autopatch.catalog.ingest import import_paths
from autopatch.domain.baselines import Baseline, RejectedKb
from autopatch.domain.fleet import Instance
from autopatch.domain.patching import KbState, RunStatus
from autopatch.domain.polling import PollPolicy
from autopatch.engine.options import RunOptions
from autopatch.engine.planning import RunPlan, plan_run, plan_started_run, start_run, store_plan
from autopatch.engine.runner import Engine
from autopatch.fleet.simulator import FleetSimulator, SimulatorConfig
from autopatch.operations import plan_rows
from autopatch.scanning import discover_instances
from autopatch.store.sqlite import SqliteStore

from .aged_fleet import DECEMBER_2023_BUILD, WS2022_PROD, WS2022_TEST, aged_template, copy_aged, simulator_config
from .conftest import xml_path

__all__ = ["aged_template"]  # the session fixture, used by ``aged`` below

JANUARY, FEBRUARY, MARCH, APRIL = "KB5034129", "KB5034770", "KB5035857", "KB5036909"
WINRE = "KB5034439"
Planned = dict[str, tuple[KbState, str]]  # KB → (state, reason)


@pytest.fixture
def aged(aged_template: Path, tmp_path: Path) -> Iterator[tuple[SqliteStore, FleetSimulator]]:
    db = copy_aged(aged_template, tmp_path)
    store = SqliteStore(db)
    fleet = FleetSimulator(store, simulator_config(), state_path=db.with_suffix(".simulator.db"))
    yield store, fleet
    fleet.close()
    store.close()


def servers(store: SqliteStore, fleet: FleetSimulator, *names: str) -> list[Instance]:
    by_name = {instance.name: instance for instance in discover_instances(fleet, store)}
    return [by_name[name] for name in names]


def plan_of(store: SqliteStore, fleet: FleetSimulator, names: tuple[str, ...], **options: Any) -> RunPlan:
    plan = plan_run(store, fleet, servers(store, fleet, *names), options=options)
    assert {server.build_before for server in plan.servers} == {DECEMBER_2023_BUILD}
    return plan


def kbs_of(plan: RunPlan, name: str) -> Planned:
    [server] = [s for s in plan.servers if s.name == name]
    return {i.kb: (i.state, i.reason) for i in plan.items if i.instance_id == server.instance_id}


def row_of(plan: RunPlan, name: str) -> dict[str, Any]:
    [row] = [row for row in plan_rows(plan) if row["name"] == name]
    return row


def test_approve_after_days_holds_the_new_cumulative_update_for_a_week_after_patch_tuesday(
    aged: tuple[SqliteStore, FleetSimulator],
) -> None:
    store, fleet = aged
    store.create_baseline(Baseline("wait-a-week", approve_after_days=7))
    before = plan_of(store, fleet, (WS2022_PROD,), baseline="wait-a-week", as_of="2024-02-12")
    assert row_of(before, WS2022_PROD)["kbs_in_order"] == [JANUARY]
    assert FEBRUARY not in kbs_of(before, WS2022_PROD)  # not released yet: not even held

    during = plan_of(store, fleet, (WS2022_PROD,), baseline="wait-a-week", as_of="2024-02-15")
    row = row_of(during, WS2022_PROD)
    assert row["kbs_in_order"] == [JANUARY]  # superseded only by a held KB: January's is what it can get
    held = {entry["kb"]: entry["rule"] for entry in row["held"]}
    assert held[FEBRUARY] == "held: released 2024-02-13, approve-after-days 7 not reached on 2024-02-15"
    assert kbs_of(during, WS2022_PROD)[JANUARY] == (KbState.PENDING, f"the KBs that supersede it are held ({FEBRUARY})")

    after = plan_of(store, fleet, (WS2022_PROD,), baseline="wait-a-week", as_of="2024-02-20")
    assert row_of(after, WS2022_PROD)["kbs_in_order"] == [FEBRUARY]
    assert kbs_of(after, WS2022_PROD)[JANUARY] == (KbState.SUPERSEDED, f"superseded by {FEBRUARY}")
    assert row_of(after, WS2022_PROD)["baseline"] == "wait-a-week"


def test_next_months_kbs_do_not_exist_before_their_release_even_when_a_revised_document_lists_them(
    aged: tuple[SqliteStore, FleetSimulator],
) -> None:
    store, fleet = aged
    january = kbs_of(plan_of(store, fleet, (WS2022_TEST,), as_of="2024-01-20"), WS2022_TEST)
    assert january[JANUARY][0] is KbState.PENDING
    assert not {FEBRUARY, MARCH, APRIL} & january.keys()
    # The 2024-Mar document lists April's KB5036909 for CVE-2024-21427; April's own document is not
    # in the catalog. As of 2024-03-20 it does not exist, so March's update is not "Superseded".
    [april_row] = [f for f in store.fixes_for_kbs([int(APRIL[2:])]) if f.fix.product_id == "11923"]
    assert april_row.document_id == "2024-Mar"
    march = plan_of(store, fleet, (WS2022_TEST,), as_of="2024-03-20")
    assert row_of(march, WS2022_TEST)["kbs_in_order"] == [MARCH]
    assert APRIL not in kbs_of(march, WS2022_TEST)
    assert kbs_of(march, WS2022_TEST)[FEBRUARY] == (KbState.SUPERSEDED, f"superseded by {MARCH}")
    # Today (no --as-of) April's update exists.
    assert APRIL in kbs_of(plan_of(store, fleet, (WS2022_TEST,)), WS2022_TEST)


def test_a_rejected_kb_is_never_planned_and_the_plan_says_why(aged: tuple[SqliteStore, FleetSimulator]) -> None:
    store, fleet = aged
    store.create_baseline(Baseline("no-feb", rejected=(RejectedKb(FEBRUARY, "breaks the SQL cluster"),)))
    plan = plan_of(store, fleet, (WS2022_PROD,), baseline="no-feb", as_of="2024-02-20")
    assert kbs_of(plan, WS2022_PROD)[FEBRUARY] == (KbState.HELD, "rejected: breaks the SQL cluster")
    assert row_of(plan, WS2022_PROD)["kbs_in_order"] == [JANUARY]
    # March's update supersedes the rejected one: the server gets March's, February's stays out.
    march = plan_of(store, fleet, (WS2022_PROD,), baseline="no-feb", as_of="2024-03-20")
    assert row_of(march, WS2022_PROD)["kbs_in_order"] == [MARCH]


def test_kb5034439_is_held_by_its_known_issue_unless_approved_by_name(aged: tuple[SqliteStore, FleetSimulator]) -> None:
    store, fleet = aged
    assert WINRE not in kbs_of(plan_of(store, fleet, (WS2022_PROD,), as_of="2024-01-08"), WS2022_PROD)
    plain = plan_of(store, fleet, (WS2022_PROD,), as_of="2024-01-20")
    state, rule = kbs_of(plain, WS2022_PROD)[WINRE]
    assert state is KbState.HELD
    assert rule == (
        "held: known issue KB5034439 (0x80070643 when the WinRE recovery partition has less than 250 MB free), "
        "approve by name to install"
    )
    assert row_of(plain, WS2022_PROD)["kbs_in_order"] == [JANUARY]
    store.create_baseline(Baseline("winre-fixed", approved=(WINRE,)))
    approved = plan_of(store, fleet, (WS2022_PROD,), baseline="winre-fixed", as_of="2024-01-20")
    assert row_of(approved, WS2022_PROD)["kbs_in_order"] == [JANUARY, WINRE]  # the cumulative update first
    named_options = {"as_of": "2024-01-20", "kbs": [JANUARY]}  # as ``patch --kb`` stores them
    named = plan_run(store, fleet, servers(store, fleet, WS2022_PROD), [JANUARY], options=named_options)
    assert WINRE not in kbs_of(named, WS2022_PROD)  # --kb KB5034129 plans that KB only


def test_servers_use_the_baselines_their_tags_match(aged: tuple[SqliteStore, FleetSimulator]) -> None:
    store, fleet = aged
    store.create_baseline(
        Baseline("prod", rejected=(RejectedKb(FEBRUARY, "waits for the vendor"),), groups=("Environment=prod",))
    )
    plan = plan_of(store, fleet, (WS2022_PROD, WS2022_TEST), as_of="2024-02-20")
    assert (row_of(plan, WS2022_PROD)["baseline"], row_of(plan, WS2022_TEST)["baseline"]) == ("prod", "")
    assert kbs_of(plan, WS2022_PROD)[FEBRUARY] == (KbState.HELD, "rejected: waits for the vendor")
    assert row_of(plan, WS2022_TEST)["kbs_in_order"] == [FEBRUARY]
    # A second matching baseline: a KB must be approved by both; the first (by name) that holds it says why.
    store.create_baseline(Baseline("a-slow", approve_after_days=30, groups=("Environment=prod",)))
    both = plan_of(store, fleet, (WS2022_PROD,), as_of="2024-02-20")
    assert row_of(both, WS2022_PROD)["baseline"] == "a-slow+prod"
    assert kbs_of(both, WS2022_PROD)[FEBRUARY] == (
        KbState.HELD,
        "a-slow: held: released 2024-02-13, approve-after-days 30 not reached on 2024-02-20",
    )


def test_exploited_first_skips_the_wait_for_a_kb_fixing_an_exploited_cve(
    aged: tuple[SqliteStore, FleetSimulator],
) -> None:
    store, fleet = aged  # February 2024's update fixes CVE-2024-21412 and CVE-2024-21351, exploited in the wild
    store.create_baseline(Baseline("urgent", approve_after_days=7, exploited_first=True))
    plan = plan_of(store, fleet, (WS2022_PROD,), baseline="urgent", as_of="2024-02-15")
    assert row_of(plan, WS2022_PROD)["kbs_in_order"] == [FEBRUARY]
    assert [entry["kb"] for entry in row_of(plan, WS2022_PROD)["held"]] == [WINRE]  # only the advisory's
    waiting = plan_of(store, fleet, (WS2022_PROD,), baseline="urgent", as_of="2024-01-12")
    assert JANUARY in [entry["kb"] for entry in row_of(waiting, WS2022_PROD)["held"]]  # no exploited CVE in it


def test_a_class_or_severity_rule_holds_the_kbs_it_does_not_cover(aged: tuple[SqliteStore, FleetSimulator]) -> None:
    store, fleet = aged
    store.create_baseline(Baseline("only-rollups", classifications=("cumulative",)))
    store.create_baseline(Baseline("critical", min_severity="Critical"))
    rollups = plan_of(store, fleet, (WS2022_PROD,), baseline="only-rollups", as_of="2024-01-20")
    assert kbs_of(rollups, WS2022_PROD)[JANUARY] == (KbState.HELD, "held: classification security not in baseline")
    critical = plan_of(store, fleet, (WS2022_PROD,), baseline="critical", as_of="2024-01-20")
    assert kbs_of(critical, WS2022_PROD)[JANUARY][0] is KbState.PENDING  # it fixes CVE-2024-20674 (Critical)
    assert kbs_of(critical, WS2022_PROD)[WINRE] == (
        KbState.HELD,
        "held: known issue KB5034439 (0x80070643 when the WinRE recovery partition has less than 250 MB free), "
        "approve by name to install",
    )


def test_a_run_planned_after_claiming_its_servers_uses_the_baseline_in_its_options(
    aged: tuple[SqliteStore, FleetSimulator],
) -> None:
    """How ``POST /runs`` and the Step Functions driver plan: from the stored run's options."""
    store, fleet = aged
    store.create_baseline(Baseline("no-newest", rejected=(RejectedKb("KB5066782", "not yet"),)))
    targets = servers(store, fleet, WS2022_PROD)
    run, lease = start_run(store, "patch", targets, {"kbs": [], "severity": None, "baseline": "no-newest"})
    with lease:
        plan = plan_started_run(store, fleet, run.run_id)
    stored = {item.kb: item for item in store.run_items(run.run_id)}
    assert stored["KB5066782"].state is KbState.HELD and stored["KB5066782"].reason == "rejected: not yet"
    assert plan.policy is not None and plan.policy.label(targets[0].instance_id) == "no-newest"


@pytest.fixture(scope="session")
def ssu_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ADV990001 in 2018-Nov lists September 2024's servicing stack update for Windows Server 2016."""
    path = tmp_path_factory.mktemp("ssu") / "ssu.db"
    store = SqliteStore(path)
    import_paths(store, [xml_path(month) for month in ("2018-Nov", "2024-Aug", "2024-Sep")], workers=1)
    store.close()
    return path


def test_the_servicing_stack_update_is_planned_before_the_cumulative_update(ssu_db: Path, tmp_path: Path) -> None:
    shutil.copyfile(ssu_db, tmp_path / "ssu.db")
    store = SqliteStore(tmp_path / "ssu.db")
    # Seed 2: Windows Server 2016 servers at July and August 2024 (10.0.14393.7159 and .7259).
    config = SimulatorConfig(
        servers=4,
        seed=2,
        offline_fraction=0.0,
        failure_rate=0.0,
        time_scale=100_000.0,
        products=["Windows Server 2016"],
        core_fraction=0.0,
    )
    fleet = FleetSimulator(store, config, state_path=tmp_path / "fleet.db")
    try:
        targets = [i for i in discover_instances(fleet, store) if fleet.server(i.instance_id).build.endswith(".7259")]
        assert targets
        before = plan_run(store, fleet, targets[:1], options={"as_of": "2024-09-09"})
        assert plan_rows(before)[0]["kbs_in_order"] == []
        plan = plan_run(store, fleet, targets[:1], options={"as_of": "2024-09-20"})
        assert plan_rows(plan)[0]["kbs_in_order"] == ["KB5043124", "KB5043051"]  # servicing stack, then the update
        store.create_baseline(Baseline("security", classifications=("security",)))
        held = plan_run(store, fleet, targets[:1], options={"as_of": "2024-09-20", "baseline": "security"})
        assert plan_rows(held)[0]["kbs_in_order"] == ["KB5043051"]
        assert plan_rows(held)[0]["held"] == [
            {"kb": "KB5043124", "rule": "held: classification servicing-stack not in baseline"}
        ]
    finally:
        fleet.close()
        store.close()


FAST = PollPolicy(first_delay=0.001, factor=1.5, max_delay=0.01, timeout=5.0)


def test_a_run_stores_held_kbs_and_never_installs_them(lab: tuple[SqliteStore, FleetSimulator]) -> None:
    store, fleet = lab
    targets = discover_instances(fleet, store)
    pending = {
        (item.instance_id, item.kb) for item in plan_run(store, fleet, targets).items if item.state is KbState.PENDING
    }
    assert pending, "the lab fleet has servers behind"
    rejected = max(kb for _, kb in pending)
    store.create_baseline(Baseline("hold", rejected=(RejectedKb(rejected, "known to fail here"),)))
    plan = plan_run(store, fleet, targets, options={"baseline": "hold"})
    store_plan(store, plan)
    options = RunOptions(concurrency=3, poll=FAST, install_timeout=2.0, reboot_timeout=2.0)
    status = Engine(store, fleet).execute(plan.run.run_id, options)
    assert status is RunStatus.SUCCEEDED
    stored = {(item.instance_id, item.kb): item for item in store.run_items(plan.run.run_id)}
    held = [stored[key] for key in pending if key[1] == rejected]
    assert held and all(item.state is KbState.HELD and item.reason == "rejected: known to fail here" for item in held)
    assert not any(kb == rejected for (_, kb) in fleet.install_counts)
