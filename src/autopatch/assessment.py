"""Exposure steps: load a product's catalog view once, then decide CVEs for servers or typed-in facts.

The decision itself is pure (``domain/exposure.py``); this module only feeds it from the store.
The CLI's ``assess`` and ``exposure`` commands, the HTTP API and the patch engine all call these.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable
from dataclasses import replace
from typing import Any

from autopatch.catalog.queries import document_month, resolve_products
from autopatch.domain.catalog import collapse_spaces
from autopatch.domain.exposure import (
    CatalogCve,
    CatalogKb,
    CveDecision,
    ProductCatalog,
    ServerFacts,
    assess,
    build_of,
    classify_kb,
    closure,
    infer_cumulative_builds,
    summarise,
)
from autopatch.domain.identifiers import Month, parse_build, parse_kb
from autopatch.errors import NotFoundError
from autopatch.store.base import CatalogStore
from autopatch.store.sqlite import SqliteStore


def _month_sort(document_id: str) -> tuple[int, int]:
    month = document_month(document_id)
    return (month.year, month.month) if month else (0, 0)


def load_product_catalog(store: CatalogStore, product: str) -> ProductCatalog:
    """Every CVE, KB and supersedence edge of one product (exact MSRC name), newest data winning."""
    wanted = collapse_spaces(product).casefold()
    products = [p for p in resolve_products(store, product) if p.name.casefold() == wanted]
    if not products:
        raise NotFoundError(f"product: {product!r} is not in the catalog")
    product_ids = [p.product_id for p in products]
    records = sorted(store.affected(product_ids), key=lambda r: _month_sort(r.document_id))
    first_month: dict[str, str] = {}
    latest: dict[str, tuple[str | None, str]] = {}
    for record in records:
        first_month.setdefault(record.cve, str(document_month(record.document_id) or ""))
        latest[record.cve] = (record.severity, record.title)
    kbs_of: dict[str, set[int]] = defaultdict(set)
    kbs: dict[int, CatalogKb] = {}
    listings: Counter[tuple[int, str]] = Counter()
    fixes = sorted(store.fixes_for_products(product_ids), key=lambda r: _month_sort(r.document_id))
    for fix_record in fixes:
        fix = fix_record.fix
        kbs_of[fix.cve].add(fix.kb)
        listings[(fix.kb, fix_record.document_id)] += 1
        previous = kbs.get(fix.kb)
        # Newest data wins, but a FixedBuild that a newer revision dropped is kept.
        build = build_of(fix.fixed_build) or (previous.build if previous else None)
        kbs[fix.kb] = CatalogKb(fix.kb, build, fix.subtype, fix.restart_required)
    home: dict[int, tuple[int, str]] = {}
    for (kb, document_id), count in listings.items():  # a KB's month: the document listing it most
        if count > home.get(kb, (0, ""))[0]:
            home[kb] = (count, document_id)
    kbs = infer_cumulative_builds({kb: replace(entry, month=_month_sort(home[kb][1])) for kb, entry in kbs.items()})
    edges = store.superseded_by(kbs) if kbs else {}
    cves = tuple(
        CatalogCve(cve, severity, title, first_month[cve], tuple(sorted(kbs_of.get(cve, ()))))
        for cve, (severity, title) in sorted(latest.items())
    )
    return ProductCatalog(products[0].name, cves, kbs, closure(edges, kbs))


def server_facts(build: str | None, installed: Iterable[str], offered: Iterable[str] = ()) -> ServerFacts:
    return ServerFacts(
        build=parse_build(build) if build else None,
        installed=frozenset(int(parse_kb(kb, "installed")[2:]) for kb in installed),
        offered=frozenset(int(parse_kb(kb, "offered")[2:]) for kb in offered),
    )


def decision_view(decision: CveDecision) -> dict[str, Any]:
    return {
        "cve": decision.cve,
        "severity": decision.severity,
        "month": decision.month,
        "status": decision.status,
        "reason": decision.reason,
        "fixing_kbs": list(decision.fixing_kbs),
        "offered": decision.offered,
        "title": decision.title,
    }


def assess_facts(
    store: CatalogStore,
    product: str,
    build: str,
    installed: Collection[str] = (),
    month: Month | None = None,
) -> dict[str, Any]:
    """``autopatch assess``: the exposure decision for facts typed in by hand (air-gapped servers)."""
    facts = server_facts(build, installed)
    catalog = load_product_catalog(store, product)
    decisions = [d for d in assess(catalog, facts) if month is None or d.month == str(month)]
    return {
        "product": catalog.product,
        "build": build,
        "summary": {
            "open": sum(1 for d in decisions if d.status == "open"),
            "fixed": sum(1 for d in decisions if d.status == "fixed"),
        },
        "cves": [decision_view(d) for d in decisions],
    }


def kb_statuses(catalog: ProductCatalog, facts: ServerFacts) -> dict[str, str]:
    """Every KB of the product classified for one server (Already Installed, Superseded, …)."""
    return {f"KB{kb}": str(classify_kb(catalog, kb, facts)) for kb in sorted(catalog.kbs)}


def fleet_exposure(
    store: SqliteStore,
    instance_ids: Collection[str] = (),
    severities: Collection[str] | None = None,
    with_cves: bool = False,
) -> list[dict[str, Any]]:
    """Per server: open Critical/Important CVE counts and the KBs that close them (from the last scan).

    Servers with the same product and facts (build, installed, offered) share one assessment and
    one summary: a fleet has far fewer distinct patch levels than servers.
    """
    from autopatch.scanning import identify, resolve_targets

    instances = resolve_targets(store, instance_ids)
    scans = store.latest_scans(list(instance_ids) if instance_ids else None)
    catalogs: dict[str, ProductCatalog] = {}
    summaries: dict[tuple[str, ServerFacts], dict[str, Any]] = {}
    wanted = set(severities) if severities else None
    rows: list[dict[str, Any]] = []
    for instance in instances:
        scan = scans.get(instance.instance_id)
        identity = identify(instance, scan)
        row: dict[str, Any] = {
            "instance_id": instance.instance_id,
            "name": instance.name,
            "product": identity.product,
            "build": scan.build if scan else None,
            "scanned_at": scan.scanned_at.isoformat(timespec="seconds") if scan else None,
        }
        if scan is None or identity.product is None:
            row["status"] = "not scanned" if scan is None else f"unidentified: {identity.reason}"
            rows.append(row)
            continue
        if identity.product not in catalogs:
            catalogs[identity.product] = load_product_catalog(store, identity.product)
        facts = server_facts(scan.build, scan.installed_kbs, scan.offered_kbs)
        key = (identity.product, facts)
        if key not in summaries:
            summaries[key] = _summarise(catalogs[identity.product], facts, wanted, with_cves)
        rows.append(row | summaries[key])
    return rows


def _summarise(
    catalog: ProductCatalog, facts: ServerFacts, severities: set[str] | None, with_cves: bool
) -> dict[str, Any]:
    counts = summarise(catalog, facts, frozenset(severities) if severities else None)
    closing = [f"KB{kb}" for kb in counts.closing]
    summary: dict[str, Any] = {
        "status": "assessed",
        "open_critical": counts.open_by_severity.get("Critical", 0),
        "open_important": counts.open_by_severity.get("Important", 0),
        "open_total": counts.open_total,
        "fixed_total": counts.fixed_total,
        "closing_kbs": closing,
        "offered_kbs": [kb for kb in closing if int(kb[2:]) in facts.offered],
    }
    if with_cves:
        decisions = [d for d in assess(catalog, facts) if severities is None or d.severity in severities]
        summary["cves"] = [decision_view(d) for d in decisions]
    return summary
