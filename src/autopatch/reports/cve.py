"""``report cve CVE-…``: the zero-day question — which servers are exposed, since when, and what closes it.

Exposed now: the CVE is open on the server's latest scan (the same decision as ``autopatch
exposure``). Since when: from the exposure history, the first recorded scan of the unbroken run
of scans in which it has been open (empty when the history holds no such scan, e.g. scans stored
before history was kept). The closing KB and whether Windows Update offers it to that server come
from the decision's own fields (``fixing_kbs``, ``offered``, ``fix``), with its reason.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import date, datetime
from typing import Any, Protocol

from autopatch.assessment import decision_view
from autopatch.domain.exposure import FIX_NONE, FIX_NOT_OFFERED, FIX_OFFERED, assess
from autopatch.domain.exposure_history import HistorySpan, open_since
from autopatch.domain.identifiers import parse_cve
from autopatch.domain.product_catalog import ProductCatalog
from autopatch.errors import NotFoundError
from autopatch.exposure_sets import ExposureSets
from autopatch.reports.fleet_now import FleetNowStore, fleet_now
from autopatch.reports.model import BarChart, Column, Report, Series, Table, generated_now
from autopatch.store.base import HistoryStore

FIX_WORDS = {
    FIX_OFFERED: "offered by Windows Update",
    FIX_NOT_OFFERED: "not offered: install by hand",
    FIX_NONE: "no KB from Microsoft",
}


class CveReportStore(FleetNowStore, HistoryStore, Protocol):
    """What the CVE report reads: the fleet now, and the history for "since when"."""


def _single(catalog: ProductCatalog, cve: str) -> ProductCatalog | None:
    """The product's catalog narrowed to one CVE (deciding it alone costs one decision); None if it lacks it."""
    kept = tuple(entry for entry in catalog.cves if entry.cve == cve)
    return replace(catalog, cves=kept) if kept else None


def cve_report(store: CveReportStore, cve_id: str, on: date | None = None) -> Report:
    cve = parse_cve(cve_id)
    generated = generated_now()
    day = on or generated.date()
    sets = ExposureSets(store)
    rules = sets.rules(day)
    servers = fleet_now(store, day, sets=sets)
    narrowed: dict[str, ProductCatalog | None] = {}
    exposed: list[dict[str, Any]] = []
    fixed = not_affected = 0
    unknown: list[dict[str, Any]] = []
    titles: dict[str, tuple[str | None, str]] = {}
    for server in servers:
        instance = server.instance
        if server.exposure is None or server.product is None or server.scan is None:
            unknown.append({"instance_id": instance.instance_id, "name": instance.name, "reason": server.unknown})
            continue
        if server.product not in narrowed:
            catalog = sets.catalog(server.product)
            narrowed[server.product] = _single(catalog, cve) if catalog is not None else None
        single = narrowed[server.product]
        if single is None:
            not_affected += 1
            continue
        [decision] = assess(single, sets.facts(server.scan))
        titles[server.product] = (decision.severity, decision.title)
        if decision.status != "open":
            fixed += 1
            continue
        view = decision_view(decision)
        [entry] = single.cves
        due = rules.due(cve, decision.severity, entry.released)
        exposed.append(
            {
                "instance_id": instance.instance_id,
                "name": instance.name,
                "product": server.product,
                "build": server.scan.build,
                "severity": decision.severity,
                "since": None,
                "closing_kbs": ";".join(decision.fixing_kbs),
                "offered": decision.offered,
                "fix": FIX_WORDS.get(decision.fix or "", decision.fix),
                "due": due.isoformat() if due else None,
                "overdue": due is not None and due < day,
                "scanned_at": server.scan.scanned_at.isoformat(timespec="seconds"),
                "reason": view["reason"],
            }
        )
    if not titles and not exposed and not _in_catalog(store, cve):
        raise NotFoundError(f"cve: {cve} is not in the catalog (import the month that lists it first)")
    _add_since(store, cve, exposed)
    exposed.sort(key=lambda row: (row["since"] or "9999", row["name"], row["instance_id"]))
    kev = rules.kev.get(cve)
    title = next((t for _, t in titles.values() if t), "")
    offered = sum(1 for row in exposed if row["offered"])
    summary = [
        ("CVE", f"{cve}" + (f": {title}" if title else "")),
        (
            "Severity",
            ", ".join(sorted({f"{s or 'unrated'} on {p}" for p, (s, _) in titles.items()}))
            or "not on any server's product",
        ),
        (
            "KEV",
            f"listed {kev.date_added.isoformat()}, due {kev.due_date.isoformat()}"
            if kev
            else "not listed by CISA on " + day.isoformat(),
        ),
        ("Exposed now", f"{len(exposed):,} servers ({offered:,} with the fix offered by Windows Update)"),
        ("Not exposed", f"{fixed:,} servers fixed, {not_affected:,} whose product it does not affect"),
        ("Exposure unknown", f"{len(unknown):,} servers (offline, never scanned or unidentified)"),
    ]
    tables = [
        Table(
            f"Servers exposed to {cve}, longest exposed first",
            (
                Column("name", "server"),
                Column("instance_id", "instance"),
                Column("product", "product"),
                Column("build", "build"),
                Column("since", "exposed since"),
                Column("closing_kbs", "closing KB"),
                Column("offered", "offered"),
                Column("fix", "fix"),
                Column("due", "due"),
                Column("overdue", "overdue"),
            ),
            exposed,
            f"No assessed server is exposed to {cve}.",
            terminal=("name", "since", "closing_kbs", "fix", "due"),
        ),
        Table(
            "Servers whose exposure is unknown",
            (Column("name", "server"), Column("instance_id", "instance"), Column("reason", "why")),
            unknown,
            "None: every server was assessed.",
        ),
    ]
    by_fix: dict[str, int] = defaultdict(int)
    for row in exposed:
        by_fix[str(row["fix"])] += 1
    return Report(
        kind="cve",
        title=f"Exposure to {cve}",
        generated_at=generated,
        parameters={"cve": cve, "on": day.isoformat()},
        summary=summary,
        tables=tables,
        charts=[
            BarChart(
                f"Servers and {cve}",
                ("exposed, fix offered", "exposed, not offered", "fixed", "not affected", "unknown"),
                (
                    Series(
                        "servers",
                        (
                            float(offered),
                            float(len(exposed) - offered),
                            float(fixed),
                            float(not_affected),
                            float(len(unknown)),
                        ),
                    ),
                ),
            )
        ],
        data={
            "cve": cve,
            "title": title,
            "kev": kev.as_dict() if kev else None,
            "counts": {"exposed": len(exposed), "fixed": fixed, "not_affected": not_affected, "unknown": len(unknown)},
            "exposed": exposed,
            "unknown": unknown,
        },
    )


def _in_catalog(store: CveReportStore, cve: str) -> bool:
    products = [product.product_id for product in store.list_products()]
    return bool(products) and bool(store.affected(products, cves=[cve]))


def _add_since(store: HistoryStore, cve: str, rows: list[dict[str, Any]]) -> None:
    """Each exposed row's ``since``, from the history of its server."""
    if not rows:
        return
    spans = store.history_spans([row["instance_id"] for row in rows])
    sets = store.exposure_sets({span.set_digest for span in spans if span.set_digest is not None})
    per_server: dict[str, list[HistorySpan]] = defaultdict(list)
    for span in spans:
        per_server[span.instance_id].append(span)
    for row in rows:
        since = open_since(per_server.get(row["instance_id"], []), sets, cve)
        row["since"] = datetime.fromisoformat(since).isoformat(timespec="seconds") if since else None
