"""Importing a month into the catalog table: BatchWriteItem, published by one conditional write.

A month has up to 5,000 (CVE, product) entries: far past a transaction's 100 actions, so an import
cannot be one transaction as in SQLite. It is made one for readers instead, with generations:

1. the new items are written under a fresh generation id (in their keys) with BatchWriteItem,
   digest first — items of a generation no header names are invisible to every read;
2. one transaction publishes it: the document's header (state table, ``CATALOG / DOC#<id>``) now
   names the new generation — on the condition that it still names the one we replaced, so two
   imports of one month cannot both win — and the catalog counter moves with it;
3. the old generation's items are deleted, their keys taken from its digest (no index needed).

A crashed import leaves a generation no header names; the next import of that month deletes it
once it is an hour old (an hour-old generation is no import still running).

Products are upserted before the publication (only new or renamed ones: every month repeats
the whole product tree); a product seen early is harmless, it has no published entry yet.
"""

from __future__ import annotations

import time
import uuid
import zlib
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime
from itertools import chain
from typing import Any

from autopatch.domain.catalog import CatalogDocument, ImportCounts, Product, StoredDocument
from autopatch.errors import StoreError
from autopatch.store.dynamodb_catalog_items import (
    DIGEST,
    PRODUCTS,
    build_items,
    compare_fixes,
    digest_key,
    generation_keys,
)
from autopatch.store.dynamodb_codec import join_blob, unpack
from autopatch.store.dynamodb_fleet import CATALOG_COUNTER, read_counter
from autopatch.store.dynamodb_fleet_view import (
    catalog_footprint,
    catalog_keys,
    counter_key,
    counter_value,
    logged_counter,
)
from autopatch.store.dynamodb_io import PK, SK, DynamoIO, Item, TransactionCancelled, pk_sk, put_action

CATALOG = "CATALOG"
ORPHAN_SECONDS = 3600.0
PUBLISH_TRIES = 10


def day(text: str | None) -> date | None:
    return date.fromisoformat(text) if text else None


def _stored(header: Item) -> StoredDocument:
    return StoredDocument(
        document_id=header["document_id"],
        title=header["title"],
        revision=header["revision"],
        initial_release_date=day(header.get("initial")),
        current_release_date=day(header.get("current")),
        source_format=header["source_format"],
        source_sha256=header["source_sha256"],
        imported_at=header["imported_at"],
    )


def joined(parts: Iterable[Item], attribute: str) -> bytes:
    return join_blob(part.get(attribute, b"") for part in sorted(parts, key=lambda p: int(p["part"])))


def _product(product: Product) -> dict[str, Any]:
    return {"name": product.name, "family": product.family}


def product_of(item: Item) -> Product:
    return Product(item[SK], item["name"], item.get("family"))


