"""``report trend``: open and overdue CVEs per severity per day, and the mean time to remediate.

Read from the exposure history only (``domain/exposure_history.py``): each day counts every
server at its latest exposure recorded by the end of that day, with overdue measured on that day
against the due dates recorded with it; a remediation is a (server, CVE) open in one recorded scan
and absent from the next, timed from the first scan where it was open. Nothing is re-assessed.
"""

from __future__ import annotations

from datetime import date, timedelta

from autopatch.domain.catalog import SEVERITIES
from autopatch.domain.exposure_history import SEVERITY_KEYS, TrendDay, daily_trend, remediation_stats, remediations
from autopatch.errors import ValidationError
from autopatch.reports.model import BarChart, Chart, Column, LineChart, Report, Series, Table, generated_now
from autopatch.store.base import HistoryStore

MAX_DAYS = 3650


def check_days(days: int) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise ValidationError("days", days, f"a number of days from 1 to {MAX_DAYS}")
    return days


def _recorded(point: TrendDay) -> bool:
    return point.servers_assessed + point.servers_unknown > 0


def _value(point: TrendDay, count: int) -> float | None:
    return float(count) if _recorded(point) else None


def trend_report(store: HistoryStore, days: int = 90, until: date | None = None) -> Report:
    """The ``days`` days ending on ``until`` (today, UTC, by default)."""
    generated = generated_now()
    last = until or generated.date()
    first = last - timedelta(days=check_days(days) - 1)
    spans = store.history_spans()
    sets = store.exposure_sets({span.set_digest for span in spans if span.set_digest is not None})
    trend = daily_trend(spans, sets, first, last)
    stats = remediation_stats(remediations(spans, sets), first, last)
    # A day before anything was recorded has no figures (a gap in the chart), never zeros that read as "all clear".
    day_rows = [
        {"day": point.day.isoformat()}
        | {f"open_{key.lower()}": point.open_counts[key] if _recorded(point) else None for key in SEVERITY_KEYS}
        | {f"overdue_{key.lower()}": point.overdue_counts[key] if _recorded(point) else None for key in SEVERITY_KEYS}
        | {"servers_assessed": point.servers_assessed, "servers_unknown": point.servers_unknown}
        for point in trend
    ]
    mttr_rows = [
        {
            "severity": stat.severity,
            "remediated": stat.remediated,
            "mean_days": round(stat.mean_days, 2) if stat.mean_days is not None else None,
            "median_days": round(stat.median_days, 2) if stat.median_days is not None else None,
        }
        for stat in stats
    ]
    columns = (
        Column("day", "day"),
        *(Column(f"open_{k.lower()}", f"open {k}", True) for k in SEVERITY_KEYS),
        *(Column(f"overdue_{k.lower()}", f"overdue {k}", True) for k in SEVERITY_KEYS),
        Column("servers_assessed", "servers assessed", True),
        Column("servers_unknown", "servers unknown", True),
    )
    labels = tuple(point.day.isoformat() for point in trend)
    shown = [key for key in SEVERITY_KEYS if key in SEVERITIES or any(p.open_counts[key] for p in trend)]
    charts: list[Chart] = [
        LineChart(
            "Open CVEs per severity (server, CVE pairs) at the end of each day",
            labels,
            tuple(Series(key, tuple(_value(p, p.open_counts[key]) for p in trend)) for key in shown),
        ),
        LineChart(
            "Overdue CVEs per severity at the end of each day",
            labels,
            tuple(Series(key, tuple(_value(p, p.overdue_counts[key]) for p in trend)) for key in shown),
        ),
        BarChart(
            "Mean time to remediate per severity (days; none: nothing closed in the window)",
            tuple(stat.severity for stat in stats if stat.severity in shown),
            (Series("days", tuple(stat.mean_days for stat in stats if stat.severity in shown)),),
            unit="days",
        ),
    ]
    end = trend[-1] if trend else None
    summary = [
        ("Window", f"{first.isoformat()} to {last.isoformat()} ({days} days, UTC)"),
        ("History", f"{len(spans):,} recorded spans of scans, {len(sets):,} distinct exposure sets"),
    ]
    if end is not None and not _recorded(end):
        summary.append(
            (f"On {last.isoformat()}", "no exposure recorded by then (history starts with the next fleet scan)")
        )
    elif end is not None:
        summary += [
            (
                f"Open on {last.isoformat()}",
                ", ".join(f"{end.open_counts[k]:,} {k}" for k in SEVERITIES) + f" ({end.servers_assessed:,} servers)",
            ),
            (f"Overdue on {last.isoformat()}", ", ".join(f"{end.overdue_counts[k]:,} {k}" for k in SEVERITIES)),
        ]
    summary += [
        (
            f"Mean time to remediate, {key}",
            f"{stat.mean_days:.1f} days over {stat.remediated:,} remediations"
            if stat.mean_days is not None
            else "none closed",
        )
        for stat in stats
        for key in [stat.severity]
        if key in SEVERITIES
    ]
    return Report(
        kind="trend",
        title="Exposure trend and time to remediate",
        generated_at=generated,
        parameters={"days": str(days), "until": last.isoformat()},
        summary=summary,
        tables=[
            Table(
                "Open and overdue CVEs per day",
                columns,
                day_rows,
                "No exposure was recorded in this window.",
                terminal=(
                    "day",
                    "open_critical",
                    "open_important",
                    "overdue_critical",
                    "overdue_important",
                    "servers_assessed",
                ),
            ),
            Table(
                "Time to remediate per severity (remediations closed in the window)",
                (
                    Column("severity", "severity"),
                    Column("remediated", "remediated", True),
                    Column("mean_days", "mean days", True),
                    Column("median_days", "median days", True),
                ),
                mttr_rows,
            ),
        ],
        charts=charts,
        data={
            "window": {"first": first.isoformat(), "last": last.isoformat(), "days": days},
            "days": day_rows,
            "time_to_remediate": mttr_rows,
        },
    )
