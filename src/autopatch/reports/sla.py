"""``report sla``: the open CVEs past their deadline, by server and severity, oldest first.

Deadlines are ``domain/deadlines.py``'s (the SLA policy's days per severity from the CVE's release,
or KEV's due date when earlier), judged today: the same ``due`` and ``overdue`` as ``autopatch
exposure`` shows per CVE. Rows are per (server, severity) with the oldest overdue CVE, or per
(server, CVE) with ``cves=True``.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import date
from typing import Any

from autopatch.domain.catalog import SEVERITIES
from autopatch.domain.exposure_history import severity_key
from autopatch.exposure_sets import ExposureSets
from autopatch.reports.fleet_now import FleetNowStore, fleet_now
from autopatch.reports.model import BarChart, Column, Report, Series, Table, generated_now


def _rank(severity: str | None) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


def overdue_pairs(
    store: FleetNowStore,
    on: date,
    severities: Collection[str] | None = None,
    instance_ids: Collection[str] = (),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(every open overdue (server, CVE) as a row, the servers whose exposure is unknown)."""
    sets = ExposureSets(store)
    rules = sets.rules(on)
    pairs: list[dict[str, Any]] = []
    unknown: list[dict[str, Any]] = []
    for server in fleet_now(store, on, instance_ids, sets):
        if server.exposure is None:
            unknown.append(
                {"instance_id": server.instance.instance_id, "name": server.instance.name, "reason": server.unknown}
            )
            continue
        for cve in server.exposure.cves:
            if cve.due is None or not cve.due < on or (severities and cve.severity not in severities):
                continue
            pairs.append(
                {
                    "instance_id": server.instance.instance_id,
                    "name": server.instance.name,
                    "product": server.product,
                    "cve": cve.cve,
                    "severity": severity_key(cve.severity),
                    "due": cve.due.isoformat(),
                    "days_overdue": (on - cve.due).days,
                    "kev": cve.cve in rules.kev,
                }
            )
    pairs.sort(key=lambda p: (p["due"], _rank(p["severity"]), p["name"], p["instance_id"], p["cve"]))
    return pairs, unknown


def sla_report(
    store: FleetNowStore,
    severities: Collection[str] | None = None,
    instance_ids: Collection[str] = (),
    cves: bool = False,
    on: date | None = None,
) -> Report:
    generated = generated_now()
    day = on or generated.date()
    pairs, unknown = overdue_pairs(store, day, severities, instance_ids)
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for pair in pairs:  # oldest first already: a group's first pair is its oldest
        key = (pair["instance_id"], pair["severity"])
        if key not in groups:
            groups[key] = {
                "instance_id": pair["instance_id"],
                "name": pair["name"],
                "severity": pair["severity"],
                "overdue": 0,
                "kev": 0,
                "oldest_due": pair["due"],
                "oldest_cve": pair["cve"],
                "days_overdue": pair["days_overdue"],
            }
        groups[key]["overdue"] += 1
        groups[key]["kev"] += int(pair["kev"])
    by_server = list(groups.values())
    per_severity = {key: sum(1 for p in pairs if p["severity"] == key) for key in (*SEVERITIES, "Unrated")}
    servers_late = len({p["instance_id"] for p in pairs})
    if cves:
        main = Table(
            "Overdue CVEs per server, oldest deadline first",
            (
                Column("name", "server"),
                Column("instance_id", "instance"),
                Column("cve", "CVE"),
                Column("severity", "severity"),
                Column("due", "due"),
                Column("days_overdue", "days overdue", True),
                Column("kev", "KEV"),
            ),
            pairs,
            "No open CVE is past its deadline.",
            terminal=("name", "cve", "severity", "due", "days_overdue", "kev"),
        )
    else:
        main = Table(
            "Overdue CVEs by server and severity, oldest deadline first",
            (
                Column("name", "server"),
                Column("instance_id", "instance"),
                Column("severity", "severity"),
                Column("overdue", "overdue", True),
                Column("kev", "of them KEV", True),
                Column("oldest_due", "oldest due"),
                Column("oldest_cve", "oldest CVE"),
                Column("days_overdue", "days overdue", True),
            ),
            by_server,
            "No open CVE is past its deadline.",
            terminal=("name", "severity", "overdue", "oldest_due", "days_overdue"),
        )
    tables = [main]
    if unknown:
        tables.append(
            Table(
                "Servers whose exposure is unknown (not counted above)",
                (Column("name", "server"), Column("instance_id", "instance"), Column("reason", "why")),
                unknown,
            )
        )
    shown = [key for key in per_severity if key in SEVERITIES or per_severity[key]]
    policy = ExposureSets(store).policy
    parameters = {"on": day.isoformat()}
    if severities:
        parameters["severity"] = ",".join(sorted(severities, key=_rank))
    return Report(
        kind="sla",
        title="Overdue CVEs (SLA)",
        generated_at=generated,
        parameters=parameters,
        summary=[
            (
                "Deadlines",
                ", ".join(f"{key} {days} days" for key, days in policy.by_severity().items())
                + "; KEV due date when earlier",
            ),
            ("Overdue (server, CVE) pairs", f"{len(pairs):,} on {servers_late:,} servers"),
            ("Per severity", ", ".join(f"{per_severity[key]:,} {key}" for key in shown)),
            ("Exposure unknown", f"{len(unknown):,} servers (offline, never scanned or unidentified)"),
        ],
        tables=tables,
        charts=[
            BarChart(
                "Overdue (server, CVE) pairs per severity",
                tuple(shown),
                (Series("overdue", tuple(float(per_severity[key]) for key in shown)),),
            )
        ],
        data={
            "on": day.isoformat(),
            "policy": policy.as_dict(),
            "totals": {"overdue": len(pairs), "servers": servers_late, "by_severity": per_severity},
            "servers": by_server,
            "cves": pairs if cves else None,
            "unknown": unknown,
        },
    )
