"""Catalog queries shared by the CLI and the HTTP API: products, CVEs per product, one KB.

Results are plain JSON-ready dicts with a stable, documented shape (README "JSON output"):
snake_case keys, KBs as ``KB`` + digits, dates as ISO strings.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from autopatch.catalog.sug import SUG_PREFIX
from autopatch.domain.catalog import (
    SEVERITIES,
    AffectedRecord,
    FixRecord,
    Product,
    collapse_spaces,
    format_kb,
)
from autopatch.domain.identifiers import Month, is_windows_build, month_of_document, parse_build, parse_kb
from autopatch.domain.supersedence import walk_chain
from autopatch.errors import NotFoundError, ValidationError, shorten
from autopatch.store.base import CatalogStore

EMPTY_CATALOG = (
    "the catalog is empty: import Microsoft's data first, `autopatch catalog update` online or "
    "`autopatch catalog import FILE_OR_FOLDER` offline"
)


@lru_cache(maxsize=4096)
def document_month(document_id: str) -> Month | None:
    """The MSRC month a stored document covers (SUG documents are stored as ``sug/<month>``)."""
    return month_of_document(document_id.removeprefix(SUG_PREFIX))


def _month_key(document_id: str) -> tuple[int, int]:
    month = document_month(document_id)
    return (month.year, month.month) if month else (0, 0)


def parse_severities(values: Iterable[str], field: str = "severity") -> set[str]:
    """``Critical,Important`` (any case, comma lists allowed) → a set of canonical names."""
    wanted: set[str] = set()
    for value in values:
        for part in value.split(","):
            name = part.strip().capitalize()
            if name not in SEVERITIES:
                raise ValidationError(field, part.strip(), f"a severity is one of {', '.join(SEVERITIES)}")
            wanted.add(name)
    return wanted


def resolve_products(store: CatalogStore, name: str) -> list[Product]:
    """Products whose MSRC name equals ``name`` (spaces collapsed, any case), or whose id it is."""
    matches = store.products_named(collapse_spaces(name), name.strip())
    if not matches and not store.list_documents():
        raise NotFoundError(EMPTY_CATALOG)
    if not matches:
        raise NotFoundError(
            f"product: {shorten(repr(name))} is not in the catalog: use an exact MSRC product name "
            "(see `autopatch catalog products`), e.g. 'Windows Server 2022'"
        )
    return matches


def list_products(store: CatalogStore) -> list[dict[str, Any]]:
    return [
        {
            "product_id": summary.product_id,
            "product": summary.name,
            "product_family": summary.family,
            "cves": summary.cve_count,
            "kbs": summary.kb_count,
        }
        for summary in store.product_summaries()
    ]


def kb_view(fix: FixRecord) -> dict[str, Any]:
    return {
        "kb": format_kb(fix.fix.kb),
        "subtype": fix.fix.subtype,
        "fixed_build": fix.fix.fixed_build,
        "supersedes": [format_kb(kb) for kb in fix.fix.supersedes],
        "restart_required": fix.fix.restart_required,
        "url": fix.fix.kb_url,
        "download_url": fix.fix.download_url,
    }


def find_cves(
    store: CatalogStore,
    product: str,
    month: Month | None = None,
    severities: Collection[str] | None = None,
    cves: Collection[str] | None = None,
) -> list[dict[str, Any]]:
    """One object per (CVE, product) with its KBs; a CVE listed in several months is merged."""
    products = resolve_products(store, product)
    product_ids = [p.product_id for p in products]
    # The month's documents whatever their spelling: "2018-FEB", the out-of-band "2017-May-B", "sug/…".
    documents = (
        [d.document_id for d in store.list_documents() if document_month(d.document_id) == month] if month else None
    )
    records = store.affected(product_ids, document_ids=documents, cves=cves)
    grouped: dict[tuple[str, str], list[AffectedRecord]] = defaultdict(list)
    for record in records:
        grouped[(record.cve, record.product_id)].append(record)
    fixes: dict[tuple[str, str], dict[int, FixRecord]] = defaultdict(dict)
    if grouped:
        wanted_cves = {cve for cve, _ in grouped}
        found = store.fixes_for_products(product_ids, cves=wanted_cves)
        for fix in sorted(found, key=lambda f: _month_key(f.document_id)):
            fixes[(fix.fix.cve, fix.fix.product_id)][fix.fix.kb] = fix  # newest document wins
    results = []
    for key, rows in grouped.items():
        rows.sort(key=lambda r: _month_key(r.document_id))
        first, latest = rows[0], rows[-1]
        if severities and latest.severity not in severities:
            continue
        results.append(_cve_view(first, latest, list(fixes[key].values())))
    results.sort(key=lambda item: (item["month"], item["cve"], item["product"]))
    return results


def matching_text(rows: Iterable[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """The ``find_cves`` rows whose CVE id, title or KB ids contain ``text`` (any case): a search box's filter."""
    needle = collapse_spaces(text).casefold()
    return [
        row
        for row in rows
        if needle in row["cve"].casefold()
        or needle in row["title"].casefold()
        or any(needle in kb["kb"].casefold() for kb in row["kbs"])
    ]


