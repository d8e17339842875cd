"""The pure history rules (``domain/exposure_history.py``) and the fast open-CVE sets (``domain/open_cves.py``)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from autopatch.assessment import load_product_catalog, server_facts
from autopatch.domain.exposure import ServerFacts, assess
from autopatch.domain.exposure_history import (
    ASSESSED,
    ExposureSet,
    HistorySpan,
    OpenCve,
    counts_of,
    counts_text,
    daily_trend,
    exposure_set,
    extend_spans,
    history_time,
    open_since,
    remediation_stats,
    remediations,
    set_from_text,
    set_text,
)
from autopatch.domain.open_cves import catalog_cves, open_positions
from autopatch.fleet.simulator import FleetSimulator, SimulatorConfig
from autopatch.scanning import identify, scan_instances
from autopatch.store.sqlite import SqliteStore

SERVER, OTHER = "i-0aaaaaaaaaaaaaaa1", "i-0bbbbbbbbbbbbbbb2"
START = datetime(2024, 1, 10, 9, 0, tzinfo=UTC)
OLD = exposure_set(
    [
        OpenCve("CVE-2024-20674", "Critical", date(2024, 1, 24)),
        OpenCve("CVE-2024-21338", "Important", date(2024, 2, 8)),
        OpenCve("CVE-2024-21412", "Important", None),
    ]
)
NEW = exposure_set([OpenCve("CVE-2024-21338", "Important", date(2024, 2, 8))])


def span(instance_id: str, days: float, exposure: ExposureSet | None, status: str = ASSESSED) -> HistorySpan:
    at = history_time(START + timedelta(days=days))
    if exposure is None:
        return HistorySpan(instance_id, at, at, 1, None, "10.0.20348.1", status, None, {}, {})
    counts = exposure.counts
    return HistorySpan(
        instance_id, at, at, 1, "Windows Server 2022", "10.0.20348.1", status, exposure.digest, counts, {}
    )


SETS = {OLD.digest: OLD, NEW.digest: NEW}


def test_a_set_is_named_by_its_content_and_reads_back_from_its_text() -> None:
    again = exposure_set(reversed(OLD.cves))
    assert again.digest == OLD.digest and again.cves == OLD.cves
    assert set_from_text(OLD.digest, set_text(OLD.cves)) == OLD
    assert exposure_set([*OLD.cves, OpenCve("CVE-2024-0001", "Low", None)]).digest != OLD.digest
    assert OLD.counts == {"Critical": 1, "Important": 2, "Moderate": 0, "Low": 0, "Unrated": 0}
    assert counts_of(counts_text(OLD.counts)) == OLD.counts and counts_of(None) == {}


def test_a_cve_is_overdue_from_the_day_after_its_due_date() -> None:
    assert OLD.overdue_counts(date(2024, 1, 24))["Critical"] == 0
    assert OLD.overdue_counts(date(2024, 1, 25))["Critical"] == 1
    assert OLD.overdue_counts(date(2030, 1, 1))["Important"] == 1  # the one without a deadline never is


def test_spans_extend_with_the_same_exposure_and_history_only_moves_forward() -> None:
    first = extend_spans({}, [span(SERVER, 0, OLD)])
    [stored] = first
    same = extend_spans({SERVER: stored}, [span(SERVER, 1, OLD), span(SERVER, 2, OLD)])
    assert [(s.first_scanned_at, s.scans) for s in same] == [(stored.first_scanned_at, 3)]
    assert same[0].last_scanned_at == history_time(START + timedelta(days=2))
    changed = extend_spans({SERVER: same[0]}, [span(SERVER, 3, NEW), span(SERVER, 0.5, NEW)])
    assert [(s.set_digest, s.first_scanned_at) for s in changed] == [
        (NEW.digest, history_time(START + timedelta(days=3)))
    ]


def test_the_trend_keeps_each_servers_last_known_exposure_and_has_no_figures_before_any() -> None:
    spans = [
        span(SERVER, 0, OLD),
        span(SERVER, 7, NEW),
        span(OTHER, 2, None, "unidentified: no build"),
        span(OTHER, 3, OLD),
    ]
    trend = {p.day: p for p in daily_trend(spans, SETS, date(2024, 1, 8), date(2024, 1, 20))}
    assert trend[date(2024, 1, 9)].servers_assessed == 0 and trend[date(2024, 1, 9)].open_counts["Important"] == 0
    assert trend[date(2024, 1, 10)].open_counts["Important"] == 2
    assert (trend[date(2024, 1, 12)].servers_assessed, trend[date(2024, 1, 12)].servers_unknown) == (1, 1)
    assert trend[date(2024, 1, 13)].open_counts["Critical"] == 2  # both servers at OLD
    assert trend[date(2024, 1, 17)].open_counts == {
        "Critical": 1,
        "Important": 3,
        "Moderate": 0,
        "Low": 0,
        "Unrated": 0,
    }
    assert trend[date(2024, 1, 20)].overdue_counts["Critical"] == 0
    later = {p.day: p for p in daily_trend(spans, SETS, date(2024, 1, 24), date(2024, 1, 25))}
    assert (
        later[date(2024, 1, 24)].overdue_counts["Critical"] == 0
        and later[date(2024, 1, 25)].overdue_counts["Critical"] == 1
    )


def test_remediations_run_from_the_first_scan_open_to_the_first_scan_closed() -> None:
    spans = [
        span(SERVER, 0, OLD),
        span(SERVER, 3, None, "unidentified: x"),
        span(SERVER, 7, NEW),
        span(SERVER, 10, OLD),
    ]
    found = remediations(spans, SETS)
    assert sorted((r.cve, r.days) for r in found) == [("CVE-2024-20674", 7.0), ("CVE-2024-21412", 7.0)]
    # Open again on day 10: a second episode, open now since then.
    assert open_since(spans, SETS, "CVE-2024-20674") == history_time(START + timedelta(days=10))
    assert open_since(spans, SETS, "CVE-2024-21338") == history_time(START)
    stats = {s.severity: s for s in remediation_stats(found, date(2024, 1, 1), date(2024, 1, 31))}
    assert (stats["Critical"].remediated, stats["Critical"].mean_days) == (1, 7.0)
    assert stats["Moderate"].mean_days is None
    assert all(s.remediated == 0 for s in remediation_stats(found, date(2024, 2, 1), date(2024, 2, 28)))


@pytest.fixture(scope="module")
def fleet_levels(catalog_db: Path) -> list[tuple[str, ServerFacts]]:
    """Sixty simulated servers of every product on the session catalog: their patch levels."""
    store = SqliteStore(catalog_db)
    fleet = FleetSimulator(store, SimulatorConfig(servers=60, seed=9, offline_fraction=0.0, time_scale=1e9))
    instances = fleet.list_instances()
    outcome = scan_instances(fleet, store, instances, sleep=lambda _: None, save=False)
    fleet.close()
    levels = []
    for instance in instances:
        scan = outcome.reports[instance.instance_id]
        product = identify(instance, scan).product
        assert product is not None
        levels.append((product, server_facts(scan.build, scan.installed_kbs, scan.offered_kbs)))
        # The same server as systeminfo sees it: no revision, no offered list.
        levels.append((product, server_facts(scan.build.rsplit(".", 1)[0], scan.installed_kbs, None)))
    store.close()
    return levels


def test_the_fast_open_sets_equal_the_decisions_of_assess(
    catalog_db: Path, fleet_levels: list[tuple[str, ServerFacts]]
) -> None:
    store = SqliteStore(catalog_db)
    catalogs = {product: load_product_catalog(store, product) for product, _ in fleet_levels}
    store.close()
    assert len(catalogs) >= 4
    checked = 0
    for product, facts in set(fleet_levels):
        catalog = catalogs[product]
        cves = catalog_cves(catalog)
        fast = {cves[position].cve for position in open_positions(catalog, facts)}
        slow = {d.cve for d in assess(catalog, facts) if d.status == "open"}
        assert fast == slow, (product, facts)
        checked += 1
    assert checked >= 20
