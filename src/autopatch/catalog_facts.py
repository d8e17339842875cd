"""Catalog reads a plan's policy needs beyond the product view: release evidence and exploited CVEs.

``load_product_catalog`` (``assessment.py``) gives a product's KBs, CVEs and chains; a baseline also
needs each KB's release (``domain/release_dates.py`` decides it from how often each document lists
the KB and when the CVEs it fixes there were published) and which CVEs Microsoft marks exploited.
These reads cost a pass over the product's rows, so the policy makes them only when a plan needs
them (an as-of date, a waiting period, ``exploited_first``), once per product.
"""

from __future__ import annotations

from collections import Counter
from datetime import date

from autopatch.catalog.queries import resolve_products
from autopatch.domain.catalog import AffectedRecord, FixRecord, collapse_spaces
from autopatch.domain.product_catalog import ProductCatalog
from autopatch.domain.release_dates import KbRelease, document_dates, release_dates
from autopatch.store.base import CatalogStore


class CatalogFacts:
    """Release evidence and exploited CVEs from the catalog store (document dates read once)."""

    def __init__(self, store: CatalogStore) -> None:
        self._store = store
        self._documents: dict[str, date] | None = None

    def document_dates(self) -> dict[str, date]:
        """Each stored document's release date (``domain/release_dates.document_dates``)."""
        if self._documents is None:
            stored = {d.document_id: d.initial_release_date for d in self._store.list_documents()}
            self._documents = document_dates(stored)
        return self._documents

    def product_ids(self, catalog: ProductCatalog) -> list[str]:
        wanted = collapse_spaces(catalog.product).casefold()
        return [p.product_id for p in resolve_products(self._store, catalog.product) if p.name.casefold() == wanted]

    def releases(self, catalog: ProductCatalog) -> dict[int, KbRelease]:
        """The release of the product's KBs and of the other products' KBs its chains reach."""
        product_ids = self.product_ids(catalog)
        records = self._store.fixes_for_products(product_ids)
        affected = self._store.affected(product_ids)
        others = {kb for newer in catalog.superseded_by.values() for kb in newer} - catalog.kbs.keys()
        if others:  # KBs listed under other products only: few, read with their own rows
            found = self._store.fixes_for_kbs(sorted(others))
            affected += self._store.affected(
                {r.fix.product_id for r in found}, {r.document_id for r in found}, {r.fix.cve for r in found}
            )
            records += found
        listings: dict[int, Counter[str]] = {}
        for record in records:
            listings.setdefault(record.fix.kb, Counter())[record.document_id] += 1
        return release_dates(catalog, listings, self.document_dates(), published(records, affected))

    def exploited_kbs(self, catalog: ProductCatalog) -> frozenset[int]:
        """KBs of the product fixing a CVE that Microsoft marks "Exploited: Yes" in any document."""
        cves = {record.cve for record in self._store.affected(self.product_ids(catalog)) if record.exploited}
        return frozenset(kb for cve in catalog.cves if cve.cve in cves for kb in cve.kbs)


def published(records: list[FixRecord], affected: list[AffectedRecord]) -> dict[int, dict[str, date]]:
    """KB → document → when the earliest CVE it fixes there was published (out-of-band KBs show late)."""
    when = {(row.document_id, row.cve): row.release_date for row in affected if row.release_date is not None}
    found: dict[int, dict[str, date]] = {}
    for record in records:
        day = when.get((record.document_id, record.fix.cve))
        if day is not None:
            per_document = found.setdefault(record.fix.kb, {})
            per_document[record.document_id] = min(day, per_document.get(record.document_id, day))
    return found
