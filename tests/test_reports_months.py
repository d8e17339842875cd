"""Trend and time to remediate from a simulated fleet patched over four simulated months (``report_fleet.py``).

What the reports read back from the history is checked against a second count: what ``autopatch
exposure`` (every CVE decided one by one, with its reason) said right after each scan was stored.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from autopatch.domain.catalog import SEVERITIES
from autopatch.reports.cve import cve_report
from autopatch.reports.trend import trend_report
from autopatch.store.sqlite import SqliteStore

from .report_fleet import AFTER, LAST_DAY, MONTHS, SimulatedHistory, at_nine, simulate_months

DAYS = 110  # 2023-12-13 … 2024-03-31: a week of nothing recorded, then the four months


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> SimulatedHistory:
    return simulate_months(tmp_path_factory.mktemp("months"))


@pytest.fixture
def reports(simulated: SimulatedHistory) -> Iterator[SqliteStore]:
    store = SqliteStore(simulated.reports_db)
    yield store
    store.close()


def state_on(simulated: SimulatedHistory, day: date) -> dict[str, dict[str, tuple[str | None, str | None]]]:
    """Each server's open CVEs at the end of ``day``, as exposure said at its latest scan by then."""
    times = [at for at in sorted(simulated.exposure) if at.date() <= day]
    return simulated.exposure[times[-1]] if times else {}


def test_the_simulation_patched_servers_month_by_month(simulated: SimulatedHistory) -> None:
    for _, day in MONTHS[:-1]:
        assert simulated.laggard not in simulated.patched[day] and simulated.never not in simulated.patched[day]
    assert simulated.laggard in simulated.patched[MONTHS[-1][1]]
    assert all(simulated.patched[day] for _, day in MONTHS)
    # Each Patch Tuesday opens new CVEs on a server patched the month before; its run closes them.
    for (_, previous), (_, day) in itertools.pairwise(MONTHS):
        for server in simulated.patched[previous]:
            after_run = simulated.exposure[at_nine(previous + AFTER)][server]
            assert len(simulated.exposure[at_nine(day)][server]) > len(after_run)


def test_the_daily_trend_counts_what_exposure_said_at_each_scan(
    simulated: SimulatedHistory, reports: SqliteStore
) -> None:
    report = trend_report(reports, DAYS, LAST_DAY)
    rows = {row["day"]: row for row in report.data["days"]}
    assert len(rows) == DAYS
    first = LAST_DAY - timedelta(days=DAYS - 1)
    assert rows[first.isoformat()]["open_critical"] is None  # nothing recorded yet: no figure, never a zero
    checked = 0
    day = first
    while day <= LAST_DAY:
        servers = state_on(simulated, day)
        row = rows[day.isoformat()]
        if servers:
            for severity in SEVERITIES:
                open_cves = [due for cves in servers.values() for sev, due in cves.values() if sev == severity]
                overdue = [due for due in open_cves if due is not None and date.fromisoformat(due) < day]
                assert row[f"open_{severity.lower()}"] == len(open_cves), (day, severity)
                assert row[f"overdue_{severity.lower()}"] == len(overdue), (day, severity)
            assert row["servers_assessed"] == len(servers)
            checked += 1
        day += timedelta(days=1)
    assert checked == (LAST_DAY - MONTHS[0][1]).days + 1
    # The fleet really moved: January's Patch Tuesday opened CVEs, the runs closed most of them.
    assert rows["2024-01-17"]["open_important"] > rows["2024-01-16"]["open_important"] > 0
    assert rows["2024-01-24"]["open_important"] < rows["2024-01-17"]["open_important"]


def expected_remediations(simulated: SimulatedHistory) -> dict[str, list[float]]:
    """Days to remediate per severity, worked out from exposure's answers at each scan (closed in the window)."""
    durations: dict[str, list[float]] = {severity: [] for severity in SEVERITIES}
    times = sorted(simulated.exposure)
    window_start = LAST_DAY - timedelta(days=DAYS - 1)
    for server in simulated.servers:
        opened: dict[str, datetime] = {}
        previous: dict[str, tuple[str | None, str | None]] = {}
        for at in times:
            now = simulated.exposure[at].get(server)
            if now is None:
                continue
            for cve in now.keys() - previous.keys():
                opened[cve] = at
            for cve in previous.keys() - now.keys():
                severity = previous[cve][0]
                if window_start <= at.date() <= LAST_DAY and severity in durations:
                    durations[severity].append((at - opened[cve]).total_seconds() / 86400)
                del opened[cve]
            previous = now
    return durations


def test_time_to_remediate_runs_from_the_first_scan_open_to_the_first_scan_closed(
    simulated: SimulatedHistory, reports: SqliteStore
) -> None:
    expected = expected_remediations(simulated)
    report = trend_report(reports, DAYS, LAST_DAY)
    stats = {row["severity"]: row for row in report.data["time_to_remediate"]}
    for severity in ("Critical", "Important"):
        days = expected[severity]
        assert days, severity
        assert stats[severity]["remediated"] == len(days)
        assert stats[severity]["mean_days"] == pytest.approx(sum(days) / len(days), abs=0.01)
    # Servers patched the week after a scan close in 7 days; the laggard waited for the last month.
    assert min(expected["Important"]) == pytest.approx(AFTER.days)
    assert max(expected["Important"]) >= (MONTHS[-1][1] + AFTER - MONTHS[0][1]).days
    assert stats["Important"]["mean_days"] > AFTER.days


def test_a_cve_report_says_since_when_a_server_has_been_exposed(
    simulated: SimulatedHistory, reports: SqliteStore
) -> None:
    last = max(simulated.exposure)
    never = simulated.exposure[last][simulated.never]
    first = min(simulated.exposure)
    old = sorted(set(simulated.exposure[first][simulated.never]) & set(never))
    assert old, "the never-patched server keeps December's CVEs"
    report = cve_report(reports, old[0])
    rows = {row["instance_id"]: row for row in report.data["exposed"]}
    assert rows[simulated.never]["since"] == first.isoformat(timespec="seconds")
    exposed_now = {server for server, cves in simulated.exposure[last].items() if old[0] in cves}
    assert set(rows) == exposed_now
    # A CVE of March is open on the never-patched server since March's scan only.
    march = min(t for t in simulated.exposure if t.date() == MONTHS[-1][1])
    earlier = {
        cve for at, servers in simulated.exposure.items() if at < march for cve in servers.get(simulated.never, {})
    }
    new = sorted(set(simulated.exposure[march][simulated.never]) - earlier)
    late = next(cve for cve in new if cve in never and cve.startswith("CVE-2024-2"))
    march_rows = {row["instance_id"]: row for row in cve_report(reports, late).data["exposed"]}
    assert march_rows[simulated.never]["since"] == march.isoformat(timespec="seconds")


def test_the_trend_renders_as_every_format(simulated: SimulatedHistory, reports: SqliteStore, tmp_path: Path) -> None:
    from .test_reports import check_csv, check_html, check_pdf

    report = trend_report(reports, DAYS, LAST_DAY)
    check_csv(report, DAYS)
    check_html(report, ["Open CVEs per severity", "Time to remediate per severity"])
    pages = check_pdf(report, tmp_path)
    assert len(pages) >= 2