def _cve_view(first: AffectedRecord, latest: AffectedRecord, fixes: list[FixRecord]) -> dict[str, Any]:
    return {
        "cve": latest.cve,
        "title": latest.title,
        "product": latest.product,
        "product_id": latest.product_id,
        "product_family": latest.family,
        "month": str(document_month(first.document_id) or ""),
        "release_date": first.release_date.isoformat() if first.release_date else None,
        "severity": latest.severity,
        "impact": latest.impact,
        "cvss_base": latest.cvss_base,
        "cvss_temporal": latest.cvss_temporal,
        "cvss_vector": latest.cvss_vector,
        "cwe": list(latest.cwe),
        "exploited": latest.exploited,
        "publicly_disclosed": latest.publicly_disclosed,
        "kbs": [kb_view(fix) for fix in sorted(fixes, key=lambda f: f.fix.kb)],
    }


def describe_kb(store: CatalogStore, kb: str) -> dict[str, Any]:
    """A KB's products, CVEs, fixed builds, month, and its supersedence chain both ways."""
    canonical = parse_kb(kb)
    number = int(canonical[2:])
    fixes = store.fixes_for_kbs([number])
    if not fixes:
        raise NotFoundError(f"kb: {canonical} is not in the catalog (no Vendor Fix names it)")
    names = {p.product_id: p for p in store.list_products()}
    product_ids = sorted({f.fix.product_id for f in fixes})
    cve_ids = sorted({f.fix.cve for f in fixes})
    severity: dict[str, str | None] = {}
    titles: dict[str, str] = {}
    for record in store.affected(product_ids, cves=cve_ids):
        titles[record.cve] = record.title
        if _rank(record.severity) < _rank(severity.get(record.cve)):
            severity[record.cve] = record.severity
        severity.setdefault(record.cve, record.severity)
    # The KB's month: the document that lists it most (a document also lists later months' KBs).
    month_counts = Counter(f.document_id for f in fixes)
    home = max(month_counts, key=lambda doc: (month_counts[doc], _month_key(doc)))
    first = fixes[0].fix
    builds: dict[str, str | None] = {}
    for fix in sorted(fixes, key=lambda f: _month_key(f.document_id)):
        builds[fix.fix.product_id] = fix.fix.fixed_build or builds.get(fix.fix.product_id)
    direct = sorted({old for f in fixes for old in f.fix.supersedes}, reverse=True)
    newer = store.superseded_by([number])[number]
    return {
        "kb": canonical,
        "month": str(document_month(home) or ""),
        "subtype": first.subtype,
        "restart_required": first.restart_required,
        "url": first.kb_url,
        "download_url": first.download_url,
        "products": [
            {
                "product_id": pid,
                "product": names[pid].name if pid in names else pid,
                "fixed_build": builds.get(pid),
            }
            for pid in product_ids
        ],
        "cves": [{"cve": cve, "title": titles.get(cve, ""), "severity": severity.get(cve)} for cve in cve_ids],
        "supersedes": [format_kb(kb) for kb in direct],
        "supersedes_chain": [format_kb(kb) for kb in walk_chain(number, store.supersedes)],
        "superseded_by": [format_kb(kb) for kb in sorted(newer)],
        "superseded_by_chain": [format_kb(kb) for kb in walk_chain(number, store.superseded_by)],
    }


def _rank(severity: str | None) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


@dataclass(frozen=True, slots=True)
class ProductUpdate:
    """One KB released for a product, with the build it brings the product to."""

    kb: int
    subtype: str | None
    fixed_build: str
    month: str
    restart_required: str | None
    supersedes: tuple[int, ...]


def product_updates(store: CatalogStore, product_id: str) -> list[ProductUpdate]:
    """Every KB with a Windows build for one product, oldest build first (the simulator's ladder)."""
    by_kb: dict[int, ProductUpdate] = {}
    counts: Counter[tuple[int, str]] = Counter()
    fixes = store.fixes_for_products([product_id])
    for record in fixes:
        counts[(record.fix.kb, record.document_id)] += 1
    for record in sorted(fixes, key=lambda r: _month_key(r.document_id)):
        fix = record.fix
        if not fix.fixed_build or not is_windows_build(fix.fixed_build):
            continue
        home = max((doc for kb, doc in counts if kb == fix.kb), key=lambda doc: counts[(fix.kb, doc)])
        by_kb[fix.kb] = ProductUpdate(
            kb=fix.kb,
            subtype=fix.subtype,
            fixed_build=fix.fixed_build,
            month=str(document_month(home) or ""),
            restart_required=fix.restart_required,
            supersedes=fix.supersedes,
        )
    return sorted(by_kb.values(), key=lambda update: (parse_build(update.fixed_build), update.kb))