class CatalogImport:
    """Mixed into ``DynamoStore`` (through ``CatalogItems``): documents, their import and the counter."""

    _io: DynamoIO
    catalog_table: str
    state_table: str
    _known_products: dict[str, Product] | None

    # --- documents -----------------------------------------------------------------------------

    def catalog_revision(self) -> int:
        return read_counter(self._io, self.state_table, CATALOG_COUNTER)

    def get_document(self, document_id: str) -> StoredDocument | None:
        header = self._io.get(self.state_table, pk_sk(CATALOG, f"DOC#{document_id}"))
        return _stored(header) if header else None

    def list_documents(self) -> list[StoredDocument]:
        return sorted(map(_stored, self._headers().values()), key=lambda d: d.document_id)

    def _headers(self) -> dict[str, Item]:
        return {h["document_id"]: h for h in self._io.query(self.state_table, CATALOG, "DOC#")}

    def replace_document(self, document: CatalogDocument, source_sha256: str) -> ImportCounts:
        """Make the store hold exactly this document's entries: write a generation, publish it, delete the old."""
        info = document.info
        header_key = pk_sk(CATALOG, f"DOC#{info.document_id}")
        old = self._io.get(self.state_table, header_key)
        generation = uuid.uuid4().hex[:12]
        items = build_items(document, generation, time.time())
        old_digest = self._digest(info.document_id, old["gen"]) if old else None
        counts = compare_fixes(old_digest[0]["fixes"] if old_digest else [], items.digest["fixes"])
        changed = self._changed_products(document)
        self._io.batch_write(self.catalog_table, [pk_sk(PRODUCTS, p.product_id) | _product(p) for p in changed])
        self._io.batch_write(self.state_table, items.digest_items)  # first: it lists what follows
        self._io.batch_write(self.catalog_table, chain(items.entries, items.kb_items))
        header = header_key | {
            "document_id": info.document_id,
            "title": info.title,
            "revision": info.revision,
            "initial": info.initial_release_date.isoformat() if info.initial_release_date else None,
            "current": info.current_release_date.isoformat() if info.current_release_date else None,
            "source_format": info.source_format,
            "source_sha256": source_sha256,
            "imported_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "gen": generation,
            "fix_count": len(document.fixes),
        }
        condition, values = ("#gen = :old", {":old": old["gen"]}) if old else ("attribute_not_exists(#pk)", None)
        publish = put_action(self.state_table, header, condition, values)
        touched = self._touched(document, items.digest, old_digest[0] if old_digest else None, bool(old))
        for attempt in range(PUBLISH_TRIES):
            current = counter_value(self._io.get(self.state_table, counter_key(CATALOG_COUNTER)))
            try:
                self._io.transact([publish, *logged_counter(self.state_table, CATALOG_COUNTER, current, touched)])
                break
            except TransactionCancelled as exc:
                if 0 in exc.failed():  # the header's condition, not the counter's
                    self._delete_generation(info.document_id, generation, items.digest, len(items.digest_items))
                    message = f"{info.document_id} was replaced by another import meanwhile; import it again"
                    raise StoreError(message) from exc
                self._io.backoff(attempt)  # another catalog write moved the counter: read it again
        else:
            self._delete_generation(info.document_id, generation, items.digest, len(items.digest_items))
            raise StoreError(f"{info.document_id} could not be published: the catalog counter kept moving")
        known = self._known_products
        assert known is not None
        known.update((p.product_id, p) for p in changed)  # only once the import is published
        if old and old_digest:
            self._delete_generation(info.document_id, old["gen"], *old_digest)
        self._delete_orphans(info.document_id, keep={generation})
        return counts

    def _touched(
        self, document: CatalogDocument, digest: dict[str, Any], old_digest: dict[str, Any] | None, replaced: bool
    ) -> dict[str, list[Any]] | None:
        """What the change log says this import touched: both versions' products and KBs (None: not known)."""
        if replaced and old_digest is None:  # the old version's digest is gone: its footprint is unknown
            return None
        known = self._known_products or {}
        names = {p.product_id: p.name for p in known.values()} | {p.product_id: p.name for p in document.products}
        products, kbs = catalog_footprint(digest, names)
        if old_digest is not None:
            old_products, old_kbs = catalog_footprint(old_digest, names)
            products, kbs = products | old_products, kbs | old_kbs
        return catalog_keys(products, kbs)

    def _changed_products(self, document: CatalogDocument) -> list[Product]:
        """Only new or renamed products (every month repeats the whole product tree); a family is never lost."""
        if self._known_products is None:
            self._known_products = {
                p.product_id: p for p in map(product_of, self._io.query(self.catalog_table, PRODUCTS))
            }
        known = self._known_products
        changed = []
        for product in document.products:
            old = known.get(product.product_id)
            if old is None or old.name != product.name or (product.family and old.family != product.family):
                family = product.family or (old.family if old else None)
                changed.append(Product(product.product_id, product.name, family))
        return changed

    def _digest(self, document_id: str, generation: str) -> tuple[dict[str, Any], int] | None:
        """A generation's digest and its number of parts; None when it is missing or incomplete."""
        parts = list(self._io.query(self.state_table, DIGEST, f"{document_id}#{generation}#"))
        if not parts or len(parts) != int(parts[0]["parts"]):
            return None
        try:
            return unpack(joined(parts, "data")), len(parts)
        except (zlib.error, ValueError):
            return None

    def _delete_generation(self, document_id: str, generation: str, digest: dict[str, Any], parts: int) -> None:
        """Entries and KB items first, the digest that lists them last (a crash in between is retried later)."""
        self._io.batch_write(self.catalog_table, deletes=generation_keys(document_id, generation, digest))
        self._io.batch_write(self.state_table, deletes=[digest_key(document_id, generation, p) for p in range(parts)])

    def _delete_orphans(self, document_id: str, keep: set[str]) -> None:
        """Generations of this month no header names, an hour old: left by an import that died."""
        generations: dict[str, list[Item]] = defaultdict(list)
        for part in self._io.query(self.state_table, DIGEST, f"{document_id}#"):
            generations[part["gen"]].append(part)
        for generation, parts in generations.items():
            if generation in keep or time.time() - float(parts[0]["started"]) < ORPHAN_SECONDS:
                continue
            digest = self._digest(document_id, generation)
            if digest is None:  # it died writing its digest, before any entry
                self._io.batch_write(self.state_table, deletes=[pk_sk(p[PK], p[SK]) for p in parts])
            else:
                self._delete_generation(document_id, generation, *digest)
