"""The store port: what the catalog (and later the fleet and runs) need from persistence.

SQLite is the embedded adapter; a DynamoDB adapter implements the same protocol for the AWS
deployment, keyed like the original (``OS#<product>`` / ``CVE#<id>``, a by-month index) but
without its TTL. Everything returned is a domain type: no adapter row leaks upward.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Protocol

from autopatch.domain.catalog import (
    AffectedRecord,
    CatalogDocument,
    FixRecord,
    ImportCounts,
    Product,
    ProductSummary,
    StoredDocument,
)
from autopatch.domain.runs import RunRecord


class CatalogStore(Protocol):
    def get_document(self, document_id: str) -> StoredDocument | None:
        """The stored revision of one monthly document, if any."""

    def list_documents(self) -> list[StoredDocument]: ...

    def replace_document(self, document: CatalogDocument, source_sha256: str) -> ImportCounts:
        """Make the store hold exactly this document's entries, in one transaction."""

    def list_products(self) -> list[Product]: ...

    def products_named(self, name: str, product_id: str) -> list[Product]:
        """Products with exactly this name (any case), or this MSRC product id."""

    def product_summaries(self) -> list[ProductSummary]:
        """Every product with its counts of distinct CVEs and KBs."""

    def affected(
        self,
        product_ids: Collection[str],
        document_ids: Collection[str] | None = None,
        cves: Collection[str] | None = None,
    ) -> list[AffectedRecord]:
        """(CVE, product) rows for the given products, optionally narrowed."""

    def fixes_for_products(
        self, product_ids: Collection[str], cves: Collection[str] | None = None
    ) -> list[FixRecord]: ...

    def fixes_for_kbs(self, kbs: Iterable[int]) -> list[FixRecord]: ...

    def superseded_by(self, kbs: Iterable[int]) -> dict[int, set[int]]:
        """For each KB, the KBs that name it in their Supercedence field."""

    def supersedes(self, kbs: Iterable[int]) -> dict[int, set[int]]:
        """For each KB, the KBs its Supercedence field names."""

    def counts(self) -> dict[str, int]:
        """Totals for summaries: documents, cves, products, kbs, entries."""

    def close(self) -> None: ...


class RunLeaseStore(Protocol):
    """What run ownership needs: read a run, and take, renew and give up its lease atomically."""

    def get_run(self, run_id: str) -> RunRecord: ...

    def claim_run(
        self, run_id: str, owner: str, lease_expires: float, now_epoch: float, dead_owner: str = ""
    ) -> bool: ...

    def renew_lease(self, run_id: str, owner: str, lease_expires: float) -> bool: ...

    def release_run(self, run_id: str, owner: str) -> None: ...
