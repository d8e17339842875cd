"""Every catalog read on DynamoDB, each on one published state of the catalog.

Imports publish a month's new generation with one conditional write that also moves the catalog
counter (see ``dynamodb_catalog_import``). A reader takes the generation of each month from the
headers — cached, with the products, until the counter moves: two GetItems of the counter per
read instead of reading 126 headers and 7,000 products each time — reads, and checks the counter
again: if a publication happened meanwhile it reads again, so it never mixes two generations nor
misses one whose items are being deleted.

Reads by product are Queries of the product's partition (strongly consistent); a month filter
reads the ``by_month`` index (eventually consistent: a month imported a moment ago may lag by
that moment); reads by KB are Queries of ``KB#<kb>``. The product summary and the counts add up
the months' digests, once per catalog revision.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, TypeVar

from autopatch.domain.catalog import AffectedRecord, FixRecord, Product, ProductSummary
from autopatch.errors import StoreError
from autopatch.store.dynamodb_catalog_import import CatalogImport, day, joined, product_of
from autopatch.store.dynamodb_catalog_items import BY_MONTH, DIGEST, PRODUCTS, Entry, FixRow, fix_record
from autopatch.store.dynamodb_codec import unpack
from autopatch.store.dynamodb_io import DynamoIO, Item

_FEW_CVES = 16  # up to this many CVEs, one Query per CVE beats reading a product's whole partition
_READ_TRIES = 5
_ASCII_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")  # SQLite's NOCASE
T = TypeVar("T")


@dataclass(slots=True)
class CatalogView:
    """What a read needs besides the entries: the published generations and the products."""

    revision: int
    headers: dict[str, Item]
    products: dict[str, Product]
    digests: dict[str, dict[str, Any]] | None = None  # loaded on first use
    lock: threading.Lock = field(default_factory=threading.Lock)

    def current(self, item: Item) -> bool:
        header = self.headers.get(item["doc"])
        return header is not None and header["gen"] == item["gen"]


def _affected(entry: Entry, product: Product) -> AffectedRecord:
    assert entry.affected is not None and entry.vulnerability is not None
    severity, impact, base, temporal, vector = entry.affected
    title, cwe, exploited, disclosed, released = entry.vulnerability
    return AffectedRecord(
        document_id=entry.document_id,
        cve=entry.cve,
        product_id=entry.product_id,
        product=product.name,
        family=product.family,
        title=title,
        severity=severity,
        impact=impact,
        cvss_base=None if base is None else float(base),
        cvss_temporal=None if temporal is None else float(temporal),
        cvss_vector=vector,
        cwe=tuple(cwe),
        exploited=exploited,
        publicly_disclosed=disclosed,
        release_date=day(released),
    )


class CatalogItems(CatalogImport):
    """Mixed into ``DynamoStore``: ``CatalogStore`` over the catalog table and the state table's headers."""

    _io: DynamoIO
    catalog_table: str
    state_table: str
    _catalog_lock: threading.Lock
    _view: CatalogView | None
    _known_products: dict[str, Product] | None

    # --- the consistent view readers share ---------------------------------------------------------

    def _current_view(self) -> CatalogView:
        revision = self.catalog_revision()
        with self._catalog_lock:
            if self._view is not None and self._view.revision == revision:
                return self._view
        products = {p.product_id: p for p in map(product_of, self._io.query(self.catalog_table, PRODUCTS))}
        view = CatalogView(revision, self._headers(), products)
        with self._catalog_lock:
            self._view = view
        return view

    def _snapshot(self, read: Callable[[CatalogView], T]) -> T:
        """``read`` on one published state of the catalog: again if an import was published meanwhile."""
        for _ in range(_READ_TRIES):
            view = self._current_view()
            result = read(view)
            if self.catalog_revision() == view.revision:
                return result
        raise StoreError("the catalog changed during every attempt to read it; try again")

    def _digests(self, view: CatalogView) -> dict[str, dict[str, Any]]:
        with view.lock:
            if view.digests is None:
                groups: dict[str, list[Item]] = defaultdict(list)
                for part in self._io.query(self.state_table, DIGEST):
                    if view.current(part):
                        groups[part["doc"]].append(part)
                view.digests = {doc: unpack(joined(parts, "data")) for doc, parts in groups.items()}
            return view.digests

    # --- reads ------------------------------------------------------------------------------------

    def list_products(self) -> list[Product]:
        products = self._snapshot(lambda view: list(view.products.values()))
        return sorted(products, key=lambda p: (p.name, p.product_id))

    def products_named(self, name: str, product_id: str) -> list[Product]:
        folded = name.translate(_ASCII_FOLD)
        products = self._snapshot(lambda view: list(view.products.values()))
        found = [p for p in products if p.name.translate(_ASCII_FOLD) == folded or p.product_id == product_id]
        return sorted(found, key=lambda p: p.product_id)

    def product_summaries(self) -> list[ProductSummary]:
        def read(view: CatalogView) -> list[ProductSummary]:
            cves: dict[str, set[str]] = defaultdict(set)
            kbs: dict[str, set[int]] = defaultdict(set)
            for digest in self._digests(view).values():
                for product_id, affected in digest["affected"].items():
                    cves[product_id].update(affected)
                for row in digest["fixes"]:
                    kbs[row[1]].add(row[2])
            return [
                ProductSummary(p.product_id, p.name, p.family, len(cves[p.product_id]), len(kbs[p.product_id]))
                for p in sorted(view.products.values(), key=lambda p: (p.name, p.product_id))
            ]

        return self._snapshot(read)

    def _entries(
        self, view: CatalogView, product_id: str, documents: set[str] | None, cves: set[str] | None
    ) -> Iterator[Entry]:
        """A product's published entries, narrowed by month (the by_month index) or by CVE."""
        source: Iterable[Item]
        if documents is not None:
            source = chain.from_iterable(
                self._io.query(
                    self.catalog_table,
                    f"MONTH#{document}",
                    f"OS#{product_id}#CVE#",
                    index=BY_MONTH,
                    hash_name="month",
                    range_name="month_key",
                )
                for document in sorted(documents)
                if document in view.headers
            )
        elif cves is not None and len(cves) <= _FEW_CVES:
            source = chain.from_iterable(
                self._io.query(self.catalog_table, f"OS#{product_id}", f"CVE#{cve}#") for cve in sorted(cves)
            )
        else:
            source = self._io.query(self.catalog_table, f"OS#{product_id}", "CVE#")
        for item in source:
            if view.current(item):
                entry = Entry.of(item)
                if cves is None or entry.cve in cves:
                    yield entry

    def affected(
        self,
        product_ids: Collection[str],
        document_ids: Collection[str] | None = None,
        cves: Collection[str] | None = None,
    ) -> list[AffectedRecord]:
        documents = None if document_ids is None else set(document_ids)
        wanted = None if cves is None else set(cves)

        def read(view: CatalogView) -> list[AffectedRecord]:
            records = []
            for product_id in dict.fromkeys(product_ids):
                product = view.products.get(product_id)
                if product is None:  # SQLite joins products: an unknown product has no rows
                    continue
                for entry in self._entries(view, product_id, documents, wanted):
                    if entry.affected and entry.vulnerability:  # and joins vulnerabilities
                        records.append(_affected(entry, product))
            return records

        return self._snapshot(read)

    def fixes_for_products(self, product_ids: Collection[str], cves: Collection[str] | None = None) -> list[FixRecord]:
        wanted = None if cves is None else set(cves)

        def read(view: CatalogView) -> list[FixRecord]:
            return [
                fix_record(entry.document_id, row)
                for product_id in dict.fromkeys(product_ids)
                for entry in self._entries(view, product_id, None, wanted)
                for row in entry.fixes
            ]

        return self._snapshot(read)

    def _kb_parts(self, view: CatalogView, kb: int) -> dict[str, list[Item]]:
        """The published parts of one KB's items, per month."""
        months: dict[str, list[Item]] = defaultdict(list)
        for part in self._io.query(self.catalog_table, f"KB#{kb}", "DOC#"):
            if view.current(part):
                months[part["doc"]].append(part)
        return months

    def fixes_for_kbs(self, kbs: Iterable[int]) -> list[FixRecord]:
        wanted = list(dict.fromkeys(kbs))

        def read(view: CatalogView) -> list[FixRecord]:
            records: list[FixRecord] = []
            for kb in wanted:
                for document_id, parts in sorted(self._kb_parts(view, kb).items()):
                    blob = joined(parts, "fixes")
                    rows: list[FixRow] = unpack(blob) if blob else []
                    records.extend(fix_record(document_id, row) for row in rows)
            return records

        return self._snapshot(read)

    def _edges(self, kbs: Iterable[int], attribute: str) -> dict[int, set[int]]:
        wanted = list(dict.fromkeys(kbs))

        def read(view: CatalogView) -> dict[int, set[int]]:
            result: dict[int, set[int]] = {kb: set() for kb in wanted}
            for kb in wanted:
                for parts in self._kb_parts(view, kb).values():
                    for part in parts:
                        result[kb].update(int(number) for number in part.get(attribute, ()))
            return result

        return self._snapshot(read)

    def superseded_by(self, kbs: Iterable[int]) -> dict[int, set[int]]:
        return self._edges(kbs, "supby")

    def supersedes(self, kbs: Iterable[int]) -> dict[int, set[int]]:
        return self._edges(kbs, "sup")

    def counts(self) -> dict[str, int]:
        def read(view: CatalogView) -> dict[str, int]:
            digests = self._digests(view).values()
            return {
                "documents": len(view.headers),
                "cves": len({cve for digest in digests for cve in digest["cves"]}),
                "products": len(view.products),
                "kbs": len({row[2] for digest in digests for row in digest["fixes"]}),
                "entries": sum(int(header["fix_count"]) for header in view.headers.values()),
            }

        return self._snapshot(read)
